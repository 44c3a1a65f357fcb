"""benchmarks/cifar10_budgets.py end to end at tiny sizes: disjoint image sets, searched child in its band,
every output written, a re-run skips finished jobs; bad budgets refused before any work."""

import importlib.util
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hwnas.errors import HwnasError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "cifar10_budgets.py"
PREDICTOR = ROOT / "predictors" / "amd-epyc-2c-tflite-fp32.json"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def load_script():
    spec = importlib.util.spec_from_file_location("cifar10_budgets", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_cifar(folder: Path, per_class: int = 12) -> Path:
    """An ImageFolder .tar.gz: 10 classes of 32x32 JPEGs, noise around one colour per class."""
    rng = np.random.default_rng(0)
    src = folder / "src" / "tiny-cifar"
    for c, name in enumerate(CLASSES):
        (src / name).mkdir(parents=True)
        colour = rng.integers(30, 226, 3)
        for i in range(per_class):
            pixels = np.clip(colour + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(src / name / f"{i:03d}.jpg")
    archive = folder / "tiny-cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="tiny-cifar")
    return archive


@pytest.mark.slow
def test_benchmark_end_to_end_and_rerun_skips(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HWNAS_CACHE", str(tmp_path / "cache"))  # the subprocesses inherit it
    archive = tiny_cifar(tmp_path)
    out, models = tmp_path / "run", tmp_path / "models"
    argv = ["--dataset", str(archive), "--predictor", str(PREDICTOR), "--budgets", "8%,12%",
            "--accuracy-budgets", "12%", "--train", "80", "--selection", "20", "--test", "20", "--epochs", "1",
            "--batch-size", "16", "--search-epochs", "2", "--search-warmup-epochs", "1", "--search-steps", "2",
            "--random", "2", "--mbv2-ladder", "2", "--rounds", "1", "--jobs", "2", "--relevel", "1", "--out", str(out),
            "--train-seeds", "2", "--inherited", "--proxy", "flops", "--proxy-children", "30",
            "--long-epochs", "2", "--searches-last", "--quiet-wait", "0",
            "--variant", "band-evo:weight_sampling=band,derive=evolution,derive_children=12",
            "--models-dir", str(models)]
    tool = load_script()
    assert tool.main(argv) == 0
    first = capsys.readouterr().out

    splits = json.loads((out / "splits.json").read_text())
    sets = {k: set(v) for k, v in splits.items()}
    assert {k: len(v) for k, v in sets.items()} == {"train": 80, "selection": 20, "test": 20}
    assert not (sets["train"] & sets["selection"] or sets["train"] & sets["test"] or sets["selection"] & sets["test"])

    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    searched = [r for r in rows if r["kind"] == "searched"]
    assert sorted((r["seed"], r["budget_ms"]) for r in searched) == sorted(
        [(0, b) for b in {r["budget_ms"] for r in searched}] + [(1, max(r["budget_ms"] for r in searched))])
    for r in searched:  # the derived child's predicted latency lies in the search's band [0.93, 0.97] x budget
        low, high = r["band_ms"]
        assert low == pytest.approx(0.93 * r["budget_ms"], abs=1e-4)
        # the search aimed at the session level's milliseconds: predicted x level
        assert r["level"] == json.loads((out / "levels.json").read_text())[tool.ms_tag(r["budget_ms"])]["level"]
        assert low - 1e-4 <= r["predicted_ms"] * r["level"] <= high + 1e-4
        assert r["measured_ms"] > 0
    accuracy = [r for r in rows if "test_acc" in r]
    # 2 searched + their 2 inherited-weights twins, 2 random + the best one's second training seed,
    # 2 MobileNetV2 widths x 2 training seeds, the width at the budget trained 2 epochs x 2 training seeds
    # and the variant's 2 children (one per search seed)
    assert sorted(r["kind"] for r in accuracy) == (["inherited"] * 2 + ["mbv2"] * 4 + ["mbv2-long"] * 2
                                                   + ["proxy"] * 2 + ["random"] * 3 + ["searched"] * 2
                                                   + ["variant"] * 2)
    variant = [r for r in accuracy if r["kind"] == "variant"]
    for r in variant:  # its own searches, run with the variant's settings, children in the same band
        assert r["variant"] == "band-evo" and r["search"] == f"search-band-evo-{tool.ms_tag(r['budget_ms'])}-seed{r['seed']}"
        config = json.loads((out / "jobs" / r["search"] / "search" / "config.json").read_text())
        assert config["weight_sampling"] == "band" and config["derive"] == "evolution"
        low, high = r["band_ms"]
        assert low - 1e-4 <= r["predicted_ms"] * r["level"] <= high + 1e-4
    for r in accuracy:
        if r["kind"] == "proxy":  # no supernet: the proxy's best child inside the search's band
            low, high = r["band_ms"]
            assert low - 1e-4 <= r["predicted_ms"] * r["level"] <= high + 1e-4
            assert r["proxy_score"] == pytest.approx(r["mflops"], rel=0.01) and r["proxy_children"] == 30
    assert sum(r.get("best_random", False) for r in accuracy) == 1
    best = next(r for r in accuracy if r.get("best_random"))
    assert [r["train_seed"] for r in accuracy if r["kind"] == "random" and r["index"] == best["index"]] == [0, 1]
    inherited = {r["seed"]: r for r in accuracy if r["kind"] == "inherited"}
    # replicate s of a derivation (search or proxy) is trained with training seed s
    assert all(r["train_seed"] == r["seed"] for r in accuracy if r["kind"] in ("searched", "inherited", "proxy"))
    for r in accuracy:
        if r["kind"] == "searched":  # same child, other starting weights: a separate model
            assert inherited[r["seed"]]["choices"] == r["choices"] and inherited[r["seed"]]["model"] != r["model"]
        correct = np.load(Path(r["file"]).parent / "test_correct.npy")
        assert correct.shape == (20,) and correct.mean() == pytest.approx(r["test_acc"])
    pairs = json.loads((out / "comparisons.json").read_text())
    assert {c["b"].split(" (")[0] for c in pairs} >= {"best of 2 random", "average of 2 random"}
    assert any(c["a"].startswith("flops proxy") and c["b"].startswith("searched") for c in pairs)
    assert any(c["a"].startswith("searched, band-evo") and c["b"].startswith("MobileNetV2") for c in pairs)
    assert any(c["a"].startswith("searched, band-evo") and c["b"].startswith("searched, mean") for c in pairs)
    # the rule "run every search seed, keep the child best on the selection images", against the baselines
    for kind, prefix in (("searched", "searched, best of 2 seeds on selection"),
                         ("variant", "searched, band-evo, best of 2 seeds on selection")):
        runs = [r for r in accuracy if r["kind"] == kind and r["budget_ms"] == max(r["budget_ms"] for r in searched)]
        picked = max(runs, key=lambda r: (r["selection_acc"], -r["seed"]))
        rows_of_rule = [c for c in pairs if c["a"].startswith(prefix)]
        assert any(c["b"].startswith("MobileNetV2 width") for c in rows_of_rule)
        assert any(c["b"].startswith("best of 2 random") for c in rows_of_rule)
        assert rows_of_rule and all(c["a_models"] == [picked["model"]] for c in rows_of_rule)
    for c in pairs:
        assert c["images"] == 20 and 0 < c["p_bootstrap"] <= 1 and c["low"] <= c["diff"] <= c["high"]
        a = np.mean([np.load(out / "models" / m / "test_correct.npy").mean() for m in c["a_models"]])
        assert c["a_acc"] == pytest.approx(a)
    for r in accuracy:
        assert r["test_se"] == pytest.approx((r["test_acc"] * (1 - r["test_acc"]) / 20) ** 0.5)
        assert r["test_acc"] == pytest.approx(r["test_acc_torch"], abs=0.051)  # LiteRT vs PyTorch: <= 1 image
    mbv2 = sorted((r for r in accuracy if r["kind"] == "mbv2" and not r["train_seed"]), key=lambda r: r["width_mult"])
    assert sorted((r["width_mult"], r["train_seed"]) for r in accuracy if r["kind"] == "mbv2") == sorted(
        (r["width_mult"], t) for r in mbv2 for t in (0, 1))
    assert [r["over_budget"] for r in mbv2] == [False, True]
    assert mbv2[0]["ladder_ms"] <= mbv2[0]["budget_ms"] < mbv2[1]["ladder_ms"]
    assert mbv2[1]["width_mult"] - mbv2[0]["width_mult"] == pytest.approx(0.125)  # adjacent ladder widths
    long = [r for r in accuracy if r["kind"] == "mbv2-long"]  # the inherited children's control
    assert sorted(r["train_seed"] for r in long) == [0, 1] and {r["width_mult"] for r in long} == {mbv2[0]["width_mult"]}
    for r in long:
        assert r["epochs"] == 2 and r["model"] != mbv2[0]["model"]
        history = (out / "jobs" / r["model"] / "train" / "metrics.jsonl").read_text().splitlines()
        assert len(history) == 2  # 2 epochs where every other model trained 1
    assert any(c["a"].startswith("supernet weights") and "2 epochs" in c["b"] for c in pairs)

    table = (out / "table.md").read_text()
    assert "Budget hit" in table and "best on selection" in table and "measured / budget" in table
    assert "Paired comparisons at" in table and "percentile among the 2 random" in table
    assert "Training-seed spread" in table and "Load average (1 min) when timing started: session level" in table
    assert "load_average" in json.loads((out / "timing.json").read_text())
    assert (out / "accuracy_vs_latency.png").stat().st_size > 0
    assert "| band-evo seed 0:" in table and "band-evo seed 1 " in table  # budget hit, percentile
    # the models needed to re-score the claims: 2 searched, 2 variant, the 2 MobileNetV2 widths (seed 0) and
    # every random child of the (first) accuracy budget; no proxy, inherited, longer-trained or extra-seed model
    published = sorted(p.name.split("-")[0] for p in models.glob("*.tflite"))
    assert published == ["mbv2"] * 2 + ["random"] * 2 + ["searched"] * 2 + ["variant"] * 2
    assert (models / "variant-band-evo-" f"{tool.ms_tag(variant[0]['budget_ms'])}-seed0.tflite").exists()
    readme = (models / "README.md").read_text()
    assert "CIFAR_MEAN" in readme and '"airplane", "automobile"' in readme
    assert len((models / "test_images.txt").read_text().split()) == 20
    for phase in ("train (no search needed): 10 jobs", "search: 5 jobs", "train: 16 jobs, 10 done earlier, 6 to run",
                  "train (seeds of the best random child): 1 jobs",
                  "== phase session level", "== phase timing"):
        assert phase in first

    (models / "old-run-model.tflite").write_bytes(b"an earlier run's file")  # replaced by the next publication
    results = sorted((out / "jobs").glob("*/result.json"))
    stamps = [p.stat().st_mtime_ns for p in results]
    assert tool.main(argv) == 0
    again = capsys.readouterr().out
    assert "search: 5 jobs, 5 done earlier, 0 to run" in again
    assert "train: 16 jobs, 16 done earlier, 0 to run" in again
    assert "timing: done earlier" in again
    assert not (models / "old-run-model.tflite").exists() and len(list(models.glob("*.tflite"))) == 8
    assert [p.stat().st_mtime_ns for p in results] == stamps


def test_bad_budgets_refused_before_any_work(tmp_path):
    tool = load_script()
    base = ["--dataset", str(tmp_path / "missing.tar.gz"), "--predictor", str(PREDICTOR), "--out", str(tmp_path)]
    with pytest.raises(HwnasError, match="below the fastest child"):
        tool.main(base + ["--budgets", "0.001"])
    with pytest.raises(HwnasError, match="neither a number of ms nor a percentage"):
        tool.main(base + ["--budgets", "fast"])
    with pytest.raises(HwnasError, match="--quiet-load must be a positive number"):
        tool.main(base + ["--budgets", "0.5", "--quiet-load", "-1"])
    for variant, why in (("v:lr_w=fast", "lr_w='fast' is not a float"), ("v:budget_ms=1", "set by the benchmark"),
                         ("v:weight_sampling=fair", "weight sampling must be one of"),
                         ("v:colour=red", "not a search setting"), ("v w:derive=flops", "a NAME of letters")):
        with pytest.raises(HwnasError, match=why):
            tool.main(base + ["--budgets", "0.5", "--variant", variant])
    with pytest.raises(HwnasError, match="--variant-budgets must be among --accuracy-budgets"):
        tool.main(base + ["--budgets", "0.5,0.7", "--variant", "v:derive=flops", "--variant-budgets", "0.5"])
    with pytest.raises(HwnasError, match="must be one or two of --budgets"):
        tool.main(base + ["--budgets", "0.5,0.7", "--accuracy-budgets", "0.6"])
    assert not list(tmp_path.iterdir())  # nothing written


def test_timing_waits_for_a_quiet_machine(monkeypatch, capsys):
    tool = load_script()
    loads = iter([6.0, 4.0, 1.2, 9.0])
    monkeypatch.setattr(tool.os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    naps = []
    monkeypatch.setattr(tool.time, "sleep", naps.append)
    args = tool.parse_args(["--dataset", "x", "--predictor", "y", "--budgets", "0.5", "--quiet-load", "1.5"])
    assert tool.wait_until_quiet(args, "the ladder") == 1.2  # waited through 6.0 and 4.0
    assert len(naps) == 2 and "waiting up to 30 min" in capsys.readouterr().out
    args.quiet_wait = 0  # no waiting: times at once, with a warning
    monkeypatch.setattr(tool.os, "getloadavg", lambda: (3.0, 0.0, 0.0))
    assert tool.wait_until_quiet(args, "the ladder") == 3.0
    assert "warning: timing the ladder at load average 3.0" in capsys.readouterr().out
