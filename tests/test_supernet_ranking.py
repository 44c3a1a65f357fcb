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


def test_run_e_models_are_at_their_predicted_latency():
    """Run E's truth (read back from the .tflite files of commit 1c52e65, since replaced by run F's) against
    the table's predicted ms."""
    from hwnas.children import latency_table
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


def test_run_f_tflite_files_read_back_into_the_truths_children():
    """The committed run F models (docs/cifar10/models) are the children that run F's truth names."""
    from hwnas.children import child_arch
    from hwnas.modelgraph import read_model
    from hwnas.modelgraph.recognise import recognise

    space = get_space("proxyless-tiny")
    rows = [r for r in bench.load_truth(str(ROOT / "benchmarks" / "supernet_ranking_run_f.json"), space)
            if r["kind"] in ("random", "searched")]
    assert len(rows) == 23
    for row in rows[:4] + rows[-2:]:  # random 0-3 and two searched children
        file = row["name"] + ".tflite" if row["kind"] == "searched" else \
            f"random-0.5ms-{row['name'][6:8]}.tflite"  # random17-0.5ms -> random-0.5ms-17.tflite
        ops = [b.candidates[0] for b in recognise(read_model(ROOT / "docs" / "cifar10" / "models" / file)).blocks]
        found = bench.child_of_ops(space, ops)
        assert _ops(child_arch(space, found).ops()) == _ops(child_arch(space, row["child"]).ops()), row["name"]
    assert bench.child_of_ops(space, ops[:-1]) is None


def test_run_d_models_are_at_their_predicted_latency_flops_and_params():
    """Run D's truth (docs/cifar10.md "Run D": read back from the .tflite files of commit a846182) against that
    table's predicted ms (intel-xeon-2c), MFLOPs and M params."""
    from hwnas.children import child_arch, latency_table
    from hwnas.search.latency import load_latency_predictor

    space = get_space("proxyless-tiny")
    truth = bench.load_truth(str(ROOT / "benchmarks" / "supernet_ranking_run_d.json"), space)
    assert len(truth) == 14 and sum(r["in_band"] for r in truth) == 12
    predictor, _ = load_latency_predictor(space, str(ROOT / "predictors" / "intel-xeon-2c-tflite-fp32.json"))
    table = latency_table(space, predictor)
    flops = {"searched (search seed 0)": 18.06, "random 2": 22.27, "random 9": 15.34, "MobileNetV2 width 1.375": 25.28}
    for row in truth:
        if not row["proxy"]:
            assert table.cost(row["child"]) == pytest.approx(row["predicted_ms"], abs=6e-4), row["name"]
        arch = bench.mobilenetv2(space, row["width_mult"]) if row["proxy"] else child_arch(space, row["child"])
        if row["name"] in flops:
            assert arch.cost().flops / 1e6 == pytest.approx(flops[row["name"]], abs=0.006)


def test_proxies_only_ranks_run_e_without_a_dataset(tmp_path, capsys):
    code = bench.main(["--proxies-only", "--truth", str(TRUTH), "--supernet-scores",
                       str(ROOT / "benchmarks" / "supernet_ranking_run_e_scores.jsonl"), "--out", str(tmp_path)])
    table = (tmp_path / "table.md").read_text()
    assert code == 0 and (tmp_path / "ranking.png").exists()
    assert "| MFLOPs | in band (12) | +0.58 (0.0088) | +0.75 (0.0051) | 2/3 |" in table
    assert "| MFLOPs | all (14) | +0.65 (0.0008) |" in table
    assert "| supernet 1x (180 steps) | in band (12) | +0.05 (0.8366) |" in table  # the run's own table
    assert "| supernet 2x (360 steps) | in band (12) | +0.21 (0.3807) |" in table
    assert "| MobileNetV2 width 1.25 (supernet: nearest child) | 68.35% | 38.57% | 44.73% | 0.5 | 22.37 |" in table


def test_proxies_only_refuses_scores_without_every_model(tmp_path):
    scores = tmp_path / "scores.jsonl"
    scores.write_text(json.dumps({"length": 1, "name": "random 0", "supernet_acc": 0.4}) + "\n")
    with pytest.raises(HwnasError, match=r"scores.jsonl: no 1x score for model 'searched \(search seed 0\)'"):
        bench.main(["--proxies-only", "--truth", str(TRUTH), "--supernet-scores", str(scores), "--out",
                    str(tmp_path / "out")])
    with pytest.raises(HwnasError, match="--dataset and --predictor are needed"):
        bench.main(["--truth", str(TRUTH), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def _job(run: Path, name: str, arch: dict, test_acc: float) -> None:
    (run / "jobs" / name).mkdir(parents=True)
    (run / "jobs" / name / "job.json").write_text(json.dumps({"kind": "train", "arch": arch}))
    (run / "jobs" / name / "result.json").write_text(json.dumps({"test_acc_torch": test_acc}))


def test_truth_from_a_budgets_run_takes_that_budgets_models_and_averages_training_seeds(tmp_path):
    space = get_space("proxyless-tiny")
    run = tmp_path / "run"
    (run / "jobs").mkdir(parents=True)
    (run / "settings.json").write_text(json.dumps({"predictor": str(ROOT / "predictors/amd-epyc-2c-b-tflite-fp32.json")}))
    (run / "levels.json").write_text(json.dumps({"0.5ms": {"level": 2.0}, "0.35ms": {"level": 1.0}}))
    (run / "ladder-0.5ms.json").write_text(json.dumps({"widths": {"1.125": {"predicted_ms": 0.483}}}))
    (run / "ladder-0.35ms.json").write_text(json.dumps({"widths": {}}))
    child = {"space": "proxyless-tiny", "space_params": {"stage_widths": [1.0, 1.0, 1.0, 1.0]},
             "choices": ["k3_e3"] * 9}
    mbv2 = {"space": "proxyless-tiny", "space_params": {"width_mult": 1.125}, "choices": ["k3_e6"] * 9}
    _job(run, "random00-0.5ms", child, 0.60)
    _job(run, "random00-0.35ms", child, 0.10)  # another budget: left out
    _job(run, "searched-0.5ms-seed1", child, 0.62)
    _job(run, "inherited-0.5ms-seed1", child, 0.99)  # not trained from scratch: left out
    _job(run, "mbv2-w1.125", mbv2, 0.64)
    _job(run, "mbv2-w1.125-t1", mbv2, 0.66)
    _job(run, "mbv2-w1.125-e11", mbv2, 0.70)  # a longer recipe: left out
    (run / "jobs" / "random01-0.5ms").mkdir()  # not finished: left out
    rows = {r["name"]: r for r in bench.truth_from_run(run, 0.5, space)}
    assert set(rows) == {"random00-0.5ms", "searched-0.5ms-seed1", "mbv2-w1.125"}
    assert rows["mbv2-w1.125"]["test_acc"] == pytest.approx(0.65) and rows["mbv2-w1.125"]["train_seeds"] == 2
    assert rows["mbv2-w1.125"]["in_band"] is False and rows["mbv2-w1.125"]["width_mult"] == 1.125
    assert rows["searched-0.5ms-seed1"]["kind"] == "searched" and rows["random00-0.5ms"]["in_band"] is True
    at_one = bench.truth_from_run(run, 0.35, space)[0]["predicted_ms"]
    assert rows["random00-0.5ms"]["predicted_ms"] == pytest.approx(2 * at_one, abs=2e-4)  # at the run's level
    with pytest.raises(HwnasError, match="no session level for budget 0.2ms"):
        bench.truth_from_run(run, 0.2, space)
    (run / "jobs").rename(run / "elsewhere")
    with pytest.raises(HwnasError, match="no jobs/ folder"):
        bench.truth_from_run(run, 0.5, space)


def test_alpha_log_probability_ranks_children_as_their_scores_say(tmp_path, capsys):
    import alpha_vs_supernet

    space = get_space("proxyless-tiny")
    probs = {f"stage {s} width": {f"w{w:g}": 0.2 for w in space.width_choices} for s in range(space.num_stages)}
    probs.update({f"position {i}": {n: 1 / len(p.names) for n in p.names} for i, p in enumerate(space.positions)})
    first = space.positions[0].names
    probs["position 0"] = {n: 0.5 if n == first[0] else 0.5 / (len(first) - 1) for n in first}
    (tmp_path / "derived.json").write_text(json.dumps({"probs": probs}))
    truth = [{"name": f"c{i}", "test_acc": 0.6 + 0.01 * i, "in_band": True, "stage_widths": [1.0] * space.num_stages,
              "choices": [first[i]] + ["k3_e3"] * (len(space.positions) - 1)} for i in range(3)]
    truth.append({"name": "mbv2", "width_mult": 1.0, "test_acc": 0.7, "in_band": False})  # not a child: left out
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    scores = [{"length": 1, "name": "c0", "supernet_acc": 0.5}, {"length": 1, "name": "c1", "supernet_acc": 0.3},
              {"length": 1, "name": "c2", "supernet_acc": 0.2}]
    (tmp_path / "scores.jsonl").write_text("\n".join(json.dumps(s) for s in scores) + "\n")
    args = ["--search", str(tmp_path), "--truth", str(tmp_path / "truth.json"),
            "--scores", str(tmp_path / "scores.jsonl")]
    assert alpha_vs_supernet.main(args + ["--length", "1"]) == 0
    assert "vs supernet accuracy (3 children): Kendall tau +0.82" in capsys.readouterr().out  # c1, c2 tie on alpha
    with pytest.raises(HwnasError, match="no 3x score for 'c0'"):
        alpha_vs_supernet.main(args + ["--length", "3"])
    truth[0]["stage_widths"] = [3.0] * space.num_stages
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    with pytest.raises(HwnasError, match="model 'c0': 'w3' is not a choice of the search"):
        alpha_vs_supernet.main(args + ["--length", "1"])


def test_short_stand_alone_training_ranks_every_model_and_a_rerun_keeps_it(tmp_path, monkeypatch, capsys):
    from test_cifar10_benchmark import tiny_cifar

    monkeypatch.setenv("HWNAS_CACHE", str(tmp_path / "cache"))  # the worker processes inherit it
    archive = tiny_cifar(tmp_path)
    widths = [1.0, 1.0, 1.0, 1.0]
    truth = [{"name": "small", "test_acc": 0.5, "in_band": True, "choices": ["k3_e3"] * 9,
              "stage_widths": widths, "predicted_ms": 0.3},
             {"name": "big", "test_acc": 0.7, "in_band": True, "choices": ["k3_e6"] * 9, "stage_widths": widths,
              "predicted_ms": 0.4},
             {"name": "mbv2", "test_acc": 0.6, "in_band": False, "width_mult": 1.25, "predicted_ms": 0.35}]
    (tmp_path / "truth.json").write_text(json.dumps(truth))
    out = tmp_path / "out"
    argv = ["--dataset", str(archive), "--predictor", str(ROOT / "predictors/amd-epyc-2c-b-tflite-fp32.json"),
            "--truth", str(tmp_path / "truth.json"), "--lengths", "none", "--short-epochs", "1", "--short-jobs", "2",
            "--train", "60", "--selection", "20", "--test", "20", "--extra-images", "0", "--bn-images", "16",
            "--out", str(out)]
    assert bench.main(argv) == 0
    log = [json.loads(line) for line in (out / "short-1ep.jsonl").read_text().splitlines()]
    assert sorted(r["name"] for r in log) == ["big", "mbv2", "small"]
    for r in log:  # the accuracy of the model's own training on the 20 selection images, after its one epoch
        epochs = [json.loads(line) for line in (out / "short-1ep" / r["name"] / "metrics.jsonl").read_text().splitlines()]
        assert len(epochs) == 1 and r["selection_acc"] == pytest.approx(epochs[0]["val_acc"])
        assert round(20 * r["selection_acc"]) == pytest.approx(20 * r["selection_acc"])
    mbv2 = json.loads((out / "short-1ep" / "mbv2" / "arch.json").read_text())
    assert mbv2["space_params"]["width_mult"] == 1.25 and mbv2["choices"] == ["k3_e6"] * 9  # trained as itself
    table = (out / "table.md").read_text()
    assert "| stand-alone 1 epochs | in band (2) |" in table and "| stand-alone 1 epochs | all (3) |" in table
    assert "training seed 1000" in table
    capsys.readouterr()
    assert bench.main(argv) == 0  # nothing trained again
    assert "3 models, 3 done earlier" in capsys.readouterr().out
    assert len((out / "short-1ep.jsonl").read_text().splitlines()) == 3
    with pytest.raises(HwnasError, match="--lengths none leaves nothing to rank"):
        bench.main(argv + ["--short-epochs", "0"])
