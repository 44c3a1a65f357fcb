"""Sample-based strategies on a toy problem with a known best, resume, evaluators, runner outputs.

The toy problem: a space of 2 stages with a width choice each (1, 1.5, 2) and 4
positions: 9 x 1,764 = 15,876 architectures. Its "accuracy" is additive over
the stage widths (wider is better) and the chosen candidates (bigger
kernels/expansions tend to be better), plus fixed random offsets, with a FLOPs
budget at the 25th percentile and the MnasNet penalty above it, so the best
architecture under the budget is known by enumeration (widths change the FLOPs
of every block of their stage and of the next stage's first block). Success =
the best score found is among the 10 best of the space. A random search with
the same 100 evaluations succeeds with probability 1 - (1 - 10/15876)**100 =
6%; every strategy is run with 8 seeds and must succeed in at least 4
(P(X >= 4) < 0.1% for a strategy no better than random search). Everything is
seeded, so the test is deterministic.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from hwnas.arch import Architecture, architecture_of
from hwnas.costs import op_cost, total_cost
from hwnas.errors import HwnasError
from hwnas.children import Child, child_arch
from hwnas.spaces import get_space
from hwnas.strategies import STRATEGIES, make_strategy
from hwnas.strategies.evaluators import CostModel, Objective, mnas_reward
from hwnas.strategies.runner import (best_record, evaluations_to_best, pareto_front, read_log, replay, search_loop,
                                     write_results)

EVALS, SEEDS, TOP_K = 100, 8, 10


class Toy:
    """Additive accuracy with known optimum under a FLOPs budget; ``evaluate`` follows the evaluator protocol."""

    def __init__(self, stages=((24, 2, 2), (40, 2, 2)), widths=(1.0, 1.5, 2.0), seed=1):
        self.space = get_space("proxyless-tiny", {"stages": [list(s) for s in stages], "width_choices": list(widths)})
        rng = np.random.default_rng(seed)
        self.quality = [{n: 0.0 if op.kind == "zero" else 0.02 * math.log(1 + op.kernel * op.expand)
                         + rng.uniform(0, 0.02) for n, op in zip(p.names, p.ops)} for p in self.space.positions]
        self.width_quality = [{w: 0.04 * math.log(w) + rng.uniform(0, 0.02) for w in widths} for _ in stages]
        self.calls = 0

    def accuracy(self, widths, choices) -> float:
        return (0.5 + sum(q[w] for q, w in zip(self.width_quality, widths))
                + sum(q[c] for q, c in zip(self.quality, choices)))

    def evaluate(self, arch) -> float:
        self.calls += 1
        return self.accuracy(arch.space.stage_widths, arch.choices)

    def children(self):
        """(stage widths, choices, MFLOPs) of every architecture of the space."""
        for widths in itertools.product(self.space.width_choices, repeat=self.space.num_stages):
            space = self.space.at_widths(widths)
            fixed = total_cost(space.stem + space.head).flops / 1e6
            flops = [{n: 0.0 if op.kind == "zero" else op_cost(op).flops / 1e6 for n, op in zip(p.names, p.ops)}
                     for p in space.positions]
            for combo in itertools.product(*[p.names for p in space.positions]):
                yield widths, combo, fixed + sum(f[c] for f, c in zip(flops, combo))

    def table(self):
        """(budget in MFLOPs, all scores sorted best first)."""
        rows = list(self.children())
        budget = sorted(m for *_, m in rows)[len(rows) // 4]
        scores = [mnas_reward(self.accuracy(widths, combo), m, budget) for widths, combo, m in rows]
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
    problem = Toy(stages=((24, 1, 2), (40, 1, 2)), widths=(1.0, 1.5))  # 6 x 6 candidates x 2 x 2 widths
    budget, scores = problem.table()
    objective = Objective(problem, CostModel(), budget)
    n = problem.space.size
    assert n == len(scores) == 144
    hits, widths = 0, set()
    for seed in range(20):
        strategy = make_strategy("random", problem.space, seed=seed)
        best = _best_found(strategy, objective, n // 2)
        assert len(strategy.seen) == n // 2  # no architecture (stage widths included) evaluated twice
        widths |= {child.widths for child in strategy.seen}
        hits += best >= scores[0] - 1e-6
    assert widths == {(0, 0), (0, 1), (1, 0), (1, 1)}
    # each run sees half the space, so it holds the best with probability 1/2; a single guess: 1/144
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
    done = len(log.read_text().splitlines())  # 13 evaluations, and repeats of earlier ones logged as cached
    assert done >= 13
    with open(log, "a") as f:
        f.write(f'{{"index": {done}, "choi')  # a torn line from a kill during the write
    with pytest.warns(UserWarning, match=f"line {done + 1}: ignoring an incomplete last line"):
        assert len(read_log(log)) == done
    resumed = search_loop(make_strategy(name, problem.space, seed=3), objective, 24, tmp_path / "cut",
                          resume=True, progress=False)
    strip = lambda rs: [(r["stage_widths"], r["choices"], r["score"]) for r in rs]  # noqa: E731
    assert strip(resumed) == strip(full)
    assert strip(read_log(log)) == strip(full)
    assert len({tuple(w) for w, _, _ in strip(full)}) > 1  # the run explored stage widths


def test_log_records_and_results(tmp_path):
    problem = Toy()
    budget, _ = problem.table()
    records = search_loop(make_strategy("evolution", problem.space, seed=0, population=4, sample_size=2),
                          Objective(problem, CostModel(), budget), 12, tmp_path, progress=False)
    assert [r["index"] for r in records] == list(range(12))
    for r in records:
        assert {"stage_widths", "choices", "score", "accuracy", "mflops", "latency_ms", "feasible", "cached",
                "seconds"} <= set(r)
        assert r["feasible"] == (r["mflops"] <= budget)
        assert r["accuracy"] == pytest.approx(problem.accuracy(r["stage_widths"], r["choices"]))
    best = best_record(records)
    assert best["feasible"] and best["accuracy"] == max(r["accuracy"] for r in records if r["feasible"])
    assert evaluations_to_best(records) == best["index"] + 1
    write_results(records, tmp_path, problem.space, Objective(problem, CostModel(), budget))
    saved = Architecture.load(tmp_path / "best.json")  # an architecture file with the best's stage widths
    assert list(saved.space.stage_widths) == best["stage_widths"] and saved.choices == best["choices"]
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


def test_decisions_are_stage_widths_then_positions():
    space = Toy().space
    for name in STRATEGIES:
        strategy = make_strategy(name, space, seed=0)
        assert strategy.sizes == [3, 3, 6, 7, 6, 7]
        child = Child((2, 0), (5, 6, 0, 3))
        assert strategy.genes(child) == [2, 0, 5, 6, 0, 3] and strategy.child([2, 0, 5, 6, 0, 3]) == child
        arch = strategy.arch(child)
        assert arch.space.stage_widths == (2.0, 1.0) and strategy.child_of(arch) == child
    assert make_strategy("rl", space).controller.sizes == [3, 3, 6, 7, 6, 7]
    plain = get_space("proxyless-tiny", {"stages": [[24, 1, 2], [40, 2, 2]], "width_choices": [1.0]})
    strategy = make_strategy("random", plain)  # no width search: positions only
    assert strategy.sizes == [6, 6, 7] and strategy.child([1, 2, 3]) == Child((0, 0), (1, 2, 3))


def test_evolution_mutates_one_decision_stage_widths_included():
    strategy = make_strategy("evolution", Toy().space, seed=0)
    parent = Child((1, 1), (2, 2, 2, 2))
    changed = []
    for _ in range(300):
        child = strategy.mutate(parent)
        diff = [d for d, (a, b) in enumerate(zip(strategy.genes(parent), strategy.genes(child))) if a != b]
        assert len(diff) == 1
        changed.append(diff[0])
    assert set(changed) == set(range(6))  # both stage widths and every position get mutated


def test_rl_controller_learns_a_stage_width():
    """A reward that depends only on stage 1's width: the controller's greedy choice for it moves to that width."""
    strategy = make_strategy("rl", Toy().space, seed=0, controller_lr=0.05)
    for _ in range(60):
        arch = strategy.propose()
        strategy.observe(arch, float(arch.space.stage_widths[1] == 2.0))
    probs = strategy.probabilities()
    assert len(probs) == 6 and len(probs[1]) == 3
    assert probs[1][2] > 0.6  # started at about 1/3


def test_progressive_expands_stage_widths_and_its_surrogate_sees_them():
    problem = Toy()
    strategy = make_strategy("progressive", problem.space, seed=0, beam=2)
    assert strategy.levels == [[0, 2, 3], [1, 4, 5]]  # per stage: its width, then its positions
    for _ in range(2):  # warm-up
        arch = strategy.propose()
        strategy.observe(arch, problem.evaluate(arch))
    candidates = strategy._candidates(strategy.levels[0])
    beams = {c for c, _ in strategy.history}
    assert len({c.widths[0] for c in candidates}) == 3  # stage 0's width is expanded
    assert all(any(c.widths[1] == b.widths[1] and c.ops[2:] == b.ops[2:] for b in beams) for c in candidates)
    x = strategy.features([Child((0, 0), (0, 0, 0, 0)), Child((1, 0), (0, 0, 0, 0))])
    assert x.shape == (2, sum(strategy.sizes)) and (x[0] != x[1]).sum() == 2  # one width, one-hot


def test_replay_refuses_a_record_whose_stage_widths_are_not_width_choices():
    problem = Toy()
    strategy = make_strategy("random", problem.space, seed=0)
    good = {"index": 0, "stage_widths": [1.5, 2.0], "choices": ["k3_e3", "zero", "k7_e6", "zero"], "score": 0.5}
    assert replay(strategy, [good]) == 1 and strategy.history[0][0] == Child((1, 2), (0, 6, 5, 6))
    bad = dict(good, index=1, stage_widths=[1.25, 2.0])
    with pytest.raises(HwnasError, match=r"record 1: stage widths \[1.25, 2.0\] are not all width choices"):
        replay(strategy, [bad])


def test_feasibility_check_counts_stage_widths():
    problem = Toy(stages=((24, 1, 2), (40, 1, 2)), widths=(1.0, 0.5))  # the cheapest is narrower than the preset
    lowest = min(m for *_, m in problem.children())
    assert CostModel().minimum(problem.space) == pytest.approx(lowest)
    assert lowest < min(m for w, _, m in problem.children() if w == (1.0, 1.0))
    Objective(problem, CostModel(), lowest * 1.001).check_feasible(problem.space)
    with pytest.raises(HwnasError, match="below the cheapest architecture"):
        Objective(problem, CostModel(), lowest * 0.999).check_feasible(problem.space)


def test_latency_budget_prices_every_width_with_the_fallback_regressor(capsys):
    from hwnas.children import latency_table
    from hwnas.search.latency import load_latency_predictor
    from hwnas.strategies.runner import build_objective

    space = Toy(stages=((24, 1, 2), (40, 1, 2)), widths=(1.0, 0.5, 2.0)).space
    predictor = load_latency_predictor(space, "predictors/amd-epyc-2c-tflite-fp32.json")[0]
    objective = build_objective(space, predictor, budget_ms=1.0)
    assert "fallback regressor" in capsys.readouterr().err  # the table lacks most width operators
    measure = lambda child: objective.cost_model.measure(child_arch(space, child))["latency_ms"]  # noqa: E731
    assert measure(Child((2, 2), (5, 5))) > measure(Child((0, 0), (5, 5))) > 0  # widest priced
    low = latency_table(space, objective.cost_model.predictor).min()
    children = [Child(w, (a, b)) for w in itertools.product(range(3), repeat=2) for a in range(6) for b in range(6)]
    assert min(map(measure, children)) == pytest.approx(low, abs=1e-4)
    assert low < min(measure(c) for c in children if c.widths == (0, 0))  # the cheapest has width 0.5
    objective.budget = low * 1.01
    objective.check_feasible(space)
    objective.budget = low * 0.99
    with pytest.raises(HwnasError, match=f"minimum achievable is {low:.4f} ms"):
        objective.check_feasible(space)


def test_hwnas_search_oneshot_trains_an_entangled_supernet_and_logs_widths(tmp_path):
    from hwnas.cli import main

    argv = ["search", "--strategy", "evolution", "--set", "stages=[[24,1,2],[40,1,2]]", "--evaluations", "3",
            "--evaluator", "oneshot", "--supernet-steps", "2", "--batch-size", "16", "--calib-batches", "1",
            "--limit-train", "64", "--limit-val", "32", "--no-progress", "--threads", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    from hwnas.weights import read_weights

    assert read_weights(tmp_path / "supernet.safetensors")[1]["kind"] == "hwnas-entangled-supernet"
    records = read_log(tmp_path / "evaluations.jsonl")
    assert len(records) == 3 and all(len(r["stage_widths"]) == 2 and 0 <= r["accuracy"] <= 1 for r in records)


@pytest.fixture(scope="module")
def digits_small():
    from hwnas.data import load_dataset

    return load_dataset("digits", 32, seed=0, limit_train=64, limit_val=32)


def test_oneshot_evaluator_scores_entangled_children_like_their_extracted_networks(tmp_path, digits_small):
    import torch

    from hwnas.strategies import supernet_bridge as bridge
    from hwnas.supernet.entangled import EntangledSupernet
    from hwnas.supernet.recalibrate import recalibrate_bn
    from hwnas.train import evaluate

    space = Toy(stages=((24, 1, 2), (40, 2, 2))).space
    net = bridge.train_sandwich(space, digits_small, steps=3, batch_size=16, warmup_steps=1, progress=False)
    path = bridge.save_supernet(net, tmp_path / "supernet.safetensors")
    evaluator = bridge.oneshot_evaluator(path, space, digits_small, calib_batches=2, batch_size=16)
    loaded = evaluator.supernet
    assert isinstance(loaded, EntangledSupernet)
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    for child in (Child((0, 0), (0, 0, 6)), Child((2, 1), (5, 3, 1)), Child((1, 2), (2, 4, 5))):
        arch = child_arch(space, child)
        acc = evaluator.evaluate(arch)
        standalone = loaded.extract(child, arch)  # the same weights as a plain network, BN re-estimated alike
        recalibrate_bn(standalone, evaluator.batches)
        assert acc == pytest.approx(evaluate(standalone, digits_small.val)[0])
    assert all(torch.equal(before[k], v) for k, v in loaded.state_dict().items())  # buffers restored

    # a gradient search's checkpoint (entangled) loads too, from its run folder
    torch.save({"epoch": 1, "supernet": "entangled", "model": net.state_dict()}, tmp_path / "checkpoint.pt")
    from_run = bridge.load_supernet(tmp_path, space)
    assert all(torch.equal(from_run.state_dict()[k], v) for k, v in net.state_dict().items())
    (tmp_path / "bad.safetensors").write_bytes(b"not a weights file")
    with pytest.raises(HwnasError, match="bad.safetensors"):
        bridge.load_supernet(tmp_path / "bad.safetensors", space)
    other = Toy(stages=((24, 1, 2), (48, 2, 2))).space
    with pytest.raises(HwnasError, match="does not match space"):
        bridge.load_supernet(tmp_path / "checkpoint.pt", other)


def test_separate_weights_supernets_load_without_width_search_and_are_refused_with_it(tmp_path, digits_small):
    """fbnet spaces (no entangled supernet) train one with uniform single paths; older separate-weights files load
    where the space has one width per stage and are refused where it searches widths."""
    import torch

    from hwnas.strategies import supernet_bridge as bridge
    from hwnas.strategies.evaluators import OneShotEvaluator
    from hwnas.supernet import Supernet

    fbnet = get_space("fbnet-cifar100", {"stages": [[16, 1, 1], [24, 1, 2]], "head_channels": 64, "num_classes": 10})
    assert isinstance(bridge.train_supernet(fbnet, digits_small, steps=1, batch_size=16, progress=False), Supernet)
    plain = get_space("proxyless-tiny", {"stages": [[24, 1, 2], [40, 1, 2]], "width_choices": [1.0]})
    net = bridge.train_uniform(plain, digits_small, steps=2, batch_size=16, progress=False)  # as before width search
    path = bridge.save_supernet(net, tmp_path / "separate.safetensors")
    torch.save({"epoch": 1, "model": net.state_dict()}, tmp_path / "checkpoint.pt")  # the separate search's
    for source in (path, tmp_path / "checkpoint.pt"):
        evaluator = bridge.oneshot_evaluator(source, plain, digits_small, calib_batches=1, batch_size=16)
        assert isinstance(evaluator, OneShotEvaluator) and isinstance(evaluator.supernet, Supernet)
        assert 0 <= evaluator.evaluate(architecture_of(plain, ["k3_e3", "k7_e6"])) <= 1
    widths = get_space("proxyless-tiny", {"stages": [[24, 1, 2], [40, 1, 2]]})
    for source in (path, tmp_path / "checkpoint.pt"):
        with pytest.raises(HwnasError, match="holds one width per stage"):
            bridge.load_supernet(source, widths)
