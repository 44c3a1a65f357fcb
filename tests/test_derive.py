"""Derivation by supernet accuracy (hwnas.search.derive): in-band children only, a log that resumes after a kill,
and ``derive="argmax"`` keeping the most probable child of the band."""

from __future__ import annotations

import json

import pytest
import torch

from hwnas.search import SearchConfig, run_search
from hwnas.search.band import BandDecoder
from hwnas.children import child_arch, latency_table
from hwnas.search.derive import evolve_in_band
from hwnas.search.entangled_loop import derive as argmax_derive
from hwnas.search.latency import AnalyticProxy
from hwnas.spaces import get_space
from hwnas.supernet.entangled import EntangledSupernet

SMALL = {"resolution": 16, "stages": [[24, 1, 2], [40, 2, 2]], "head_channels": 64, "kernels": [3, 5],
         "width_choices": [1.0, 1.5, 2.0]}


@pytest.fixture(scope="module")
def setting():
    space = get_space("proxyless-tiny", SMALL)
    table = latency_table(space, AnalyticProxy())
    torch.manual_seed(0)
    net = EntangledSupernet(space, init_std=1.0)  # a peaked prior: the sampler must still find enough children
    low = table.min() + 0.3 * (table.max() - table.min())
    return net, table, None, low, low * 1.1


def _scorers(calls):
    """Deterministic stand-ins for the supernet's scores (a child's accuracy as a fixed function of it)."""
    def small(child):
        calls.append(child)
        return ((7 * sum(child.ops) + 3 * sum(child.widths) + child.ops[0]) % 101) / 100

    def big(child):
        calls.append(child)
        return ((5 * sum(child.ops) + child.widths[-1]) % 97) / 100

    return small, big


def test_evolution_scores_only_children_inside_the_band_and_returns_the_best(setting, tmp_path):
    net, table, images, low, high = setting
    calls = []
    small, big = _scorers(calls)
    found = evolve_in_band(net, table, low, high, small, big, tmp_path / "derive.jsonl", children=30,
                           population=8, parents=4, top=3)
    assert low <= found.latency_ms <= high and found.latency_ms == pytest.approx(table.cost(found.child))
    records = [json.loads(line) for line in (tmp_path / "derive.jsonl").read_text().splitlines()][1:]
    assert len(records) == 33 and found.scored == 30 and found.rescored == 3 and len(calls) == 33
    assert all(low <= r["predicted_ms"] <= high for r in records)
    assert len({(tuple(r["widths"]), tuple(r["ops"])) for r in records if r["which"] == "small"}) == 30
    rescored = [r for r in records if r["which"] == "rescore"]
    best = max(rescored, key=lambda r: r["score"])
    assert found.supernet_acc == best["score"] and list(found.child.ops) == best["ops"]
    small_best = sorted((r["score"] for r in records if r["which"] == "small"), reverse=True)[:3]
    assert sorted(r["score"] for r in records[:30] if (r["widths"], r["ops"]) in
                  [(q["widths"], q["ops"]) for q in rescored])[::-1] == small_best  # the top 3 were re-scored


def test_the_log_resumes_after_a_kill_with_the_same_result(setting, tmp_path):
    net, table, images, low, high = setting
    calls = []
    small, big = _scorers(calls)
    kw = dict(children=24, population=6, parents=3, top=2, seed=3)
    full = evolve_in_band(net, table, low, high, small, big, tmp_path / "full.jsonl", **kw)
    lines = (tmp_path / "full.jsonl").read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[:11]) + lines[11][:25])  # killed while writing the 11th child's line
    calls.clear()
    with pytest.warns(UserWarning, match="incomplete last line"):
        resumed = evolve_in_band(net, table, low, high, small, big, cut, **kw)
    assert len(calls) == 26 - 10  # only the children not logged completely are scored again
    assert (resumed.child, resumed.supernet_acc, resumed.scored) == (full.child, full.supernet_acc, full.scored)
    assert cut.read_text() == (tmp_path / "full.jsonl").read_text()


def test_a_band_without_children_is_refused(setting, tmp_path):
    net, table, images, _, _ = setting
    small, big = _scorers([])
    with pytest.raises(Exception, match="band"):
        evolve_in_band(net, table, table.max() + 1, table.max() + 2, small, big, tmp_path / "d.jsonl", children=5)


def _config(out, **kw) -> SearchConfig:
    base = dict(space="proxyless-tiny", space_params=SMALL, epochs=2, warmup_epochs=1, batch_size=16, max_steps=2,
                limit_train=96, limit_val=32, out=str(out), progress=False, threads=1, recalib_batches=2)
    base.update(kw)
    return SearchConfig(**base)


def test_argmax_derivation_keeps_the_most_probable_child_and_evolution_stays_in_the_band(tmp_path):
    table = latency_table(get_space("proxyless-tiny", SMALL), AnalyticProxy())
    budget = table.min() + 0.4 * (table.max() - table.min())
    argmax = run_search(_config(tmp_path / "argmax", budget_ms=budget, derive="argmax"))
    band = BandDecoder(table, 0.93 * budget, 0.97 * budget)
    child, _ = argmax_derive(argmax.supernet, table, band)
    assert argmax.arch.to_dict() == child_arch(table.space, child).to_dict()
    assert argmax.summary["derivation"] == "argmax" and not (tmp_path / "argmax" / "derive.jsonl").exists()
    evolved = run_search(_config(tmp_path / "evo", budget_ms=budget, derive="evolution", derive_children=6))
    summary = evolved.summary
    assert summary["derivation"] == "evolution" and summary["derive_children_scored"] == 6
    assert 0.93 * budget <= summary["predicted_latency_ms"] <= 0.97 * budget
    assert 0 <= summary["derive_supernet_acc"] <= 1
    assert len((tmp_path / "evo" / "derive.jsonl").read_text().splitlines()) == 1 + 6 + summary["derive_rescored"]


def test_argmax_reproduces_the_child_recorded_before_the_proxy_derivations(tmp_path):
    """The child of this small fixed search, recorded from main at db5b5d0 (before issue 20's proxies)."""
    table = latency_table(get_space("proxyless-tiny", SMALL), AnalyticProxy())
    budget = table.min() + 0.4 * (table.max() - table.min())
    assert budget == pytest.approx(1.19651082, abs=1e-7)
    result = run_search(_config(tmp_path, budget_ms=budget, derive="argmax"))
    assert (result.arch.choices, list(result.arch.space.stage_widths)) == (["k3_e6", "k5_e3", "k5_e3"], [1.0, 2.0])
    assert result.summary["predicted_latency_ms"] == pytest.approx(1.12189, abs=1e-5)


KILLED = """
import sys, time
from hwnas.children import latency_table
from hwnas.search.derive import evolve_in_band
from hwnas.search.latency import AnalyticProxy
from hwnas.spaces import get_space
sys.path.insert(0, {tests!r})
from test_derive import SMALL, _scorers, _band
table = latency_table(get_space("proxyless-tiny", SMALL), AnalyticProxy())
small, big = _scorers([])
def slow(child):
    time.sleep(0.05)
    return small(child)
evolve_in_band(None, table, *_band(table), slow, big, sys.argv[1], children=40, population=8, parents=4, top=3)
"""


def _band(table):
    low = table.min() + 0.3 * (table.max() - table.min())
    return low, low * 1.1


def test_the_log_resumes_after_kill_9_of_a_real_derivation(tmp_path):
    """A derivation in another process killed with SIGKILL mid-way, then run again here: the same winner, the
    children logged before the kill are not scored again."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import warnings
    from pathlib import Path

    table = latency_table(get_space("proxyless-tiny", SMALL), AnalyticProxy())
    kw = dict(children=40, population=8, parents=4, top=3)
    calls = []
    small, big = _scorers(calls)
    full = evolve_in_band(None, table, *_band(table), small, big, tmp_path / "full.jsonl", **kw)
    log = tmp_path / "killed.jsonl"
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-c", KILLED.format(tests=str(root / "tests")), str(log)],
                            env=dict(os.environ, PYTHONPATH=str(root)))
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 12:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the derivation ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    logged = [line for line in log.read_text().split("\n")[1:] if line.endswith("}")]
    assert 11 <= len(logged) < 40
    calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a line cut by the kill is reported and dropped
        resumed = evolve_in_band(None, table, *_band(table), small, big, log, **kw)
    assert (resumed.child, resumed.score, resumed.scored) == (full.child, full.score, full.scored)
    assert len(calls) == 40 + 3 - len(logged)  # the logged scores were taken from the log
    assert log.read_text() == (tmp_path / "full.jsonl").read_text()


def test_proxy_child_needs_no_supernet_and_picks_the_highest_proxy_in_the_band(tmp_path):
    from hwnas.children import analytic_table
    from hwnas.search.derive import proxy_child

    table = latency_table(get_space("proxyless-tiny", SMALL), AnalyticProxy())
    low, high = _band(table)
    found = proxy_child(table, low, high, "flops", seed=1, children=40, log=tmp_path / "flops.jsonl")
    flops = analytic_table(table.space, "flops")
    records = [json.loads(line) for line in (tmp_path / "flops.jsonl").read_text().splitlines()][1:]
    assert len(records) == 40 == found.scored and found.rescored == 0 and found.scorer == "flops"
    assert all(low <= r["predicted_ms"] <= high and r["which"] == "flops" for r in records)
    assert found.score == pytest.approx(flops.cost(found.child) / 1e6)
    assert found.score == max(r["score"] for r in records) and low <= found.latency_ms <= high
    again = proxy_child(table, low, high, "flops", seed=1, children=40)
    assert (again.child, again.log) == (found.child, None)
    by_params = proxy_child(table, low, high, "params", seed=1, children=40)
    assert by_params.score == pytest.approx(analytic_table(table.space, "params").cost(by_params.child) / 1e6)


def test_synflow_grows_with_width_and_depth():
    from hwnas.arch import architecture_of
    from hwnas.search.proxies import proxy_of

    space = get_space("proxyless-tiny", SMALL)
    narrow = architecture_of(space.at_widths([1.0, 1.0]), ["k3_e3", "k3_e3", "zero"])
    wide = architecture_of(space.at_widths([2.0, 2.0]), ["k5_e6", "k5_e6", "k5_e6"])
    assert proxy_of(wide, "synflow") > proxy_of(narrow, "synflow") > 0
    assert proxy_of(narrow, "synflow", seed=3) == proxy_of(narrow, "synflow", seed=3)
    with pytest.raises(Exception, match="unknown proxy 'zen'"):
        proxy_of(narrow, "zen")


def test_the_search_derives_by_a_proxy_and_the_report_names_it(tmp_path):
    from hwnas.run_report import derivation

    table = latency_table(get_space("proxyless-tiny", SMALL), AnalyticProxy())
    budget = table.min() + 0.4 * (table.max() - table.min())
    result = run_search(_config(tmp_path, budget_ms=budget, derive="flops", derive_children=12))
    summary = result.summary
    assert summary["derivation"] == "flops" and summary["derive_children_scored"] == 12
    assert summary["derive_score"] == pytest.approx(summary["mflops"], abs=1e-4)
    assert 0.93 * budget <= summary["predicted_latency_ms"] <= 0.97 * budget
    records = [json.loads(line) for line in (tmp_path / "derive.jsonl").read_text().splitlines()][1:]
    assert len(records) == 12 and max(r["score"] for r in records) == pytest.approx(summary["derive_score"], abs=1e-5)
    assert derivation(summary) == (f"flops: evolution over 12 children of the band scored by the zero-cost proxy "
                                   f"flops, the winner's {summary['derive_score']:.4g} MFLOPs")


def test_short_training_trains_the_argmax_child_and_others_of_the_band_and_keeps_the_most_accurate(tmp_path):
    from hwnas.run_report import derivation

    table = latency_table(get_space("proxyless-tiny", SMALL), AnalyticProxy())
    budget = table.min() + 0.4 * (table.max() - table.min())
    argmax = run_search(_config(tmp_path / "argmax", budget_ms=budget, derive="argmax"))
    cfg = _config(tmp_path / "short", budget_ms=budget, derive="short", derive_short_children=3,
                  derive_short_epochs=1)
    result = run_search(cfg)
    summary = result.summary
    assert summary["derivation"] == "short" and summary["derive_children_scored"] == 3
    lines = [json.loads(line) for line in (tmp_path / "short" / "derive.jsonl").read_text().splitlines()]
    assert lines[0]["settings"]["images"] == "plain"  # the digits splits have a plain view of the training images
    records = lines[1:]
    assert [r["which"] for r in records] == ["short"] * 3
    assert records[0]["choices"] == argmax.arch.choices  # the argmax child is the first candidate
    assert len({(tuple(r["widths"]), tuple(r["ops"])) for r in records}) == 3
    assert all(0.93 * budget <= r["predicted_ms"] <= 0.97 * budget for r in records)
    for i, r in enumerate(records):  # each score is its candidate's own training, on the architecture split
        history = [json.loads(line) for line in
                   (tmp_path / "short" / "short" / f"{i:02d}" / "metrics.jsonl").read_text().splitlines()]
        assert len(history) == 1 and r["score"] == pytest.approx(history[0]["val_acc"], abs=1e-5)
    best = max(records, key=lambda r: r["score"])
    assert summary["derive_score"] == pytest.approx(best["score"], abs=1e-5) and result.arch.choices == best["choices"]
    # scored on the architecture split's images without augmentation: evaluating again gives the same score
    from hwnas.builder import build_model
    from hwnas.children import Child
    from hwnas.data import load_dataset
    from hwnas.search.entangled_loop import split_train
    from hwnas.train import evaluate
    from hwnas.weights import load_weights

    splits = load_dataset("digits", table.space.params["resolution"], seed=cfg.seed, limit_train=96, limit_val=32)
    plain = split_train(splits.train_plain, cfg.arch_fraction, cfg.seed)[1]
    augmented = split_train(splits.train, cfg.arch_fraction, cfg.seed)[1]
    assert [int(plain[i][1]) for i in range(len(plain))] == [int(augmented[i][1]) for i in range(len(augmented))]
    first = records[0]
    model = build_model(child_arch(table.space, Child(tuple(first["widths"]), tuple(first["ops"]))))
    load_weights(model, tmp_path / "short" / "short" / "00" / "weights.safetensors")
    assert evaluate(model, plain)[0] == first["score"] == evaluate(model, plain)[0]
    assert derivation(summary).startswith("short training: 3 candidates of the band trained stand-alone")
    # resumed after the end: nothing is trained again, the same child
    stamps = [p.stat().st_mtime_ns for p in sorted((tmp_path / "short" / "short").glob("*/weights.safetensors"))]
    again = run_search(_config(tmp_path / "short", budget_ms=budget, derive="short", derive_short_children=3,
                               derive_short_epochs=1, resume=True))
    assert again.arch.to_dict() == result.arch.to_dict()
    assert [p.stat().st_mtime_ns for p in sorted((tmp_path / "short" / "short").glob("*/weights.safetensors"))] == stamps


def test_the_main_job_config_takes_every_derivation():
    from hwnas.errors import HwnasError
    from hwnas.run_config import default_config, validate_config

    for how in ("argmax", "evolution", "short", "flops", "params", "mac", "synflow"):
        cfg = default_config()
        cfg["search"]["derive"] = how
        assert validate_config(cfg)["search"]["derive"] == how
    cfg["search"]["derive"] = "zen"
    with pytest.raises(HwnasError, match="search.derive"):
        validate_config(cfg)
