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
    best = max(rescored, key=lambda r: r["supernet_acc"])
    assert found.supernet_acc == best["supernet_acc"] and list(found.child.ops) == best["ops"]
    small_best = sorted((r["supernet_acc"] for r in records if r["which"] == "small"), reverse=True)[:3]
    assert sorted(r["supernet_acc"] for r in records[:30] if (r["widths"], r["ops"]) in
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
