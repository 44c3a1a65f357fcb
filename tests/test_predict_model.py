"""Predicting model files: hwnas operators recognised in exported TFLite / ONNX graphs, priced like the
architecture file; ``hwnas predictors list``; the warning for a predictor of another device.

Models are exported with random weights (latency does not depend on them); TFLite conversions share the
session's conversion worker (conftest.py).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from hwnas.arch import Architecture, sample_architecture
from hwnas.blocks import conv_bn
from hwnas.cli import main
from hwnas.export import export_onnx
from hwnas.latency_data import describe_this_device
from hwnas.modelgraph import read_model
from hwnas.modelgraph.recognise import recognise
from hwnas.ops import OpSpec
from hwnas.predictors import other_device
from hwnas.predictors.lut import LookupTable
from hwnas.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
PREDICTORS = ROOT / "predictors"
TABLE = {"tflite": PREDICTORS / "amd-epyc-2c-tflite-fp32.json", "onnx": PREDICTORS / "amd-epyc-2c-onnxruntime-fp32.json"}
FBNET_SMALL = {"resolution": 16, "width_mult": 0.5, "head_channels": 64,
               "stages": [[16, 1, 1], [24, 2, 2], [32, 2, 2], [64, 1, 1]]}


def _predict_json(capsys, model: Path, predictor: Path, *extra: str) -> dict:
    assert main(["predict", "--json", "--predictor", str(predictor), str(model), *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _export(arch: Architecture, folder: Path, name: str, converter, tflite: bool = True) -> dict[str, Path]:
    arch.save(folder / f"{name}.json")
    files = {"json": folder / f"{name}.json", "onnx": export_onnx(arch.ops(), path=folder / f"{name}.onnx")}
    if tflite:
        files["tflite"] = converter.convert(arch.ops(), folder / f"{name}.tflite")
    return files


@pytest.fixture(scope="module")
def exported(converter, tmp_path_factory):
    """Three random proxyless-tiny architectures, each as JSON, ONNX and TFLite (fp32)."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("models")
    space = get_space("proxyless-tiny", {"width_choices": [1.0]})  # the widths the committed table covers
    rng = random.Random(14)
    return [(arch, _export(arch, folder, f"a{i}", converter))
            for i, arch in enumerate(sample_architecture(space, rng) for _ in range(3))]


def test_model_file_prediction_agrees_with_the_architecture_file(exported, capsys):
    for arch, files in exported:
        want = [op.key() for op in arch.ops() if not op.is_identity]
        for fmt in ("tflite", "onnx"):
            reference = _predict_json(capsys, files["json"], TABLE[fmt])
            graph = _predict_json(capsys, files[fmt], TABLE[fmt])
            assert graph["unrecognised"] == [] and graph["kind"] == fmt and graph["model_dtype"] == "fp32"
            assert [b["operator"] for b in graph["blocks"]] == want
            assert all(b["source"] == "table" for b in graph["blocks"])
            gap = abs(graph["total_ms"] - reference["total_ms"]) / reference["total_ms"]
            assert gap <= 0.02, (files[fmt].name, graph["total_ms"], reference["total_ms"])


def test_text_output_lists_every_block_and_the_total(exported, capsys):
    arch, files = exported[0]
    assert main(["predict", "--predictor", str(TABLE["tflite"]), str(files["tflite"])]) == 0
    out = capsys.readouterr().out
    blocks = [line for line in out.splitlines() if line.startswith("#")]
    assert len(blocks) == len([op for op in arch.ops() if not op.is_identity])
    assert "0 node(s) not" in out and out.rstrip().splitlines()[-1].endswith(" ms")


def test_shapes_missing_from_the_table_are_priced_by_its_fallback_regressor(tmp_path, capsys):
    """The committed table has no entry for these widths."""
    space = get_space("proxyless-tiny", {"width_mult": 1.5})
    arch = sample_architecture(space, random.Random(3))
    files = _export(arch, tmp_path, "wide", converter=None, tflite=False)
    graph = _predict_json(capsys, files["onnx"], TABLE["onnx"])
    reference = _predict_json(capsys, files["json"], TABLE["onnx"])
    sources = [b["source"] for b in graph["blocks"]]
    assert "regressor" in sources
    assert sources == [b["source"] for b in reference["blocks"] if b["source"] != "zero"]
    assert graph["total_ms"] == pytest.approx(reference["total_ms"], rel=0.02)


def test_fbnet_grouped_blocks_and_projecting_skips_are_recognised_in_both_formats(converter, tmp_path):
    space = get_space("fbnet-cifar100", FBNET_SMALL)
    choices = ["k3_e1_g2", "skip", "k5_e6", "k5_e1_g2", "k3_e3", "skip"]
    assert len(choices) == len(space.positions)
    arch = Architecture("fbnet-cifar100", choices, dict(FBNET_SMALL))
    files = _export(arch, tmp_path, "fb", converter)
    want = [op.key() for op in arch.ops() if not op.is_identity]
    for fmt in ("tflite", "onnx"):
        found = recognise(read_model(files[fmt]))
        assert found.unrecognised == []
        assert len(found.blocks) == len(want)
        for block, key in zip(found.blocks, want):
            assert key in [op.key() for op in block.candidates], (fmt, block.span)


def test_nodes_that_are_no_hwnas_operator_are_named_and_given_no_time(tmp_path, capsys):
    model = nn.Sequential(conv_bn(3, 8, 3, 1, 1, "relu6"), nn.Sigmoid(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4))
    path = export_onnx([OpSpec("conv", 3, 8, 8, 8)], model, tmp_path / "sig.onnx")
    assert main(["predict", "--predictor", str(TABLE["onnx"]), str(path)]) == 0
    out = capsys.readouterr().out
    assert "given no time (1):" in out and "Sigmoid" in out.split("given no time")[1]
    result = _predict_json(capsys, path, TABLE["onnx"])
    assert [u["op"] for u in result["unrecognised"]] == ["Sigmoid"]
    assert [b["operator"].split(":")[0] for b in result["blocks"]] == ["conv", "pool", "linear"]


def test_bad_model_files_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00\x01not a flatbuffer")
    assert main(["predict", "--predictor", str(TABLE["tflite"]), str(bad)]) == 2
    assert capsys.readouterr().err.startswith(f"hwnas: error: {bad}: not a readable TFLite model")
    assert main(["predict", "--predictor", str(TABLE["tflite"]), str(tmp_path / "none.onnx")]) == 2
    assert "no such model file" in capsys.readouterr().err


def test_predictors_list_names_device_target_and_recorded_accuracy(tmp_path, capsys):
    assert main(["predictors", "list", str(PREDICTORS), "--json"]) == 0
    entries = {e["file"]: e for e in json.loads(capsys.readouterr().out)}
    assert set(entries) == {str(p.relative_to(PREDICTORS)) for p in PREDICTORS.rglob("*.json")}
    table = entries["amd-epyc-2c-tflite-fp32.json"]
    assert (table["device"], table["runtime"], table["dtype"], table["threads"], table["type"]) == \
        ("amd-epyc-2c", "tflite", "fp32", 1, "lut")
    assert table["accuracy"]["how"] == "5-fold CV" and table["accuracy"]["within10"] == 100.0
    assert entries["phones/samsung_a50.json"]["accuracy"]["how"] == "held-out"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.json").write_text("{}")
    LookupTable({"name": "x"}, None, "tflite", "int8", 2, {}).save(tmp_path / "sub" / "x.json")
    assert main(["predictors", "list", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    line = [row for row in captured.out.splitlines() if row.startswith("sub/x.json")][0]
    assert line.split()[1:6] == ["x", "tflite", "int8", "2", "any"] and line.rstrip().endswith("-")
    assert "skipped: " in captured.err and "notes.json" in captured.err
    assert main(["predictors", "list", str(tmp_path / "nope")]) == 2


def test_a_predictor_of_another_device_is_warned_about(tmp_path, capsys, exported):
    here = describe_this_device()
    LookupTable(here, None, "tflite", "fp32", 1, {}).save(tmp_path / "here.json")
    LookupTable({**here, "name": "elsewhere", "cpu": "Some Other CPU"}, None, "tflite", "fp32", 1, {}).save(
        tmp_path / "other.json")
    assert other_device(tmp_path / "here.json") is None
    warning = other_device(tmp_path / "other.json")
    assert "'elsewhere'" in warning and "Some Other CPU" in warning and "\n" not in warning
    _, files = exported[0]
    assert main(["predict", "--predictor", str(tmp_path / "other.json"), str(files["onnx"])]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("hwnas: warning: predictor")]
    assert len(warnings) == 1 and "'elsewhere'" in warnings[0]


# -- issue 23: predict without --predictor --------------------------------------------------------------
def test_predict_without_a_predictor_uses_this_machines_table(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    space = get_space("proxyless-tiny")
    arch = sample_architecture(space, random.Random(3))
    arch.save(tmp_path / "a.json")
    assert main(["predict", "a.json"]) == 2  # no predictors/ here: say how to get one, do not profile
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no tflite fp32 predictor for this machine" in err and "hwnas run" in err
    assert not (tmp_path / "runs").exists()
    here = describe_this_device()
    LookupTable({**here, "cpu": "Some Other CPU"}, None, "tflite", "fp32", 1,
                {op.key(): 1.0 for op in space.unique_ops()}).save(tmp_path / "predictors" / "other.json")
    LookupTable(here, None, "tflite", "fp32", 1, {op.key(): 0.01 for op in space.unique_ops()}).save(
        tmp_path / "predictors" / "mine.json")
    assert main(["predict", "a.json", "--json"]) == 0
    captured = capsys.readouterr()
    assert "predictor: reference predictor predictors/mine.json matches this machine" in captured.err
    result = json.loads(captured.out)
    assert result["predictor"]["path"] == "predictors/mine.json"
    assert result["total_ms"] == pytest.approx(0.01 * len(arch.ops()), rel=1e-6)


def test_predict_without_a_predictor_takes_the_one_hwnas_run_fitted(tmp_path, capsys, monkeypatch, exported):
    monkeypatch.chdir(tmp_path)
    _, files = exported[0]
    here = describe_this_device()
    table = LookupTable(here, "proxyless-tiny", "onnxruntime", "fp32", 1,
                        {op.key(): 0.02 for op in get_space("proxyless-tiny").unique_ops()})
    table.save(tmp_path / "runs" / "main" / "predictor" / f"{here['name']}-onnxruntime-fp32.json")
    assert main(["predict", str(files["onnx"])]) == 0
    captured = capsys.readouterr()
    assert f"fitted on this machine by `hwnas run` (runs/main/predictor/{here['name']}-onnxruntime-fp32.json)" \
        in captured.err


def test_predict_errors_under_json_are_a_json_object(tmp_path, capsys):
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    two = tmp_path / "two.onnx"
    two.write_bytes(b"\x08\x07")
    for bad in (empty, two):  # issue 23.11: not "0 operators recognised, total 0 ms"
        assert main(["predict", "--json", "--predictor", str(TABLE["onnx"]), str(bad)]) == 2
        captured = capsys.readouterr()
        assert json.loads(captured.out) == {"error": f"{bad}: not a readable ONNX model (it holds no graph nodes; "
                                                     f"{bad.stat().st_size} bytes)"}
        assert captured.err.startswith("hwnas: error: ") and captured.err.count("\n") == 1
