"""Hostile inputs of issue 15: each ends in a one-line error naming the file/field/value, exit code 2, before
any long work (cases 2 and 3 are in test_predictor_files.py, test_predictors.py and test_latency_data.py)."""

import json
import os
import re
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from hwnas.cli import main
from hwnas.data import dataset_classes, image_dataset, load_dataset
from hwnas.errors import HwnasError

ROOT = Path(__file__).resolve().parents[1]

ARCH = {"space": "proxyless-tiny", "choices": ["k3_e3"] * 9}
TINY_SEARCH = ["--space", "proxyless-tiny", "--set", 'stages=[[24,1,2],[40,1,2],[64,1,2]]', "--epochs", "2",
               "--warmup-epochs", "1", "--batch-size", "16", "--max-steps", "2", "--limit-train", "64",
               "--limit-val", "32", "--no-progress"]


def _error(capsys, argv) -> str:
    """The one error line of a refused command (exit code 2, no traceback)."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("hwnas: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _images(root, classes=("cat", "dog"), n=3, size=(32, 32)):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", size, (40 * c, 20 * i, 100)).save(root / name / f"{i}.png")
    return root


def _tar(path, folder, arcname):
    with tarfile.open(path, "w:gz" if path.name.endswith(".gz") else "w") as tar:
        tar.add(folder, arcname=arcname)
    return path


# -- case 1: space parameters of an architecture file, and --set ----------------------------
@pytest.mark.parametrize("params, message", [
    ('{"width_mult": NaN}', r"field 'width_mult' must be a number in \(0, 4\], got nan"),
    ({"width_mult": 1e6}, r"field 'width_mult' must be a number in \(0, 4\], got 1000000.0"),
    ({"resolution": 10 ** 9}, "field 'resolution' must be a positive integer <= 1024, got 1000000000"),
    ({"resolution": 1e9}, "field 'resolution' must be a positive integer <= 1024, got 1000000000.0"),
    ({"stages": [[24, 1000, 2]]}, r"stages\[0\] must be \[channels <= 4096, layers <= 64"),
    ({"kernels": [3, 99]}, r"field 'kernels' must be a non-empty list of integers in \[1, 11\]"),
])
def test_architecture_space_params_out_of_bounds(tmp_path, capsys, params, message):
    text = params if isinstance(params, str) else json.dumps(params)
    path = _write(tmp_path / "a.json", f'{{"space": "proxyless-tiny", "space_params": {text}, "choices": []}}')
    line = _error(capsys, ["arch", "show", str(path)])
    assert str(path) in line and re.search(message, line), line


@pytest.mark.parametrize("override", ["width_mult=NaN", "width_mult=Infinity", "resolution=2048", "num_classes=0"])
def test_set_overrides_follow_the_same_rules(capsys, override):
    field = override.split("=")[0]
    assert f"field '{field}' must be" in _error(capsys, ["space", "show", "--set", override])


def test_genotype_space_params_out_of_bounds(tmp_path, capsys):
    path = _write(tmp_path / "g.json", {"space": "darts-cell", "space_params": {"layers": 10 ** 6},
                                        "normal": [[], [], [], []], "reduce": [[], [], [], []]})
    assert "darts-cell field 'layers' must be a positive integer <= 64" in _error(capsys, ["arch", "show", str(path)])


# -- case 4: budgets ---------------------------------------------------------------------------
def test_sample_based_search_refuses_an_infeasible_budget_up_front(tmp_path, capsys):
    out = tmp_path / "evo"
    line = _error(capsys, ["search", *TINY_SEARCH, "--strategy", "evolution", "--budget-ms", "0.01",
                           "--evaluations", "4", "--out", str(out)])
    assert "budget 0.01 ms is below the cheapest architecture of proxyless-tiny: minimum achievable is" in line
    assert not (out / "evaluations.jsonl").exists()  # nothing was evaluated
    line = _error(capsys, ["search", *TINY_SEARCH, "--strategy", "random", "--budget-mflops", "0.001",
                           "--out", str(out)])
    assert "budget 0.001 MFLOPs is below the cheapest architecture" in line


@pytest.mark.parametrize("argv", [
    ["search", "--budget-ms", "inf"], ["search", "--strategy", "evolution", "--budget-ms", "nan"],
    ["search", "--budget-mflops", "inf"], ["run", "--budget-ms", "inf"],
    ["export", "a.json", "--weights", "w.safetensors", "--budget-ms", "inf"],
])
def test_non_finite_budgets_are_refused(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "a.json", ARCH)
    assert "must be a positive finite number" in _error(capsys, argv)
    assert not (tmp_path / "runs").exists()


# -- case 5: threads -----------------------------------------------------------------------------
ANY = "0 (torch's own choice)"


@pytest.mark.parametrize("argv, low, value", [
    (["search", "--threads", "-1"], ANY, "-1"),
    (["search", "--strategy", "rl", "--threads", "-2"], ANY, "-2"),
    (["train", "a.json", "--threads", "-1"], ANY, "-1"),
    (["tune", "a.json", "--threads", "-1"], ANY, "-1"),
    (["run", "--threads", "-1"], ANY, "-1"),
    (["export", "a.json", "--weights", "w.safetensors", "--threads", "0"], "1", "0"),
    (["measure", "missing.tflite", "--threads", "-1"], "1", "-1"),
    (["fit", "--threads", "0"], "1", "0"),
    # issue 23.5: more threads than the machine can run (SIGSEGV in train, a 300 s hang in profile)
    (["train", "a.json", "--threads", "100000"], ANY, "100000"),
    (["search", "--threads", "100000"], ANY, "100000"),
    (["profile", "--space", "proxyless-tiny", "--threads", "1000000"], "1", "1000000"),
    (["measure", "missing.tflite", "--threads", "1000000"], "1", "1000000"),
    (["run", "--threads", "100000"], ANY, "100000"),
])
def test_bad_thread_counts_are_named(tmp_path, capsys, monkeypatch, argv, low, value):
    from hwnas.threads import max_threads

    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "a.json", ARCH)
    line = _error(capsys, argv)
    assert line == (f"hwnas: error: --threads must be an integer from {low} to {max_threads()} (4 per core of this "
                    f"machine), got {value}")  # not the model file, not a traceback
    assert not (tmp_path / "runs").exists() and not (tmp_path / "export").exists()


def test_one_torch_thread_by_default(tmp_path, monkeypatch):
    import torch

    from hwnas.cli import build_parser

    parser = build_parser()
    for argv in (["search"], ["train", "a.json"], ["tune", "a.json"]):
        assert parser.parse_args(argv).threads == 1, argv
    assert parser.parse_args(["run"]).threads is None  # run.threads of the config, default 1
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "a.json", ARCH)
    torch.set_num_threads(2)
    try:  # train sets the count before loading the data (which fails here)
        assert main(["train", "a.json", "--dataset", str(tmp_path / "none")]) == 2
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(1)


# -- case 6: unwritable --out ---------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    ["search"], ["search", "--strategy", "evolution"], ["train", "a.json"], ["run"], ["tune", "a.json"],
    ["export", "a.json", "--weights", "w.safetensors"], ["fit"],
])
def test_out_under_a_regular_file(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "a.json", ARCH)
    blocker = _write(tmp_path / "file", "x")
    line = _error(capsys, [*command, "--out", str(blocker / "sub")])
    assert f"{blocker / 'sub'}: {blocker} is a file, not a folder" in line


def test_out_in_proc(tmp_path, capsys, monkeypatch):
    if not os.path.isdir("/proc"):
        pytest.skip("no /proc")
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "a.json", ARCH)
    for command in (["train", "a.json"], ["search"], ["run"]):
        assert "/proc/hwnas-test: cannot write in /proc" in _error(capsys, [*command, "--out", "/proc/hwnas-test"])


# -- case 7: datasets ------------------------------------------------------------------------------
@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HWNAS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "datasets"


def test_truncated_archive_names_it_and_leaves_no_partial_extraction(tmp_path, cache):
    archive = _tar(tmp_path / "d.tar.gz", _images(tmp_path / "src", n=40), "d")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(HwnasError, match=rf"^{archive}: cannot extract .*truncated"):
        load_dataset(str(archive), 32)
    assert not [p for p in cache.iterdir() if p.name != "hashes"]


def test_folder_of_non_images_fails_at_once_naming_a_file(tmp_path):
    for name in ("a", "b"):
        _write(tmp_path / "d" / name / "0.jpg", "this is not a picture")
    with pytest.raises(HwnasError, match=rf"{tmp_path / 'd'}/a/0.jpg: not a readable image"):
        load_dataset(str(tmp_path / "d"), 32)


def test_images_of_another_size_are_resized(tmp_path):
    root = _images(tmp_path / "d", n=4, size=(48, 40))
    for augment in (True, False):
        splits = load_dataset(str(root), 32, augment=augment)
        assert tuple(splits.train[0][0].shape) == (3, 32, 32) and tuple(splits.val[0][0].shape) == (3, 32, 32)
    assert tuple(load_dataset(str(root), 24).val[0][0].shape) == (3, 24, 24)


def test_corrupt_cifar_batches_are_named(tmp_path):
    _write(tmp_path / "c" / "cifar-10-batches-py" / "data_batch_1", "garbage")
    with pytest.raises(HwnasError, match=rf"^{tmp_path / 'c'}: cifar-10-batches-py is incomplete or corrupted"):
        load_dataset(str(tmp_path / "c"), 32)


def test_replaced_archive_of_the_same_size_is_extracted_again(tmp_path, cache):
    archive = tmp_path / "d.tar"
    _tar(archive, _images(tmp_path / "one", classes=("cat", "dog")), "d")
    assert image_dataset(str(archive), 32).train.dataset.classes == ["cat", "dog"]
    stat = archive.stat()
    replacement = _tar(tmp_path / "new.tar", _images(tmp_path / "two", classes=("cow", "pig")), "d")
    assert replacement.stat().st_size == stat.st_size
    os.replace(replacement, archive)
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even the same mtime: keyed by content
    assert image_dataset(str(archive), 32).train.dataset.classes == ["cow", "pig"]


def test_archive_with_one_top_folder_holding_the_classes(tmp_path, cache):
    archive = _tar(tmp_path / "cifar.tar.gz", _images(tmp_path / "src", classes=("a", "b", "c")), "cifar10")
    assert dataset_classes(str(archive)) == 3
    splits = load_dataset(str(archive), 32)
    assert splits.num_classes == 3 and splits.name == "cifar.tar.gz"  # the user's file, not the cache


def test_archive_errors_name_the_archive_not_the_cache(tmp_path, cache):
    src = _images(tmp_path / "src")
    _write(src / "dog" / "9.png", "not a png")
    archive = _tar(tmp_path / "d.tar.gz", src, "d")
    with pytest.raises(HwnasError) as info:  # found by the images decoded up front
        load_dataset(str(archive), 32)
    assert str(info.value) == f"{archive}: d/dog/9.png: not a readable image (unknown image format)"
    _tar(archive, _images(tmp_path / "one", classes=("only",)), "d")
    with pytest.raises(HwnasError, match=rf"^{archive}: .*found 1 class folder"):
        load_dataset(str(archive), 32)


# -- case 8: run --config paths, before stage 1 ------------------------------------------------------
@pytest.mark.parametrize("section, message", [
    ('[data]\ndataset = "missing/cifar.tar.gz"\n', "field 'data.dataset': dataset missing/cifar.tar.gz does not "
                                                   "exist"),
    ('[data]\ndataset = "three"\n', "field 'data.dataset': dataset three has 3 classes, the space has 10"),
    ('[latency]\npredictor = "missing.json"\n', "field 'latency.predictor': missing.json: no such predictor file"),
    ('[latency]\nreference_predictors = "a.json"\n', "field 'latency.reference_predictors': a.json is a file"),
    ('[latency]\nanchors = 1\n', "field 'latency.anchors' must be an integer from 2 to 64, got 1"),
    ('[latency]\nadapt_models = 3\n', "field 'latency.adapt_models' must be 0 (never adapt) or an integer from 5"),
    ('[latency]\nrecognise_tolerance = 0\n', "field 'latency.recognise_tolerance' must be a number between 0 and 1"),
    ('[search]\nderive = "best"\n', "field 'search.derive' must be one of 'argmax', 'evolution'"),
])
def test_run_config_paths_are_checked_before_profiling(tmp_path, capsys, monkeypatch, section, message):
    monkeypatch.chdir(tmp_path)
    _images(tmp_path / "three", classes=("a", "b", "c"))
    _write(tmp_path / "a.json", ARCH)
    config = _write(tmp_path / "c.toml", '[run]\nout = "r"\n' + section)
    line = _error(capsys, ["run", "--config", str(config)])
    assert line.startswith(f"hwnas: error: {config}: ") and message in line
    assert not (tmp_path / "r").exists()  # nothing profiled, nothing written


# -- case 9: search --resume with other settings (more in test_search.py) ------------------------------
def test_search_resume_with_another_learning_rate_is_refused(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["search", *TINY_SEARCH, "--stop-after", "1", "--out", str(out)]) == 0
    config = (out / "config.json").read_text()
    for option in (["--lr", "0.2"], ["--lambda-lat", "0.3"], ["--lr-alpha", "0.1"], ["--eta-mac", "0.1"],
                   ["--no-fit-budget"]):
        line = _error(capsys, ["search", *TINY_SEARCH, "--out", str(out), "--resume", *option])
        assert "checkpoint was written with" in line and "resume with the same settings" in line
    assert (out / "config.json").read_text() == config


def _train(tmp_path, *extra):
    return main(["train", str(tmp_path / "a.json"), "--epochs", "1", "--max-steps", "2", "--batch-size", "16",
                 "--limit-train", "64", "--limit-val", "32", "--out", str(tmp_path / "t"), *extra])


def test_train_resume_with_another_setting_is_refused(tmp_path, capsys):
    _write(tmp_path / "a.json", ARCH)
    assert _train(tmp_path) == 0
    for option in (["--lr", "0.2"], ["--weight-decay", "0.01"], ["--label-smoothing", "0"], ["--seed", "3"]):
        assert main(["train", str(tmp_path / "a.json"), "--epochs", "1", "--max-steps", "2", "--batch-size", "16",
                     "--limit-train", "64", "--limit-val", "32", "--out", str(tmp_path / "t"), "--resume",
                     *option]) == 2
        assert "checkpoint was written with" in capsys.readouterr().err


# -- case 10: a torn last line of train's and search's metrics.jsonl ------------------------------------
def test_torn_metrics_line_does_not_stop_train_resume(tmp_path, capsys):
    _write(tmp_path / "a.json", ARCH)
    assert _train(tmp_path) == 0
    metrics = tmp_path / "t" / "metrics.jsonl"
    good = metrics.read_text()
    with open(metrics, "a") as f:
        f.write('{"epoch": 2, "train_lo')  # killed in the middle of a write
    with pytest.warns(UserWarning, match=r"metrics.jsonl, line 2: ignoring an incomplete last line"):
        assert _train(tmp_path, "--resume") == 0
    assert metrics.read_text() == good


def test_torn_metrics_line_does_not_stop_search_resume(tmp_path):
    out = tmp_path / "s"
    assert main(["search", *TINY_SEARCH, "--stop-after", "1", "--out", str(out)]) == 0
    for name in ("metrics.jsonl", "probs.jsonl"):
        with open(out / name, "a") as f:
            f.write('{"epoch": 2, "pro')
    with pytest.warns(UserWarning, match="ignoring an incomplete last line"):
        assert main(["search", *TINY_SEARCH, "--out", str(out), "--resume"]) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_a_bad_line_that_is_not_the_last_is_named(tmp_path, capsys):
    _write(tmp_path / "a.json", ARCH)
    assert _train(tmp_path) == 0
    metrics = tmp_path / "t" / "metrics.jsonl"
    metrics.write_text("garbage\n" + metrics.read_text())
    assert _train(tmp_path, "--resume") == 2
    assert f"{metrics}, line 1: not a metrics row" in capsys.readouterr().err


# -- case 11: arch show takes a genotype as every other command does ---------------------------------------
def test_arch_show_takes_a_genotype(tmp_path, capsys):
    from hwnas.cells.genotype import Genotype

    node = [["sep_conv_3x3", 0], ["skip", 1]]
    path = Genotype([node] * 4, [node] * 4, {"layers": 3, "channels": 8, "resolution": 8}).save(tmp_path / "g.json")
    assert main(["arch", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: space darts-cell" in out and "cell0:0->2" in out and "cell1-reduce:pre0" in out
    assert out.splitlines()[-2].startswith("total")


# == issue 23: the hostile battery's remaining cases (1, 2, 3, 8, 11, 13 are in test_phones.py,
# test_predictor_files.py and test_predict_model.py) =============================================================
def _tables(tmp_path):
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from _predictor_data import write_tables

    return write_tables(tmp_path / "ld")


# -- 23.4: fit on a whole model at 0 ms, an operator at 1e300 ms ---------------------------------------------
@pytest.mark.parametrize("table, old, new, field", [
    ("dev-models.csv", None, "0", "median_ms"),
    ("dev.csv", None, "1e300", "median_ms"),
])
def test_fit_refuses_impossible_latencies_naming_the_row(tmp_path, capsys, table, old, new, field):
    data = _tables(tmp_path)
    path = data / table
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[1].split(",")
    cells[header.index(field)] = new
    path.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    line = _error(capsys, ["fit", "--device", "dev", "--data", str(data), "--out", str(tmp_path / "p"),
                           "--methods", "flops-linear", "--no-progress"])
    assert f"{path}, line 2" in line and f"field 'median_ms' must be a number of ms in (0, 60000], got '{new}'" in line
    assert not (tmp_path / "p").exists()


# -- 23.6, 23.9, 23.14: search settings, refused before any work ------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--lr-alpha", "inf"], "--lr-alpha must be a finite number, got inf"),
    (["--lambda-lat", "nan"], "--lambda-lat must be a finite number, got nan"),
    (["--lambda-lat", "inf"], "--lambda-lat must be a finite number, got inf"),
    (["--eta-flops", "nan"], "--eta-flops must be a finite number, got nan"),
    (["--supernet-type", "separate", "--lambda-lat", "nan"], "--lambda-lat must be a finite number, got nan"),
    (["--strategy", "rl", "--controller-lr", "nan"], "--controller-lr must be a finite number, got nan"),
    (["--strategy", "evolution", "--penalty-weight", "nan"], "--penalty-weight must be a finite number, got nan"),
    (["--stop-after", "0"], "--stop-after must be a positive number of epochs, got 0"),
    (["--strategy", "evolution", "--evaluations", "0"], "--evaluations must be at least 1, got 0"),  # no config.json
    (["--stop-after", "-1"], "--stop-after must be a positive number of epochs, got -1"),
    (["--strategy", "evolution", "--latency-level", "1.1"], "--latency-level is for the gradient search of a block "
                                                            "space; --strategy evolution does not use it"),
    (["--strategy", "random", "--relevel", "3"], "--relevel is for the gradient search of a block space; "
                                                 "--strategy random does not use it"),
    (["--relevel", "2", "--latency-level", "1.1"], "give either --relevel 2 (measure the level now) or "
                                                   "--latency-level 1.1 (a level measured earlier), not both"),
    (["--relevel", "100000000"], "relevel must be an integer from 0 to 1000 (children to time), got 100000000"),
])
def test_search_settings_are_refused_before_any_work(tmp_path, capsys, argv, message):
    out = tmp_path / "s"
    line = _error(capsys, ["search", *TINY_SEARCH, "--out", str(out), *argv])
    assert line == f"hwnas: error: {message}"
    assert not out.exists()  # nothing written: no config.json, no checkpoint


def test_search_on_cuda_without_a_gpu_is_refused(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for strategy in ("gradient", "evolution"):
        line = _error(capsys, ["search", *TINY_SEARCH, "--strategy", strategy, "--device", "cuda",
                               "--out", str(tmp_path / "s")])
        assert line == "hwnas: error: --device cuda: torch finds no CUDA GPU on this machine; use auto or cpu"
    assert not (tmp_path / "s").exists()


def test_arch_sample_count_is_bounded(tmp_path, capsys):
    line = _error(capsys, ["arch", "sample", "--space", "proxyless-tiny", "--n", "100000000", "--out",
                           str(tmp_path / "a")])
    assert line == "hwnas: error: --n must be from 1 to 100000 (one file each), got 100000000"
    assert not (tmp_path / "a").exists()


def test_run_config_with_an_infinite_weight_decay_is_refused_up_front(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _write(tmp_path / "c.toml", '[run]\nout = "r"\n[train]\nweight_decay = inf\n')
    line = _error(capsys, ["run", "--config", str(config)])
    assert line == f"hwnas: error: {config}: field 'train.weight_decay' must be a finite number >= 0, got inf"
    config = _write(tmp_path / "c.toml", '[run]\nout = "r"\nthreads = 100000\n')
    assert "field 'run.threads' must be an integer from 0 to" in _error(capsys, ["run", "--config", str(config)])
    config = _write(tmp_path / "c.toml", '[run]\nout = "r"\n[search]\nrelevel = 100000000\n')
    assert "field 'search.relevel' must be an integer from 0 to 1000" in _error(capsys, ["run", "--config",
                                                                                       str(config)])
    assert not (tmp_path / "r").exists()


# -- 23.7: output folders that cannot be written, a run folder's config.json that is not JSON ------------------
@pytest.mark.parametrize("option, message", [
    (["--cooldown", "nan"], "--cooldown must be a finite number of seconds >= 0, got nan"),
    (["--max-temp", "inf"], "--max-temp must be a finite number of degrees, got inf"),
])
def test_profile_timing_options_are_finite(tmp_path, capsys, monkeypatch, option, message):
    monkeypatch.chdir(tmp_path)
    assert _error(capsys, ["profile", "--space", "proxyless-tiny", "--limit", "1", *option]) == \
        f"hwnas: error: {message}"
    assert list(tmp_path.iterdir()) == []


def test_models_dir_that_cannot_be_a_folder_is_refused_before_timing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocker = _write(tmp_path / "file", "x")
    line = _error(capsys, ["profile", "--space", "proxyless-tiny", "--models", "1", "--rounds", "1",
                           "--models-dir", str(blocker / "md"), "--out", str(tmp_path / "x.csv")])
    assert line == f"hwnas: error: --models-dir {blocker / 'md'}: {blocker} is a file, not a folder"
    if os.path.isdir("/proc"):
        line = _error(capsys, ["measure", "--archs", "1", "--space", "proxyless-tiny", "--models-dir", "/proc/xyz",
                               "--out", str(tmp_path / "m.csv")])
        assert "--models-dir /proc/xyz: cannot write in /proc" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no empty x.csv / x.device.json


def test_run_folder_with_a_config_that_is_not_json(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "o" / "config.json", "{not json")
    line = _error(capsys, ["run", "--out", "o"])
    assert line == "hwnas: error: o/config.json: bad JSON at line 1, column 2: Expecting property name enclosed in " \
                   "double quotes"


# -- 23.10: training from NaN weights, a loss that turns NaN ----------------------------------------------------
def test_train_from_nan_weights_is_refused(tmp_path, capsys):
    import torch

    from hwnas.arch import Architecture
    from hwnas.builder import build_model
    from hwnas.weights import save_weights

    _write(tmp_path / "a.json", ARCH)
    state = build_model(Architecture.load(tmp_path / "a.json")).state_dict()
    state["0.0.weight"] = torch.full_like(state["0.0.weight"], float("nan"))
    save_weights(state, tmp_path / "nan.safetensors")
    line = _error(capsys, ["train", str(tmp_path / "a.json"), "--init", str(tmp_path / "nan.safetensors"),
                           "--epochs", "1", "--max-steps", "2", "--out", str(tmp_path / "t")])
    assert f"{tmp_path / 'nan.safetensors'}: tensor '0.0.weight' holds NaN or infinite values" in line
    assert not (tmp_path / "t" / "weights.safetensors").exists()


def test_training_stops_on_a_non_finite_loss(tmp_path):
    import torch
    from torch.utils.data import TensorDataset

    from hwnas.arch import Architecture
    from hwnas.data import Splits
    from hwnas.train import train_model

    x = torch.full((8, 3, 32, 32), float("nan"))
    data = TensorDataset(x, torch.zeros(8, dtype=torch.long))
    arch = Architecture.from_dict(ARCH)
    with pytest.raises(HwnasError, match="non-finite loss nan at epoch 1, step 1; stopped before the weights"):
        train_model(arch, Splits(data, data, 10, "nan"), epochs=1, batch_size=4, out_dir=tmp_path / "t",
                    progress=False)
    assert not (tmp_path / "t" / "weights.safetensors").exists()


# -- 23.12: resume with changed inputs, a cut or repeated metrics log ----------------------------------------------
def test_search_resume_refuses_a_dataset_whose_images_changed(tmp_path, capsys):
    data = _images(tmp_path / "d", classes=[str(c) for c in range(10)], n=4)
    out = tmp_path / "s"
    argv = ["search", *TINY_SEARCH, "--dataset", str(data), "--out", str(out)]
    assert main([*argv, "--stop-after", "1"]) == 0
    Image.new("RGB", (32, 32), (1, 2, 3)).save(data / "3" / "0.png")  # same path, other content
    os.utime(data / "3" / "0.png", ns=(1, 1))
    line = _error(capsys, [*argv, "--resume"])
    assert line.startswith(f"hwnas: error: {out / 'inputs.json'}: the run started with another dataset content")
    assert [json.loads(r)["epoch"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [1]


def test_search_resume_refuses_a_predictor_whose_content_changed(tmp_path, capsys):
    """The run records the loaded predictor's content (its file and its fallback regressor's file, read once
    when loaded); a resume with other content under the same path is refused."""
    import shutil

    from hwnas.predictors import content_fingerprint, load_predictor
    from hwnas.runlog import check_inputs

    stem = "amd-epyc-2c-b-tflite-fp32"
    for suffix in (".json", "-regressor.json", "-regressor.skops"):
        shutil.copy(ROOT / "predictors" / f"{stem}{suffix}", tmp_path / f"{stem}{suffix}")
    pred = tmp_path / f"{stem}.json"

    def fingerprint():
        return content_fingerprint(load_predictor(pred))

    check_inputs(tmp_path / "run", fingerprint(), "digits", resume=False)
    check_inputs(tmp_path / "run", fingerprint(), "digits", resume=True)  # unchanged: fine
    for path in (tmp_path / f"{stem}-regressor.json", pred):  # the table's fallback regressor, then the table
        path.write_text(path.read_text() + "\n")
        with pytest.raises(HwnasError, match=r"inputs.json: the run started with another predictor content"):
            check_inputs(tmp_path / "run", fingerprint(), "digits", resume=True)


def test_resumed_metrics_rows_one_per_epoch_and_lost_ones_named(tmp_path, capsys):
    from hwnas.runlog import resumed_rows

    log = tmp_path / "metrics.jsonl"
    rows = [{"epoch": e, "loss": e / 10} for e in (1, 2, 3)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows + [rows[-1]]))  # a duplicated last line
    assert resumed_rows(log, 3) == rows
    assert "dropped 1 repeated row(s) of epoch(s) 3" in capsys.readouterr().err
    log.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]) + '{"epoch": 3, "lo')  # a torn last line
    with pytest.warns(UserWarning, match="incomplete last line"):
        assert resumed_rows(log, 3) == rows[:2]
    err = capsys.readouterr().err
    assert "has no row for epoch(s) 3 that the checkpoint has finished: those rows are lost" in err
    log.unlink()
    assert resumed_rows(log, 3) == []
    assert f"{log} is missing for epoch(s) 1-3 that the checkpoint has finished" in capsys.readouterr().err


def test_train_resume_after_the_metrics_log_was_deleted_says_so(tmp_path, capsys):
    _write(tmp_path / "a.json", ARCH)
    assert _train(tmp_path) == 0
    (tmp_path / "t" / "metrics.jsonl").unlink()
    capsys.readouterr()
    assert _train(tmp_path, "--resume") == 0
    assert "metrics.jsonl is missing for epoch(s) 1 that the checkpoint has finished" in capsys.readouterr().err


# -- 23.14: a corrupt image past the ones decoded up front ---------------------------------------------------------
def test_a_corrupt_image_anywhere_in_the_dataset_fails_before_training(tmp_path, capsys):
    data = _images(tmp_path / "d", n=70)
    _write(data / "dog" / "69.png", "not a png")  # not among the 64 decoded up front
    _write(tmp_path / "a.json", {**ARCH, "space_params": {"num_classes": 2}})
    line = _error(capsys, ["train", str(tmp_path / "a.json"), "--dataset", str(data), "--epochs", "1",
                           "--out", str(tmp_path / "t")])
    assert line.startswith(f"hwnas: error: {data / 'dog' / '69.png'}: not a readable image")
    assert not (tmp_path / "t").exists()


# -- small: --json errors, a text file named .tar.gz ---------------------------------------------------------------
def test_json_errors_are_a_json_object_on_stdout(tmp_path, capsys):
    assert main(["search", "--json", "--budget-ms", "inf"]) == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"error": "--budget-ms must be a positive finite number, got inf"}
    assert main(["measure", "--json", str(tmp_path / "none.tflite")]) == 2
    assert json.loads(capsys.readouterr().out) == {"error": f"{tmp_path / 'none.tflite'}: no such model file"}


def test_a_text_file_named_tar_gz_is_a_one_line_error(tmp_path, cache, capsys):
    fake = _write(tmp_path / "d.tar.gz", "hello\n")
    _write(tmp_path / "a.json", ARCH)
    line = _error(capsys, ["train", str(tmp_path / "a.json"), "--dataset", str(fake), "--out", str(tmp_path / "t")])
    assert line == f"hwnas: error: {fake}: cannot extract (file could not be opened successfully); the archive is " \
                   "truncated or not a tar archive"


def test_search_config_check_refuses_non_finite_settings():
    from hwnas.search import SearchConfig

    for field, value in (("lr_alpha", float("inf")), ("lambda_lat", float("nan")), ("weight_decay", float("inf"))):
        with pytest.raises(HwnasError, match=rf"^{field} must be a finite number, got {value}"):
            SearchConfig(**{field: value}).check()
    with pytest.raises(HwnasError, match="stop after must be a positive number of epochs, got 0"):
        SearchConfig(stop_after=0).check()
