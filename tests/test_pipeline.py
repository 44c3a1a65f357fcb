"""Main job: config files, their validation errors, and the choice of the latency predictor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.latency_data import describe_this_device
from hwnas.pipeline import choose_budget, find_reference_predictor, reference_child
from hwnas.run_config import default_config, load_config, validate_config
from hwnas.predictors import load_predictor
from hwnas.predictors.lut import LookupTable
from hwnas.costs import op_cost
from hwnas.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_default_config_is_the_built_in_default():
    assert load_config(ROOT / "configs" / "default.toml") == default_config()


def test_cifar10_config_is_valid():
    cfg = load_config(ROOT / "configs" / "cifar10.toml")
    assert cfg["data"]["dataset"].endswith("cifar10-train.tar.gz")
    assert cfg["train"]["epochs"] > cfg["search"]["epochs"] > cfg["search"]["warmup_epochs"]


@pytest.mark.parametrize("text, message", [
    ("[trian]\nepochs = 3\n", r"unknown section \[trian\]"),
    ("[train]\nepoch = 3\n", r"unknown field 'train.epoch'"),
    ("[train]\nepochs = 0\n", r"field 'train.epochs' must be a positive integer, got 0"),
    ("[train]\nepochs = 2.5\n", r"field 'train.epochs' must be a positive integer"),
    ("[latency]\nbudget_ms = -1\n", r"field 'latency.budget_ms' must be \"auto\" or a positive number"),
    ("[latency]\nruntime = \"tensorrt\"\n", r"field 'latency.runtime' must be one of"),
    ("[export]\nquant = [\"fp16\"]\n", r"field 'export.quant'"),
    ("[search]\nmode = \"bohb\"\n", r"field 'search.mode' must be one of"),
    ("[search]\nepochs = 2\nwarmup_epochs = 2\n", r"'search.warmup_epochs' \+ 'search.child_warmup_epochs' \(3\) must be below"),
    ("[space]\nname = \"resnet\"\n", r"\[space\] unknown search space 'resnet'"),
    ("[space]\nparams = { width = 2 }\n", r"\[space\] .*unknown field 'width'"),
    ("[train\nepochs = 3\n", r"bad TOML: .*line 1"),
    ("train = 3\n", r"\[train\] must be a table"),
])
def test_config_errors_name_the_file_and_field(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(HwnasError, match=message) as info:
        load_config(path)
    assert str(info.value).startswith(str(path))


def test_cli_run_reports_config_errors_in_one_line(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("[train]\nlr = \"fast\"\n")
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"hwnas: error: {path}: field 'train.lr' must be a positive number, got 'fast'"
    assert main(["run", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "no such config file" in capsys.readouterr().err
    assert main(["run", "--budget-ms", "0"]) == 2
    assert "--budget-ms" in capsys.readouterr().err


def _table(space, device: dict) -> LookupTable:
    """A lookup table covering every operator of ``space`` (values from FLOPs; the choice logic is tested)."""
    entries = {op.key(): 1e-6 * op_cost(op).flops + 0.01 for op in space.unique_ops() if not op.is_identity}
    return LookupTable(device, space.name, "tflite", "fp32", 1, entries)


def test_reference_predictor_is_used_only_for_this_machine(tmp_path):
    space = get_space("proxyless-tiny")
    this = describe_this_device()
    other = dict(this, cpu="Qualcomm Kryo 585", cores=8)
    _table(space, other).save(tmp_path / "phone-tflite-fp32.json")
    path, _, why = find_reference_predictor(space, "tflite", "fp32", 1, tmp_path, this)
    assert path is None and "phone-tflite-fp32.json" in why and "Kryo" in why

    _table(space, this).save(tmp_path / "here-tflite-fp32.json")
    path, predictor, why = find_reference_predictor(space, "tflite", "fp32", 1, tmp_path, this)
    assert path == tmp_path / "here-tflite-fp32.json" and predictor.covers(space.unique_ops())
    assert find_reference_predictor(space, "tflite", "int8", 1, tmp_path, this)[0] is None
    assert find_reference_predictor(get_space("proxyless-tiny", {"width_mult": 0.5}), "tflite", "fp32", 1,
                                    tmp_path, this)[0] is None  # does not cover the narrower operators


def test_auto_budget_scales_the_mobilenetv2_style_reference(tmp_path):
    space = get_space("proxyless-tiny")
    _table(space, describe_this_device()).save(tmp_path / "p.json")
    cfg = validate_config({"latency": {"budget_scale": 1.5}})
    predictor = load_predictor(tmp_path / "p.json")
    budget, fastest, slowest, reference = choose_budget(cfg, space, predictor, "p.json")
    assert fastest < budget < slowest
    ref_arch = reference_child(space)
    assert set(ref_arch.choices) == {"k3_e6"} and ref_arch.space.stage_widths == (1.0,) * space.num_stages
    assert budget == pytest.approx(1.5 * reference, abs=1e-4)
    cfg["latency"]["budget_ms"] = fastest / 2
    with pytest.raises(HwnasError, match="below the fastest architecture"):
        choose_budget(cfg, space, predictor, "p.json")


def fast_settings(predictor: Path) -> list[str]:
    """``--set`` pairs for a main job of a few seconds' training on the built-in digits."""
    return [f"latency.predictor={json.dumps(str(predictor))}", "search.relevel=0", "search.epochs=2",
            "search.warmup_epochs=0", "search.child_warmup_epochs=1", "search.max_steps=1", "search.batch_size=16",
            "data.limit_train=48", "data.limit_val=16", "train.epochs=1", "train.max_steps=1",
            'export.quant=["fp32"]', "export.onnx=false", "export.check_images=4", "export.calib_images=4"]


def test_an_auto_budget_is_the_reference_network_at_the_speed_measured_now(tmp_path, capsys):
    """A table predicting half of what this machine measures (CI once ran a committed table 3.15x slow, and the
    auto budget, taken from predicted ms, fell below the fastest child at that speed): the auto budget is the
    reference network's predicted ms x the session level, the same network at the speed measured now."""
    space = get_space("proxyless-tiny")
    table = load_predictor(ROOT / "predictors" / "amd-epyc-2c-b-tflite-fp32.json")
    assert table.covers(space.unique_ops())
    table.entries = {key: ms / 2 for key, ms in table.entries.items()}
    table.overhead_ms, table.per_op_ms, table.fallback_name = table.overhead_ms / 2, table.per_op_ms / 2, None
    table.save(tmp_path / "half-tflite-fp32.json")
    half = load_predictor(tmp_path / "half-tflite-fp32.json")
    reference = half.predict_ops(reference_child(space).ops())
    args = ["run", "--out", str(tmp_path / "run"), "--no-progress"]
    for pair in fast_settings(tmp_path / "half-tflite-fp32.json"):
        args += ["--set", pair if pair != "search.relevel=0" else "search.relevel=1"]
    assert main(args) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    level = report["latency_level"]
    assert level > 1, f"a table of halved times should run slower than predicted here, level {level}"
    assert report["budget_ms"] == pytest.approx(reference * level, abs=2e-4)
    assert f"({reference:.3f} ms predicted) x session level {level:.3f}" in report["budget_note"]
    assert f"budget: {report['budget_ms']:.3f} ms = {reference:.3f} ms predicted x session level" in \
        capsys.readouterr().out


def test_train_init_best_trains_from_scratch_and_from_the_supernet_and_keeps_the_better(tmp_path, capsys):
    predictor = ROOT / "predictors" / "amd-epyc-2c-b-tflite-fp32.json"
    args = ["run", "--out", str(tmp_path / "run"), "--no-progress", "--set", 'train.init="best"']
    for pair in fast_settings(predictor):
        args += ["--set", pair]
    assert main(args) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    starts = report["train_starts"]
    assert set(starts) == {"kept", "scratch", "supernet"}
    assert report["val_acc"] == starts[starts["kept"]] == max(starts["scratch"], starts["supernet"])
    assert (tmp_path / "run" / "train" / "weights.safetensors").is_file()
    assert (tmp_path / "run" / "train-supernet" / "weights.safetensors").is_file()
    assert "train: validation accuracy scratch" in out and "kept over" in out


def test_the_main_job_reads_its_predictor_file_once_and_names_its_device(tmp_path, monkeypatch, capsys):
    """``hwnas run`` with a given predictor: the file is opened once (checked with the inputs, then passed on as an
    object); the report's header names the device of that table."""
    import builtins
    import io

    predictor = ROOT / "predictors" / "amd-epyc-2c-b-tflite-fp32.json"
    opened = []
    real_open = io.open

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and Path(file).resolve() == predictor:
            opened.append(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", counting_open)
    monkeypatch.setattr(builtins, "open", counting_open)
    args = ["run", "--out", str(tmp_path / "run"), "--no-progress"]
    for pair in fast_settings(predictor):
        args += ["--set", pair]
    assert main(args) == 0
    assert len(opened) == 1
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["device"] == "amd-epyc-2c-b" and report["predictor"] == str(predictor)
    assert "latency on amd-epyc-2c-b (tflite fp32, 1 thread)" in capsys.readouterr().out
