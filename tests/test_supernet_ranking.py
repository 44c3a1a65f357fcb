"""benchmarks/supernet_ranking.py: run E's models as children of the supernet, and the ranking statistics."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import supernet_ranking as bench  # noqa: E402

from hwnas.errors import HwnasError  # noqa: E402
from hwnas.spaces import get_space  # noqa: E402

TRUTH = ROOT / "benchmarks" / "supernet_ranking_run_e.json"


def _ops(ops):
    return [(o.kind, o.c_in, o.c_out, o.kernel, o.stride, o.expand) for o in ops if o.kind != "zero"]


def test_run_e_models_are_the_committed_tflite_files_at_their_predicted_latency():
    from hwnas.modelgraph import read_model
    from hwnas.modelgraph.recognise import recognise
    from hwnas.children import child_arch, latency_table
    from hwnas.search.latency import load_latency_predictor

    space = get_space("proxyless-tiny")
    truth = bench.load_truth(str(TRUTH), space)
    assert len(truth) == 14 and sum(r["in_band"] for r in truth) == 12 and sum(r["proxy"] for r in truth) == 2
    predictor, _ = load_latency_predictor(space, str(ROOT / "predictors" / "amd-epyc-2c-b-tflite-fp32.json"))
    table = latency_table(space, predictor)
    for row in truth:
        if row["proxy"]:
            continue
        assert table.cost(row["child"]) == pytest.approx(row["predicted_ms"], abs=6e-4)
        blocks = recognise(read_model(ROOT / "docs" / "cifar10" / "models" / row["tflite"])).blocks
        assert _ops(b.candidates[0] for b in blocks) == _ops(child_arch(space, row["child"]).ops()), row["name"]


def test_mobilenetv2_is_scored_as_the_child_with_its_nearest_stage_channels():
    space = get_space("proxyless-tiny")
    assert bench.nearest_stage_widths(space, 1.0) == [1.0] * 4
    assert bench.nearest_stage_widths(space, 1.25) == [1.25] * 4


def test_rank_statistics():
    same = bench.rank_stats([(0.1, 0.6), (0.2, 0.7), (0.3, 0.8), (0.4, 0.9)])
    assert same["tau"] == pytest.approx(1) and same["rho"] == pytest.approx(1) and same["top3"] == 3
    reverse = bench.rank_stats([(0.4, 0.6), (0.3, 0.7), (0.2, 0.8), (0.1, 0.9)])
    assert reverse["tau"] == pytest.approx(-1) and reverse["top3"] == 2


def test_a_truth_file_without_accuracies_is_refused_naming_it(tmp_path):
    bad = tmp_path / "truth.json"
    bad.write_text(json.dumps([{"name": "x", "in_band": True}]))
    with pytest.raises(HwnasError, match=r"truth.json: model 0 has no field 'test_acc'"):
        bench.load_truth(str(bad), get_space("proxyless-tiny"))
