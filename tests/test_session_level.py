"""The session level: predictions scaled by what this machine measures now near a budget."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from hwnas.arch import Architecture
from hwnas.errors import HwnasError
from hwnas.search import SearchConfig
from hwnas.search.band import sample_children_in_band
from hwnas.children import child_arch, latency_table
from hwnas.search.latency import load_latency_predictor
from hwnas.predictors.leveled import LeveledPredictor
from hwnas.search.session_level import LEVEL_BAND, level_for_search, measure_session_level
from hwnas.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
PREDICTOR = str(ROOT / "predictors" / "amd-epyc-2c-tflite-fp32.json")


@pytest.fixture(scope="module")
def space():
    return get_space("proxyless-tiny")


@pytest.fixture(scope="module")
def predictor(space):
    return load_latency_predictor(space, PREDICTOR, quiet=True)[0]


def test_leveled_predictor_scales_every_prediction(space, predictor):
    leveled, source = load_latency_predictor(space, PREDICTOR, quiet=True, level=1.25)
    assert isinstance(leveled, LeveledPredictor) and "x 1.25 (session level)" in source
    plain, scaled = latency_table(space, predictor), latency_table(space, leveled)
    for child in sample_children_in_band(plain, plain.min(), plain.max(), 5, seed=0):
        assert scaled.cost(child) == pytest.approx(1.25 * plain.cost(child), rel=1e-9)
        ops = child_arch(space, child).ops()
        assert leveled.predict_ops(ops) == pytest.approx(1.25 * predictor.predict_ops(ops), rel=1e-9)
    assert scaled.min() == pytest.approx(1.25 * plain.min(), rel=1e-6)  # the table sums in float32
    assert leveled.runtime == predictor.runtime and leveled.fallback_name == predictor.fallback_name


def test_children_in_band_are_in_band_and_distinct(space, predictor):
    table = latency_table(space, predictor)
    children = sample_children_in_band(table, 0.25, 0.3, 8, seed=3)
    assert len(children) == len(set(children)) == 8
    assert all(0.25 <= table.cost(c) <= 0.3 for c in children)
    assert sample_children_in_band(table, 0.0, table.min() / 2, 3, seed=0, max_draws=40000) == []


def test_measured_level_is_the_median_ratio_of_children_near_the_budget(space, predictor):
    found = measure_session_level(space, predictor, 0.3, count=3, rounds=1, progress=False)
    assert len(found.models) == 3
    for m in found.models:
        assert LEVEL_BAND[0] * 0.3 - 1e-4 <= m["predicted_ms"] <= LEVEL_BAND[1] * 0.3 + 1e-4
        assert m["measured_ms"] > 0 and len(m["rounds_ms"]) == 1
    ratios = [m["measured_ms"] / m["predicted_ms"] for m in found.models]
    assert found.level == pytest.approx(statistics.median(ratios), abs=1e-4)
    assert "session level" in found.describe()


def test_a_predictor_for_another_machine_is_refused(space, predictor):
    hundredfold = LeveledPredictor(predictor, 100.0)  # predicts ~100x what any CPU of ours measures
    with pytest.raises(HwnasError, match="not for this machine"):
        measure_session_level(space, hundredfold, 30.0, count=1, rounds=1, progress=False)


def test_a_budget_no_child_reaches_is_refused(space, predictor):
    with pytest.raises(HwnasError, match="no child of proxyless-tiny is predicted"):
        measure_session_level(space, predictor, 0.01, count=1, rounds=1, progress=False)


def test_relevel_needs_a_predictor_and_a_budget():
    with pytest.raises(HwnasError, match="needs --predictor and --budget-ms"):
        SearchConfig(relevel=2, budget_ms=0.3).check()
    with pytest.raises(HwnasError, match="latency level must be a positive number"):
        SearchConfig(latency_level=0.0).check()


def test_a_resumed_search_keeps_its_level(tmp_path):
    cfg = SearchConfig(predictor=PREDICTOR, budget_ms=0.3, relevel=4, out=str(tmp_path), resume=True)
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg.to_dict(), latency_level=1.234)))
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    space = get_space("proxyless-tiny")
    predictor = load_latency_predictor(space, PREDICTOR, quiet=True)[0]
    assert level_for_search(cfg, space, predictor) == 1.234  # nothing timed: the folder's level


def test_search_cli_relevels_and_lands_in_the_leveled_band(tmp_path, capsys):
    from hwnas.cli import main

    out = tmp_path / "run"
    code = main(["search", "--predictor", PREDICTOR, "--budget-ms", "0.3", "--relevel", "2", "--epochs", "2",
                 "--warmup-epochs", "0", "--max-steps", "2", "--batch-size", "16", "--limit-train", "64",
                 "--limit-val", "32", "--no-progress", "--out", str(out)])
    assert code == 0
    level = json.loads((out / "session_level.json").read_text())["level"]
    assert json.loads((out / "config.json").read_text())["latency_level"] == level
    derived = json.loads((out / "derived.json").read_text())
    assert 0.93 * 0.3 - 1e-6 <= derived["predicted_latency_ms"] <= 0.97 * 0.3 + 1e-6
    predictor = load_latency_predictor(get_space("proxyless-tiny"), PREDICTOR, quiet=True)[0]
    raw = predictor.predict_ops(Architecture.load(out / "arch.json").ops())
    assert derived["predicted_latency_ms"] == pytest.approx(level * raw, rel=1e-3)
    assert "session level" in capsys.readouterr().out


def test_a_phone_predictor_is_not_relevelled_on_this_machine(tmp_path):
    phone = str(ROOT / "predictors" / "phones" / "samsung_a50.json")
    cfg = SearchConfig(space="fbnet-cifar100", predictor=phone, budget_ms=40.0, relevel=2, out=str(tmp_path))
    space = get_space("fbnet-cifar100")
    predictor = load_latency_predictor(space, phone, quiet=True)[0]
    with pytest.raises(HwnasError, match="samsung_a50.*not a CPU it can run on"):
        level_for_search(cfg, space, predictor)
    assert not (tmp_path / "session_level.json").exists()
