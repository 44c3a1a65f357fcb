"""Mixed operators, gradient estimators and the chain supernet."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from hwnas.search.updates import StepContext, make_step
from hwnas.search.losses import resource_loss
from hwnas.spaces import get_space
from hwnas.supernet import MODES, MixedOp, Supernet, make_mode, recalibrate_bn
from hwnas.supernet.mixed_op import BinaryGates

TINY = {"resolution": 16, "stages": [[24, 1, 2], [32, 2, 2]], "head_channels": 64}


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


def tiny_space():
    return get_space("proxyless-tiny", TINY)


class Scale(nn.Module):
    def __init__(self, k: float):
        super().__init__()
        self.k = k

    def forward(self, x):
        return self.k * x


def test_binary_gates_gradient_is_binaryconnect_estimate():
    alpha = torch.tensor([0.3, -0.2], requires_grad=True)
    gates = BinaryGates.apply(alpha, 1)
    assert gates.tolist() == [0.0, 1.0]
    dg = torch.tensor([0.7, -1.1])
    (gates * dg).sum().backward()
    p = torch.softmax(alpha.detach(), 0)
    expected = [sum(float(dg[j] * p[j] * (float(i == j) - p[i])) for j in range(2)) for i in range(2)]
    assert torch.allclose(alpha.grad, torch.tensor(expected))


@pytest.mark.parametrize("mode", MODES)
def test_gates_learn_the_better_path_on_a_toy_problem(mode):
    """Target y = x: the identity path is right, the others (0, -x, 0.5x) are worse; no weights to train."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    op = MixedOp([Scale(0.0), Scale(-1.0), Scale(1.0), Scale(0.5)], ["zero", "neg", "id", "half"],
                 make_mode(mode, **({"tau": 1.0} if mode == "snas" else {})))
    opt = torch.optim.Adam([op.alpha], lr=0.05, betas=(0.0, 0.999))
    baseline = None
    for _ in range(150):
        x = torch.randn(16, 4)
        opt.zero_grad()
        op.sample("arch", gen)
        if mode == "proxyless-reinforce":
            i = op.sampled_index()
            with torch.no_grad():
                reward = -float(F.mse_loss(op(x), x))
            baseline = reward if baseline is None else 0.9 * baseline + 0.1 * reward
            (-(reward - baseline) * op.log_prob(i)).backward()
        else:
            F.mse_loss(op(x), x).backward()
        old = op.alpha.detach().clone()
        opt.step()
        if mode == "proxyless":
            op.rescale_sampled(old)
    assert op.argmax() == "id"
    assert float(op.probs()[2].detach()) > 0.5


def test_proxyless_runs_only_sampled_paths():
    space = tiny_space()
    net = Supernet(space, "proxyless")
    net.train()
    x = torch.randn(2, 3, 16, 16)
    gen = torch.Generator().manual_seed(1)
    net.resample("weight", gen)
    net(x).sum().backward()
    for op in net.mixed:
        with_grad = [i for i, c in enumerate(op.candidates)
                     if any(p.grad is not None for p in c.parameters())]
        assert len(with_grad) <= 1 and (not with_grad or with_grad[0] == op.sampled_index())
    net.zero_grad(set_to_none=True)
    net.resample("arch", gen)
    F.cross_entropy(net(x), torch.tensor([0, 1])).backward(inputs=net.arch_parameters())
    for op in net.mixed:
        paths = op.sampled[0].tolist()
        assert len(paths) == 2
        nonzero = set(torch.nonzero(op.alpha.grad).flatten().tolist())
        assert nonzero <= set(paths)


def test_set_active_runs_the_child_and_expected_costs_match_it():
    space = tiny_space()
    net = Supernet(space, "darts")
    choices = [pos.names[-1] for pos in space.positions]
    net.set_active(choices)
    net.train()
    net(torch.randn(2, 3, 16, 16)).sum().backward()
    for op, choice in zip(net.mixed, choices):
        used = {op.names[i] for i, c in enumerate(op.candidates) if any(p.grad is not None for p in c.parameters())}
        assert used <= {choice}
    with torch.no_grad():
        for op, choice in zip(net.mixed, choices):
            op.alpha.zero_()
            op.alpha[op.names.index(choice)] = 50.0
    arch = net.derive()
    assert arch.choices == choices
    assert net.expected("flops").item() == pytest.approx(arch.cost().flops, rel=1e-5)
    assert net.expected("params").item() == pytest.approx(arch.cost().params, rel=1e-5)
    assert net.cost_of("flops", choices) == arch.cost().flops


def test_recalibrate_bn_reestimates_running_stats():
    net = Supernet(tiny_space(), "proxyless")
    net.set_active([pos.names[0] for pos in net.space.positions])
    bn = net.stem[0][1]
    batches = [(torch.randn(4, 3, 16, 16) * 3 + 2, None) for _ in range(3)]
    recalibrate_bn(net, batches, max_batches=3)
    assert not net.training
    assert float(bn.running_var.mean()) > 1.5  # the default (1.0) was replaced by the data's statistics


@pytest.mark.parametrize("mode,order", [(m, 1) for m in MODES] + [("darts", 2)])
def test_each_mode_runs_a_step(mode, order):
    torch.manual_seed(0)
    net = Supernet(tiny_space(), mode)
    per_pos = [torch.arange(len(op.names), dtype=torch.float32) for op in net.mixed]
    net.set_latency(per_pos, 1.0)
    opt_w = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9)
    opt_a = torch.optim.Adam(net.arch_parameters(), lr=0.05, betas=(0.0, 0.999))
    ctx = StepContext(net=net, model=net, opt_w=opt_w, opt_a=opt_a, generator=torch.Generator().manual_seed(0),
                      resource=lambda: resource_loss(net, 1.0, 3.0, 10.0, {"flops": 0.1}), sync=lambda g: None,
                      lambda_lat=1.0, budget_ms=3.0, reference_ms=10.0, darts_order=order)
    step = make_step(mode, ctx)
    before_a = [a.detach().clone() for a in net.arch_parameters()]
    before_w = [p.detach().clone() for p in net.weight_parameters()]
    batch = (torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]))
    out = step.step(batch, (torch.randn(4, 3, 16, 16), torch.tensor([4, 5, 6, 7])), update_arch=True)
    assert torch.isfinite(torch.as_tensor(out["loss"])) and "arch_loss" in out
    assert any(not torch.equal(a, b) for a, b in zip(net.arch_parameters(), before_a))
    assert any(not torch.equal(p, b) for p, b in zip(net.weight_parameters(), before_w))


def test_the_three_supernets_speak_one_vocabulary():
    """set_child / sample_child / child_cost / extract on the separate, entangled and cell supernets: the extracted
    standalone network computes what the supernet computes with that child set (eval mode)."""
    from hwnas.cells.space import CellSpace
    from hwnas.cells.supernet import CellSupernet
    from hwnas.supernet.entangled import EntangledSupernet

    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    gen = torch.Generator().manual_seed(1)
    separate = Supernet(get_space("proxyless-tiny", TINY), "proxyless")
    child = separate.sample_child(gen)
    assert len(child) == len(separate.mixed) and separate.child_cost(child, "flops") > 0
    separate.set_child(child)
    separate.eval()
    assert torch.allclose(separate.extract(child).eval()(x), separate(x), atol=1e-5)

    entangled = EntangledSupernet(get_space("proxyless-tiny", TINY)).eval()
    child = entangled.sample_child(gen)
    assert entangled.child_cost(child, "params") == sum(p.numel() for p in entangled.extract(child).parameters())
    entangled.set_child(child)
    assert torch.allclose(entangled.extract(child).eval()(x), entangled(x), atol=1e-5)

    cells = CellSupernet(CellSpace({"layers": 3, "channels": 4, "resolution": 8}), "darts")
    with torch.no_grad():  # no pooling edges: the supernet's pools carry a BN the standalone cell has not
        for a in list(cells.alphas_normal) + list(cells.alphas_reduce):
            a[5:] = -1e9
    genotype = cells.sample_child(gen)
    assert cells.child_cost(genotype, "flops") == genotype.cost().flops
    cells.set_child(genotype)
    cells.eval()
    x8 = torch.randn(2, 3, 8, 8)
    assert torch.allclose(cells.extract(genotype).eval()(x8), cells(x8), atol=1e-5)
