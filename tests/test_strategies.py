"""Sample-based strategies on a toy problem with a known best, resume, evaluators, runner outputs.

The toy problem: a 5-position space (10,584 architectures) whose "accuracy" is
additive over the chosen candidates (bigger kernels/expansions tend to be
better, plus fixed random offsets), with a FLOPs budget at the 25th percentile
and the MnasNet penalty above it, so the best architecture under the budget is
known by enumeration. Success = the best score found is among the 10 best of
the space. A random search with the same 100 evaluations succeeds with
probability 1 - (1 - 10/10584)**100 = 9%; every strategy is run with 8 seeds
and must succeed in at least 4 (P(X >= 4) = 0.4% for a strategy no better than
random search). Everything is seeded, so the test is deterministic.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from hwnas.arch import architecture_of
from hwnas.costs import op_cost, total_cost
from hwnas.errors import HwnasError
from hwnas.spaces import get_space
from hwnas.strategies import STRATEGIES, make_strategy
from hwnas.strategies.evaluators import CostModel, Objective, mnas_reward
from hwnas.strategies.runner import best_record, evaluations_to_best, pareto_front, read_log, search_loop

EVALS, SEEDS, TOP_K = 100, 8, 10


class Toy:
    """Additive accuracy with known optimum under a FLOPs budget; ``evaluate`` follows the evaluator protocol."""

    def __init__(self, stages=((24, 2, 2), (40, 2, 2), (64, 1, 2)), seed=1):
        self.space = get_space("proxyless-tiny", {"stages": [list(s) for s in stages]})
        rng = np.random.default_rng(seed)
        self.quality = [{n: 0.0 if op.kind == "zero" else 0.02 * math.log(1 + op.kernel * op.expand)
                         + rng.uniform(0, 0.02) for n, op in zip(p.names, p.ops)} for p in self.space.positions]
        self.calls = 0

    def evaluate(self, arch) -> float:
        self.calls += 1
        return 0.5 + sum(q[c] for q, c in zip(self.quality, arch.choices))

    def table(self):
        """(budget in MFLOPs, all scores sorted best first)."""
        fixed = total_cost(self.space.stem + self.space.head).flops / 1e6
        flops = [{n: 0.0 if op.kind == "zero" else op_cost(op).flops / 1e6 for n, op in zip(p.names, p.ops)}
                 for p in self.space.positions]
        combos = list(itertools.product(*[p.names for p in self.space.positions]))
        mflops = [fixed + sum(f[c] for f, c in zip(flops, combo)) for combo in combos]
        budget = sorted(mflops)[len(mflops) // 4]
        scores = [mnas_reward(0.5 + sum(q[c] for q, c in zip(self.quality, combo)), m, budget)
                  for combo, m in zip(combos, mflops)]
        return budget, sorted(scores, reverse=True)


@pytest.fixture(scope="module")
def toy():
    problem = Toy()
    budget, scores = problem.table()
    return problem, budget, scores


def _best_found(strategy, objective, evals):
    best = float("-inf")
    for _ in range(evals):
        arch = strategy.propose()
        score = objective(arch)["score"]
        strategy.observe(arch, score)
        best = max(best, score)
    return best


@pytest.mark.parametrize("name", ["evolution", "rl", "progressive"])
def test_strategy_finds_top_architecture_more_often_than_random(toy, name):
    problem, budget, scores = toy
    objective = Objective(problem, CostModel(), budget)
    chance = 1 - (1 - TOP_K / len(scores)) ** EVALS
    assert chance < 0.1
    hits = sum(_best_found(make_strategy(name, problem.space, seed=s), objective, EVALS) >= scores[TOP_K - 1] - 1e-6
               for s in range(SEEDS))
    assert hits >= SEEDS // 2, f"{name}: {hits}/{SEEDS} runs reached the top {TOP_K} (random search: {chance:.0%})"


def test_random_search_samples_without_repeats_and_finds_the_best_at_the_expected_rate():
    problem = Toy(stages=((24, 1, 2), (40, 2, 2)))  # 252 architectures
    budget, scores = problem.table()
    objective = Objective(problem, CostModel(), budget)
    n = problem.space.size
    hits = 0
    for seed in range(20):
        strategy = make_strategy("random", problem.space, seed=seed)
        best = _best_found(strategy, objective, n // 2)
        assert len(strategy.seen) == n // 2  # no architecture evaluated twice
        hits += best >= scores[0] - 1e-6
    # each run sees half the space, so it holds the best with probability 1/2; a single guess: 1/252
    assert 5 <= hits <= 15


def test_mnas_reward_penalty_and_reject():
    assert mnas_reward(0.8, 5.0, 10.0) == 0.8
    assert mnas_reward(0.8, 20.0, 10.0) == pytest.approx(0.8 * 2 ** -0.07)
    assert mnas_reward(0.8, 20.0, None) == 0.8
    problem = Toy()
    cheap = architecture_of(problem.space, [p.names[0] for p in problem.space.positions])
    rejecting = Objective(problem, CostModel(), budget=1e-3, over_budget="reject")
    record = rejecting(cheap)
    assert record["rejected"] and record["score"] == 0.0 and record["accuracy"] is None
    assert problem.calls == 0  # a rejected architecture is not evaluated
    with pytest.raises(HwnasError, match="over-budget"):
        Objective(problem, CostModel(), 1.0, over_budget="drop")


@pytest.mark.parametrize("name", STRATEGIES)
def test_resume_after_interruption_reproduces_the_uninterrupted_run(tmp_path, name):
    problem = Toy()
    budget, _ = problem.table()
    objective = Objective(problem, CostModel(), budget)
    full = search_loop(make_strategy(name, problem.space, seed=3), objective, 24, tmp_path / "full", progress=False)

    class Interrupting:
        def __init__(self, after):
            self.left = after

        def evaluate(self, arch):
            if self.left == 0:
                raise KeyboardInterrupt
            self.left -= 1
            return problem.evaluate(arch)

    with pytest.raises(KeyboardInterrupt):
        search_loop(make_strategy(name, problem.space, seed=3), Objective(Interrupting(13), CostModel(), budget),
                    24, tmp_path / "cut", progress=False)
    log = tmp_path / "cut" / "evaluations.jsonl"
    with open(log, "a") as f:
        f.write('{"index": 13, "choi')  # a torn line from a kill during the write
    with pytest.warns(UserWarning, match="line 14: ignoring an incomplete last line"):
        assert len(read_log(log)) == 13
    resumed = search_loop(make_strategy(name, problem.space, seed=3), objective, 24, tmp_path / "cut",
                          resume=True, progress=False)
    strip = lambda rs: [(r["choices"], r["score"]) for r in rs]  # noqa: E731
    assert strip(resumed) == strip(full)
    assert strip(read_log(log)) == strip(full)


def test_log_records_and_results(tmp_path):
    problem = Toy()
    budget, _ = problem.table()
    records = search_loop(make_strategy("evolution", problem.space, seed=0, population=4, sample_size=2),
                          Objective(problem, CostModel(), budget), 12, tmp_path, progress=False)
    assert [r["index"] for r in records] == list(range(12))
    for r in records:
        assert {"choices", "score", "accuracy", "mflops", "latency_ms", "feasible", "cached", "seconds"} <= set(r)
        assert r["feasible"] == (r["mflops"] <= budget)
    best = best_record(records)
    assert best["feasible"] and best["accuracy"] == max(r["accuracy"] for r in records if r["feasible"])
    assert evaluations_to_best(records) == best["index"] + 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"choices": ["k3_e3"], "score": 1}\nnot json\n{"choices": [], "score": 0}\n')
    with pytest.raises(HwnasError, match="bad.jsonl, line 2"):
        read_log(bad)


def test_pareto_front():
    points = [(1.0, 0.5), (2.0, 0.7), (1.5, 0.4), (3.0, 0.69), (4.0, 0.9), (0.5, 0.1)]
    assert pareto_front(points) == [5, 0, 1, 4]


def test_strategy_option_errors():
    space = Toy().space
    with pytest.raises(HwnasError, match="unknown search strategy"):
        make_strategy("annealing", space)
    with pytest.raises(HwnasError, match="sample size"):
        make_strategy("evolution", space, population=4, sample_size=9)
    with pytest.raises(HwnasError, match="surrogate"):
        make_strategy("progressive", space, surrogate="gp")


def test_hwnas_search_sample_based_writes_log_plot_best_and_checks_resume(tmp_path, capsys):
    from hwnas.cli import main

    argv = ["search", "--strategy", "random", "--set", "stages=[[24,1,2],[40,1,2]]", "--evaluations", "2",
            "--evaluator", "proxy", "--proxy-steps", "1", "--limit-train", "64", "--limit-val", "64",
            "--budget-mflops", "5", "--no-progress", "--threads", "1", "--out", str(tmp_path)]
    assert main(argv) in (0, 1)  # 1: nothing within the budget
    records = read_log(tmp_path / "evaluations.jsonl")
    assert len(records) == 2 and all(0.0 <= r["accuracy"] <= 1.0 for r in records)
    assert all(r["latency_ms"] > 0 and r["feasible"] == (r["mflops"] <= 5) for r in records)
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    assert json.loads((tmp_path / "summary.json").read_text())["evaluations"] == 2
    assert main(argv + ["--resume", "--evaluations", "3"]) in (0, 1)  # a larger budget continues the run
    assert [r["index"] for r in read_log(tmp_path / "evaluations.jsonl")] == [0, 1, 2]
    assert "resuming" in capsys.readouterr().out
    assert main(argv + ["--resume", "--seed", "1"]) == 2
    assert "started with seed=0" in capsys.readouterr().err


def test_recalibrate_bn_averages_the_batch_statistics():
    import torch
    from torch import nn

    from hwnas.strategies.evaluators import recalibrate_bn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    batches = [torch.randn(8, 3, 6, 6) + i for i in range(3)]
    recalibrate_bn(model, batches)
    with torch.no_grad():
        means = torch.stack([model[0](x).mean(dim=(0, 2, 3)) for x in batches])
    assert torch.allclose(model[1].running_mean, means.mean(0), atol=1e-5)
    assert model[1].momentum == 0.1 and not model.training


def test_oneshot_evaluator_scores_paths_and_leaves_the_supernet_unchanged(tmp_path):
    import torch

    from hwnas.data import load_dataset
    from hwnas.strategies import supernet_bridge as bridge
    from hwnas.strategies.evaluators import OneShotEvaluator

    space = get_space("proxyless-tiny", {"stages": [[24, 1, 2], [40, 1, 2]]})
    splits = load_dataset("digits", 32, seed=0, limit_train=64, limit_val=32)
    net = bridge.train_uniform(space, splits, steps=2, batch_size=32, progress=False)
    path = bridge.save_supernet(net, tmp_path / "supernet.safetensors")
    loaded = bridge.load_supernet(path, space)
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    evaluator = OneShotEvaluator(loaded, splits, bridge.select_path, calib_batches=2, batch_size=32)
    accs = [evaluator.evaluate(architecture_of(space, [p.names[i % len(p.names)] for p in space.positions]))
            for i in range(3)]
    assert all(0.0 <= a <= 1.0 for a in accs)
    assert all(torch.equal(before[k], v) for k, v in loaded.state_dict().items())
    (tmp_path / "bad.safetensors").write_bytes(b"not a weights file")
    with pytest.raises(HwnasError, match="bad.safetensors"):
        bridge.load_supernet(tmp_path / "bad.safetensors", space)
