"""Predictor files: safe round trips, refusal of tampered/truncated/mismatched files, and the CLI."""

import hashlib
import json

import numpy as np
import pytest
import skops.io as sio

from _predictor_data import synthetic_ms, training_ops, write_tables
from hwnas.arch import Architecture
from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.ops import OpSpec
from hwnas.predictors import load_predictor
from hwnas.predictors.fit import fit_device, save
from hwnas.spaces import get_space

FAST = "flops-linear,per-kind-linear,gbr-log"


@pytest.fixture(scope="module")
def fit_result(tmp_path_factory):
    """A fitted table + regressor (linear models and boosted trees in the skops file)."""
    data = write_tables(tmp_path_factory.mktemp("fit") / "ld")
    return fit_device(data, "dev", "tflite", "fp32", 1, "proxyless-tiny", methods=["per-kind-linear+gbr"])


@pytest.fixture(scope="module")
def fitted(fit_result, tmp_path_factory):
    """A folder with the fitted files under pred/."""
    root = tmp_path_factory.mktemp("saved")
    save(fit_result, root / "pred", "dev-tflite-fp32")
    return root


def _copy(fitted, tmp_path):
    for p in (fitted / "pred").iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    return tmp_path / "dev-tflite-fp32.json", tmp_path / "dev-tflite-fp32-regressor.json"


def test_regressor_round_trip_predicts_the_same(fitted, fit_result):
    data = fit_result
    loaded = load_predictor(fitted / "pred" / "dev-tflite-fp32-regressor.json", space="proxyless-tiny", device="dev")
    assert loaded.method == "per-kind-linear+gbr" and loaded.device["cpu"] == "test cpu"
    ops = [op for op in get_space("proxyless-tiny", {"width_mult": 1.25}).unique_ops() if op.kind != "zero"]
    assert np.allclose(loaded.predict_many(ops), data.regressor.predict_many(ops))
    assert loaded.overhead_ms == pytest.approx(data.regressor.overhead_ms)


def test_table_round_trip_and_named_fallback(fitted):
    lut = load_predictor(fitted / "pred" / "dev-tflite-fp32.json")
    op = training_ops()[3]
    assert lut.entries[op.key()] == pytest.approx(synthetic_ms(op), rel=1e-5)
    assert lut.predict_op(op) == pytest.approx(lut.scale * lut.entries[op.key()] + lut.per_op_ms)
    unseen = OpSpec("mbconv", 24, 32, 16, 16, kernel=5, expand=3)
    with pytest.raises(HwnasError, match="no latency entry"):
        lut.predict_op(unseen)
    assert lut.enable_fallback().predict_op(unseen) > 0


def test_fallback_for_enables_the_named_regressor_only_when_operators_are_missing(fitted):
    lut = load_predictor(fitted / "pred" / "dev-tflite-fp32.json")
    known = [op for op in training_ops() if lut.covers([op])][:3]
    assert lut.fallback_for(known) == 0 and lut.fallback is None
    unseen = OpSpec("mbconv", 24, 32, 16, 16, kernel=5, expand=3)
    assert lut.fallback_for(known + [unseen]) == 1 and lut.fallback is not None
    assert lut.predict_op(unseen) > 0


def test_truncated_model_file_is_refused(fitted, tmp_path):
    _, reg = _copy(fitted, tmp_path)
    skops_path = reg.with_suffix(".skops")
    skops_path.write_bytes(skops_path.read_bytes()[:1000])
    with pytest.raises(HwnasError, match="SHA-256 does not match"):
        load_predictor(reg)


def test_missing_model_file_is_refused(fitted, tmp_path):
    _, reg = _copy(fitted, tmp_path)
    reg.with_suffix(".skops").unlink()
    with pytest.raises(HwnasError, match="model file .* is missing"):
        load_predictor(reg)


def test_truncated_json_is_refused(fitted, tmp_path):
    lut, reg = _copy(fitted, tmp_path)
    for path in (lut, reg):
        path.write_text(path.read_text()[:200])
        with pytest.raises(HwnasError, match="truncated or tampered"):
            load_predictor(path)


class Payload:
    """A type no predictor file may contain."""


def test_model_file_with_untrusted_types_is_refused_even_with_a_matching_hash(fitted, tmp_path):
    _, reg = _copy(fitted, tmp_path)
    skops_path = reg.with_suffix(".skops")
    sio.dump({"*": Payload()}, skops_path)
    data = json.loads(reg.read_text())
    data["sha256"] = hashlib.sha256(skops_path.read_bytes()).hexdigest()
    reg.write_text(json.dumps(data))
    with pytest.raises(HwnasError, match="refusing to load untrusted types: .*Payload"):
        load_predictor(reg)


def test_garbage_model_file_with_a_matching_hash_is_refused(fitted, tmp_path):
    _, reg = _copy(fitted, tmp_path)
    skops_path = reg.with_suffix(".skops")
    skops_path.write_bytes(b"not a zip file")
    data = json.loads(reg.read_text())
    data["sha256"] = hashlib.sha256(b"not a zip file").hexdigest()
    reg.write_text(json.dumps(data))
    with pytest.raises(HwnasError, match="cannot load model"):
        load_predictor(reg)


@pytest.mark.parametrize("field, value, message", [
    ("features", ["flops"], "field 'features' does not match"),
    ("method", "svm", "unknown regressor method 'svm'"),
    ("model_file", "../elsewhere.skops", "fields 'model_file'"),
    ("threads", 0, "field 'threads' must be a positive integer"),
    ("overhead_ms", "lots", "field 'overhead_ms' must be a finite number"),
])
def test_tampered_regressor_header_fields_are_refused(fitted, tmp_path, field, value, message):
    _, reg = _copy(fitted, tmp_path)
    data = json.loads(reg.read_text())
    data[field] = value
    reg.write_text(json.dumps(data))
    with pytest.raises(HwnasError, match=message) as info:
        load_predictor(reg)
    assert str(reg) in str(info.value)


@pytest.mark.parametrize("entries, message", [
    ({"mbconv:bad": 1.0}, "malformed operator key"),
    ({"conv:3x32x32->16:k3:s1:e1:g1:relu6": -1.0}, "must be a finite non-negative number"),
    ({"conv:3x32x32->16:k3:s1:e1:g1:relu6": float("inf")}, "must be a finite non-negative number"),  # issue 15.2
    ([1, 2], "must be an object"),
])
def test_tampered_table_entries_are_refused(fitted, tmp_path, entries, message):
    lut, _ = _copy(fitted, tmp_path)
    data = json.loads(lut.read_text())
    data["entries"] = entries
    lut.write_text(json.dumps(data))
    with pytest.raises(HwnasError, match=message) as info:
        load_predictor(lut)
    assert str(lut) in str(info.value)


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("field, value, message", [
    ("overhead_ms", -4.9, "field 'overhead_ms' must not be negative, got -4.9"),
    ("overhead_ms", float("inf"), "field 'overhead_ms' must be a finite number"),
    ("scale", 0, r"field 'scale' must be a number in \[0.25, 4\]"),
    ("scale", float("nan"), "field 'scale' must be a number in"),
    ("per_op_ms", float("-inf"), "field 'per_op_ms' must be a finite number"),
    ("group_scales", {"mbconv:k3": 1.0, "bogus:k3": 1.2}, "unknown operator group 'bogus:k3'"),
    ("group_scales", {"mbconv": 1.0}, "unknown operator group 'mbconv'"),
    ("group_scales", {"mbconv:k3": 0.0}, r"field 'group_scales.mbconv:k3' must be a number in \[0.25, 4\]"),
])
def test_tampered_calibration_fields_are_refused(fitted, tmp_path, which, field, value, message):
    """Issue 15 case 2: values that would give inf, negative or zero predictions, in the table and the regressor."""
    path = _copy(fitted, tmp_path)[which]
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))  # writes Infinity / NaN as Python's json does
    with pytest.raises(HwnasError, match=message) as info:
        load_predictor(path)
    assert str(path) in str(info.value)


def test_file_for_another_space_or_device_is_refused(fitted):
    for path in (fitted / "pred").glob("*.json"):
        with pytest.raises(HwnasError, match="fitted for space 'proxyless-tiny', not 'proxyless-cifar'"):
            load_predictor(path, space="proxyless-cifar")
        with pytest.raises(HwnasError, match="fitted for device 'dev', not 'pixel-7'"):
            load_predictor(path, device="pixel-7")


def test_cli_fit_and_predict(tmp_path, capsys):
    data = write_tables(tmp_path / "ld")
    out = tmp_path / "pred"
    assert main(["fit", "--device", "dev", "--data", str(data), "--out", str(out), "--methods", FAST]) == 0
    report = capsys.readouterr().out
    assert "<- kept" in report and "held out for evaluation" in report
    assert (out / "dev-tflite-fp32.json").exists() and (out / "dev-tflite-fp32-regressor.skops").exists()

    arch_file = next((tmp_path / "ld" / "models").glob("*.json"))
    arch = Architecture.load(arch_file)
    assert main(["predict", "--predictor", str(out / "dev-tflite-fp32.json"), str(arch_file)]) == 0
    text = capsys.readouterr().out
    expected = load_predictor(out / "dev-tflite-fp32.json").predict_ops(arch.ops())
    assert f"{expected:9.4f} ms" in text
    assert sum(line.startswith("pos") for line in text.splitlines()) == len(arch.choices)


def test_cli_predict_missing_operator_falls_back_unless_told_not_to(fitted, tmp_path, capsys):
    arch_file = tmp_path / "wide.json"
    arch_file.write_text(json.dumps({"space": "proxyless-tiny", "space_params": {"width_mult": 1.5},
                                     "choices": ["k3_e3"] * 9}))
    table = str(fitted / "pred" / "dev-tflite-fp32.json")
    assert main(["predict", "--predictor", table, str(arch_file)]) == 0
    out = capsys.readouterr().out
    assert "total" in out and "regressor" in out  # the source column names who priced the missing operators
    assert main(["predict", "--predictor", table, "--no-fallback", str(arch_file)]) == 2
    assert "hwnas: error: no latency entry for operator conv:3x32x32->24" in capsys.readouterr().err


def test_cli_fit_with_bad_arguments_is_one_line_error(tmp_path, capsys):
    assert main(["fit", "--device", "nope", "--data", str(tmp_path)]) == 2
    assert "nope.csv: no such latency file" in capsys.readouterr().err
    assert main(["fit", "--methods", "magic", "--data", str(tmp_path)]) == 2
    assert "unknown method 'magic'" in capsys.readouterr().err


# -- issue 23 ---------------------------------------------------------------------------------------------
def test_predictors_list_shows_a_regressor_it_would_refuse_as_refused(fitted, tmp_path, capsys):
    import os

    (tmp_path / "changed").mkdir()
    (tmp_path / "system").mkdir()
    _, changed = _copy(fitted, tmp_path / "changed")
    changed.with_suffix(".skops").write_bytes(changed.with_suffix(".skops").read_bytes() + b"x")
    _, system = _copy(fitted, tmp_path / "system")
    sio.dump({"*": os.system}, system.with_suffix(".skops"))
    data = json.loads(system.read_text())
    data["sha256"] = hashlib.sha256(system.with_suffix(".skops").read_bytes()).hexdigest()
    system.write_text(json.dumps(data))
    assert main(["predictors", "list", str(tmp_path), "--json"]) == 0
    entries = {e["file"]: e for e in json.loads(capsys.readouterr().out)}
    assert entries["changed/dev-tflite-fp32.json"]["refused"] is None  # the table itself loads
    assert "SHA-256 does not match" in entries["changed/dev-tflite-fp32-regressor.json"]["refused"]
    assert "refusing to load untrusted types: posix.system" in entries["system/dev-tflite-fp32-regressor.json"][
        "refused"]
    assert main(["predictors", "list", str(tmp_path)]) == 0
    line = [r for r in capsys.readouterr().out.splitlines() if r.startswith("system/dev-tflite-fp32-regressor")][0]
    assert "REFUSED: " in line and "posix.system" in line


@pytest.mark.parametrize("per_op", [-1.0, -0.5])
def test_a_large_negative_per_op_term_is_refused(fitted, tmp_path, per_op):
    for path in _copy(fitted, tmp_path):
        data = json.loads(path.read_text())
        data["per_op_ms"] = per_op  # would price networks at minus several ms
        path.write_text(json.dumps(data))
        with pytest.raises(HwnasError, match=rf"^{path}: field 'per_op_ms' must be at least -0.1 ms, got {per_op}"):
            load_predictor(path)


def test_a_predictor_is_never_written_with_nan_or_infinity(fit_result, tmp_path):
    kept = fit_result.lut.overhead
    fit_result.lut.overhead = {"cv": {"scale": {"mape": float("inf")}}}
    try:
        with pytest.raises(HwnasError, match=r"x.json: not written: a value is NaN or infinite \(in overhead.cv."
                                             r"scale.mape\)"):
            fit_result.lut.save(tmp_path / "x.json")
    finally:
        fit_result.lut.overhead = kept
    assert not (tmp_path / "x.json").exists()


def test_json_nested_too_deeply_or_with_a_huge_integer_is_one_line(tmp_path, capsys):
    deep = tmp_path / "p" / "deep.json"
    deep.parent.mkdir()
    deep.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(HwnasError, match=rf"^{deep}: bad JSON: nested too deeply"):
        load_predictor(deep)
    (tmp_path / "p" / "ok.json").write_text("{}")
    assert main(["predictors", "list", str(tmp_path / "p")]) == 0  # one bad file does not stop the list
    assert "nested too deeply" in capsys.readouterr().err
    arch = tmp_path / "a.json"
    arch.write_text('{"space": "proxyless-tiny", "space_params": {"x": ' + "[" * 200_000 + "]" * 200_000 + "}}")
    assert main(["arch", "show", str(arch)]) == 2
    assert capsys.readouterr().err == f"hwnas: error: {arch}: bad JSON: nested too deeply\n"
    arch.write_text('{"space": "proxyless-tiny", "space_params": {"resolution": ' + "9" * 5000 + "}}")
    assert main(["arch", "show", str(arch)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hwnas: error: {arch}: bad JSON: ") and "digits" in err and err.count("\n") == 1
