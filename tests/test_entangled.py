"""The weight-entangled search: cost tables, the tilted distribution, the band decoder, the supernet, the loop."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from hwnas.arch import sample_architecture
from hwnas.errors import HwnasError
from hwnas.search import SearchConfig, run_search
from hwnas.search.band import BandDecoder, most_probable_in_band
from hwnas.children import Child, CostTable, analytic_table, child_arch, child_of, latency_table
from hwnas.search.latency import AnalyticProxy
from hwnas.search.plans import PlanMaker
from hwnas.search.tilt import Tilted, expected_latency, solve_beta
from hwnas.spaces import get_space
from hwnas.supernet.entangled import EntangledSupernet, Mix, Plan

# 2 stages, 3 positions, 3 widths: 3^2 x 6 x 6 x 7 = 2268 children, few enough to enumerate
SMALL = {"resolution": 16, "stages": [[24, 1, 2], [40, 2, 2]], "head_channels": 64, "kernels": [3, 5],
         "width_choices": [1.0, 1.5, 2.0]}


def _space(**extra):
    return get_space("proxyless-tiny", {**SMALL, **extra})


def _all_children(table: CostTable):
    for widths in itertools.product(range(table.num_widths), repeat=table.num_stages):
        for ops in itertools.product(*[range(len(n)) for n in table.names]):
            yield Child(widths, ops)


def _random_logits(table, seed=0):
    rng = np.random.default_rng(seed)
    return ([np.log(rng.dirichlet(np.ones(len(n)))) for n in table.names],
            [np.log(rng.dirichlet(np.ones(table.num_widths))) for _ in range(table.num_stages)])


def _log_prob(child, op_lp, w_lp):
    return sum(w_lp[s][w] for s, w in enumerate(child.widths)) + sum(op_lp[i][c] for i, c in enumerate(child.ops))


def test_cost_table_prices_every_child_as_its_architecture():
    space = _space()
    proxy = AnalyticProxy()
    table = latency_table(space, proxy)
    flops = analytic_table(space, "flops")
    rng = random.Random(0)
    costs = []
    for _ in range(40):
        arch = sample_architecture(space, rng)
        child = child_of(space, arch)
        assert child_arch(space, child).to_dict() == arch.to_dict()
        assert table.cost(child) == pytest.approx(proxy.predict_ops(arch.ops()), rel=1e-9)
        assert flops.cost(child) == arch.cost().flops
        costs.append(table.cost(child))
    exact = [table.cost(c) for c in _all_children(table)]
    assert table.min() == pytest.approx(min(exact)) and table.max() == pytest.approx(max(exact))


def test_band_decoder_finds_the_most_probable_child_in_the_band():
    table = latency_table(_space(), AnalyticProxy())
    op_lp, w_lp = _random_logits(table)
    children = [(table.cost(c), _log_prob(c, op_lp, w_lp), c) for c in _all_children(table)]
    low_all, high_all = table.min(), table.max()
    for frac in (0.1, 0.3, 0.5, 0.8):
        budget = low_all + frac * (high_all - low_all)
        low, high = 0.93 * budget, 0.97 * budget
        inside = [c for c in children if low <= c[0] <= high]
        found = most_probable_in_band(table, op_lp, w_lp, low, high)
        assert low <= found.latency_ms <= high  # the decoded child is in band, exactly
        assert found.latency_ms == pytest.approx(table.cost(found.child))
        best = max(inside, key=lambda c: c[1])
        assert found.log_prob == pytest.approx(best[1], abs=1e-9)


def test_an_unreachable_band_is_refused_with_the_achievable_range():
    table = latency_table(_space(), AnalyticProxy())
    with pytest.raises(HwnasError, match=f"the space reaches {table.min():.4f}-{table.max():.4f} ms"):
        BandDecoder(table, 1.1 * table.max(), 1.2 * table.max())
    with pytest.raises(HwnasError, match="reaches"):
        BandDecoder(table, 0.5 * table.min(), 0.9 * table.min())
    with pytest.raises(HwnasError, match="no child of"):  # inside the range, but in a gap between children
        gap_low = table.max() - 1e-7
        BandDecoder(table, gap_low, gap_low + 1e-9)


def test_tilted_distribution_matches_enumeration_and_hits_the_target():
    table = latency_table(_space(), AnalyticProxy())
    op_lp, w_lp = _random_logits(table, seed=1)
    alpha, theta = [torch.tensor(a) for a in op_lp], [torch.tensor(t) for t in w_lp]
    children = list(_all_children(table))
    lat = np.array([table.cost(c) for c in children])
    logp = np.array([_log_prob(c, op_lp, w_lp) for c in children])
    for beta in (0.0, 3.0, -2.0):
        w = np.exp(logp - beta * lat - (logp - beta * lat).max())
        p = w / w.sum()
        assert expected_latency(table, alpha, theta, beta) == pytest.approx(float(p @ lat), rel=1e-9)
        tilted = Tilted(table, alpha, theta, beta)
        assert tilted.expected_cost() == pytest.approx(float(p @ lat), rel=1e-9)
        width_m, op_m, _, _ = tilted.marginals()
        want = np.zeros(len(table.names[0]))
        for prob, c in zip(p, children):
            want[c.ops[0]] += prob
        assert op_m[0].numpy() == pytest.approx(want, abs=1e-9)
    target = float(np.quantile(lat, 0.3))
    beta = solve_beta(table, alpha, theta, target)
    assert beta > 0 and expected_latency(table, alpha, theta, beta) == pytest.approx(target, rel=1e-3)
    gen = torch.Generator().manual_seed(0)
    tilted = Tilted(table, alpha, theta, beta)
    samples = [table.cost(tilted.sample(gen)) for _ in range(3000)]
    assert np.mean(samples) == pytest.approx(target, rel=0.03)  # exact sampler: sample mean near the target


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    net = EntangledSupernet(get_space("proxyless-tiny", {"resolution": 16}))
    for m in net.modules():  # statistics and affine parameters that are not the defaults
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def _residual_child(space) -> Child:
    """A child whose last stage's first block keeps its channel count (96 -> 96): a residual at a stage start."""
    widths = list(space.width_choices)
    return Child((0, 0, widths.index(1.5), widths.index(1.0)), (1, 6, 3, 0, 2, 5, 6, 1, 3))


def test_standalone_child_holds_the_supernets_crops_and_slices(net):
    space = net.space
    rng = random.Random(0)
    x = torch.randn(3, 3, 16, 16)
    children = [child_of(space, sample_architecture(space, rng)) for _ in range(6)] + [_residual_child(space)]
    last = child_arch(space, children[-1])
    assert last.space.positions[8].op(last.choices[8]).has_residual
    for child in children:
        arch = child_arch(space, child)
        model = net.extract(child, arch).eval()
        with torch.no_grad():
            assert (net(x, Plan.of(child)) - model(x)).abs().max() <= 1e-5


def test_mixed_plan_with_one_hot_gates_runs_the_active_child(net):
    rng = random.Random(1)
    x = torch.randn(4, 3, 16, 16)
    for mode in ("eval", "train"):
        getattr(net, mode)()
        for _ in range(3):
            widths = [rng.sample(range(5), 2) for _ in range(4)]
            ops = [rng.sample(range(len(n)), 2) for n in net.names]
            one_hot = torch.tensor([1.0, 0.0])
            plan = Plan([Mix(w, one_hot) for w in widths], [Mix(o, one_hot) for o in ops])
            with torch.no_grad():
                # equal up to float rounding: a stage mixing widths runs its convolutions at the widest width
                # in play (zero-masked channels), whose kernels may sum in another order on some CPUs
                assert torch.allclose(net(x, plan), net(x, Plan.of(plan.child())), atol=1e-6, rtol=1e-5)
    net.eval()


def test_arch_step_gives_every_gated_logit_a_gradient():
    space = _space()
    torch.manual_seed(0)
    net = EntangledSupernet(space)
    table = latency_table(space, AnalyticProxy())
    maker = PlanMaker(net, table, target_ms=table.min() + 0.3 * (table.max() - table.min()))
    maker.update_beta()
    assert maker.beta > 0  # the untilted distribution is slower than the target
    plan, extra = maker.arch_plan()
    assert extra is None
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    F.cross_entropy(net(x, plan), y).backward(inputs=net.arch_parameters())
    for param, mix in zip(list(net.theta) + list(net.alpha), plan.widths + plan.ops):
        grad = param.grad[mix.options]
        assert torch.all(grad != 0) and grad.sum().abs() < 1e-6  # BinaryConnect: the pair's gradients cancel


def test_checkpointed_arch_step_gives_the_same_gradients(monkeypatch):
    """Recomputing mixed positions in the backward pass (the architecture step's memory saving) changes no
    gradient: same plan, same batch, with and without ``checkpoint``."""
    space = _space()
    torch.manual_seed(0)
    net = EntangledSupernet(space).train()
    table = latency_table(space, AnalyticProxy())
    maker = PlanMaker(net, table, target_ms=table.min() + 0.3 * (table.max() - table.min()))
    maker.update_beta()
    plan, _ = maker.arch_plan()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    params = net.arch_parameters() + [net.blocks[0].expand, net.blocks[-1].project]
    calls = []
    original = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))
    grads = []
    for checkpoint in (False, True):
        loss = F.cross_entropy(net(x, plan, checkpoint=checkpoint), y)
        grads.append(torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True))
    for plain, recomputed in zip(*grads):
        if plain is None:
            assert recomputed is None
        else:
            assert torch.allclose(plain, recomputed, atol=1e-6, rtol=1e-5)
    assert len(calls) == len(net.alpha)  # every position mixes two candidates: each one recomputed
    assert any(g is not None and g.abs().sum() > 0 for g in grads[1][:len(net.arch_parameters())])


def _config(out, **kw) -> SearchConfig:
    base = dict(space="proxyless-tiny", space_params=SMALL, epochs=3, warmup_epochs=1, child_warmup_epochs=1,
                batch_size=16, max_steps=2, limit_train=96, limit_val=32, out=str(out), progress=False, threads=1,
                recalib_batches=2)
    base.update(kw)
    return SearchConfig(**base)


def test_search_lands_in_the_band_and_resumes_exactly(tmp_path):
    table = latency_table(_space(), AnalyticProxy())
    budget = table.min() + 0.4 * (table.max() - table.min())
    full = run_search(_config(tmp_path / "full", budget_ms=budget))
    summary = json.loads((tmp_path / "full" / "derived.json").read_text())
    assert 0.93 * budget <= summary["predicted_latency_ms"] <= 0.97 * budget
    # derived.json rounds to 5 decimals
    assert summary["predicted_latency_ms"] == pytest.approx(AnalyticProxy().predict_ops(full.arch.ops()), abs=1e-5)
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["largest", "sandwich", "search"]
    for row in rows:  # the tilt held E[LAT] of every step's sampling distribution on target
        assert row["exp_latency_range_ms"] == pytest.approx([0.95 * budget] * 2, rel=2e-4)
    for name in ("arch.json", "child.safetensors", "probs.png", "curves.png", "checkpoint.pt"):
        assert (tmp_path / "full" / name).exists()
    # interrupted after epoch 2 and resumed: the same alphas and the same child
    run_search(_config(tmp_path / "cut", budget_ms=budget, stop_after=2))
    resumed = run_search(_config(tmp_path / "cut", budget_ms=budget, resume=True))
    for a, b in zip(full.supernet.arch_parameters(), resumed.supernet.arch_parameters()):
        assert torch.equal(a, b)
    assert resumed.arch.to_dict() == full.arch.to_dict()


@pytest.mark.parametrize("mode", ["darts", "snas", "proxyless-reinforce"])
def test_other_modes_run_on_the_shared_weights(tmp_path, mode):
    table = latency_table(_space(), AnalyticProxy())
    budget = table.min() + 0.5 * (table.max() - table.min())
    result = run_search(_config(tmp_path / mode, budget_ms=budget, mode=mode, epochs=2, child_warmup_epochs=0,
                                max_steps=3))  # reinforce: the first step only sets the baseline
    assert 0.93 * budget <= result.summary["predicted_latency_ms"] <= 0.97 * budget
    moved = [p for p in result.supernet.arch_parameters() if p.detach().abs().max() > 0.01]
    assert moved  # the architecture step changed some logits


def test_absolute_control_adds_the_tunas_penalty():
    space = _space()
    net = EntangledSupernet(space)
    table = latency_table(space, AnalyticProxy())
    target = table.min() + 0.2 * (table.max() - table.min())
    maker = PlanMaker(net, table, control="absolute", target_ms=target, budget_ms=target / 0.95)
    assert maker.update_beta() == 0.0  # no tilt: the penalty steers instead
    _, extra = maker.arch_plan()
    expected = maker.expected_latency()
    assert float(extra.detach()) == pytest.approx(abs(float(expected.detach()) / target - 1))
    extra.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.arch_parameters())


def test_the_supernet_type_defaults_to_entangled_where_it_applies(capsys):
    from hwnas.cli import build_parser
    from hwnas.cli.search import config_from_args

    parse = build_parser().parse_args
    assert config_from_args(parse(["search", "--budget-ms", "0.5"])).supernet == "entangled"
    assert capsys.readouterr().err == ""
    cfg = config_from_args(parse(["search", "--space", "fbnet-cifar100"]))
    assert cfg.supernet == "separate" and "needs a proxyless space, not fbnet-cifar100" in capsys.readouterr().err
    cfg = config_from_args(parse(["search", "--set", "expands=[1,3]"]))
    assert cfg.supernet == "separate" and "needs expansions >= 2" in capsys.readouterr().err
    cfg = config_from_args(parse(["search", "--mode", "darts", "--darts-order", "2"]))
    assert cfg.supernet == "separate" and "second-order DARTS" in capsys.readouterr().err
    with pytest.raises(HwnasError, match="second-order DARTS needs --supernet-type separate"):
        config_from_args(parse(["search", "--mode", "darts", "--darts-order", "2",
                                "--supernet-type", "entangled"])).check()
