"""Kernel-level prediction (hwnas.kernels): fusion rules on a hand-built graph, unpriced nodes reported with their
share of the FLOPs (never a silent zero), and bad files refused with one line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.kernels.detect import detect
from hwnas.kernels.predictor import KernelPredictor, fit_kernels
from hwnas.modelgraph import Graph, Node


def _node(index, op, ins, outs, in_shape, out_shape, kind="other", **attrs):
    return Node(index, op, outs[0], kind, ins, outs, in_shape, out_shape, attrs)


def _graph() -> Graph:
    conv = {"kernel": (3, 3), "stride": (2, 2), "groups": 1, "dilation": (1, 1), "act": "relu6"}
    nodes = [
        _node(0, "PAD", ["x"], ["p"], (1, 3, 32, 32), (1, 3, 33, 33), "pad"),
        _node(1, "CONV_2D", ["p"], ["c"], (1, 3, 33, 33), (1, 16, 16, 16), "conv", **conv),
        _node(2, "HARD_SWISH", ["c"], ["h"], (1, 16, 16, 16), (1, 16, 16, 16)),
        _node(3, "MEAN", ["h"], ["m"], (1, 16, 16, 16), (1, 16), "pool"),
        _node(4, "SHAPE", ["m"], ["s"], (1, 16), (2,)),
        _node(5, "STRIDED_SLICE", ["s"], ["b"], (2,), ()),
        _node(6, "PACK", ["b"], ["k"], (), (4,)),
        _node(7, "RESHAPE", ["m", "k"], ["r"], (1, 16), (1, 16, 1, 1), "reshape"),
        _node(8, "MUL", ["h", "r"], ["y"], (1, 16, 16, 16), (1, 16, 16, 16)),
        _node(9, "GATHER", ["y"], ["g"], (1, 16, 16, 16), (1, 8, 16, 16)),
    ]
    return Graph(Path("hand.tflite"), "tflite", "fp32", nodes, ["x"], ["g"])


def test_fusion_rules_group_pad_into_conv_and_shape_arithmetic_into_one_reshape():
    found = detect(_graph())
    kinds = [(k.spec["type"], k.span) for k in found.kernels]
    assert kinds == [("conv", "0-1"), ("hardswish", "2"), ("mean", "3"), ("dynreshape", "4-7"), ("mul", "8")]
    conv = found.kernels[0].spec
    assert (conv["h"], conv["cin"], conv["cout"], conv["k"], conv["s"]) == (32, 3, 16, 3, 2)  # the unpadded input
    assert found.kernels[4].spec["broadcast"] is True  # squeeze-excite multiply: one input is per channel
    assert [(u.node.op, u.flops) for u in found.unpriced] == [("GATHER", 8 * 16 * 16)]


def test_a_fully_connected_over_every_pixel_is_priced_as_its_1x1_conv_not_one_row():
    """Keras Dense on a (56, 56, 96) input is one FULLY_CONNECTED over 3,136 rows: priced by the committed LiteRT
    predictor as the 1x1 conv of the same shape (a Keras model of six such layers, 56 x 56, 96 <-> 384: measured
    12.8 ms, predicted 12.5 ms; as single rows it was 0.015 ms)."""
    dense = _node(0, "FULLY_CONNECTED", ["x"], ["y"], (1, 96, 56, 56), (1, 384, 56, 56), "linear", c_in=96, c_out=384)
    one = _node(1, "FULLY_CONNECTED", ["y"], ["z"], (1, 96), (1, 384), "linear", c_in=96, c_out=384)
    found = detect(Graph(Path("dense.tflite"), "tflite", "fp32", [dense, one], ["x"], ["z"]))
    assert [k.spec for k in found.kernels] == [{"type": "fc", "cin": 96, "cout": 384, "rows": 3136},
                                              {"type": "fc", "cin": 96, "cout": 384}]
    predictor = KernelPredictor.load(Path(__file__).resolve().parents[1] / "predictors" / "kernels"
                                     / "amd-epyc-2c-tflite-fp32-t1.json")
    conv = {"type": "conv", "h": 56, "cin": 96, "cout": 384, "k": 1, "s": 1, "groups": 1, "act": "none"}
    many, name, _ = predictor.price(found.kernels[0].spec)
    assert many == pytest.approx(predictor.price(conv)[0]) and name.startswith("fc:as conv1x1")
    assert many > 100 * predictor.price(found.kernels[1].spec)[0]


def _predictor(tmp_path: Path) -> Path:
    rows = [{"type": "empty", "spec": {"type": "empty", "h": 1, "c": 1}, "ms": 0.01}]
    for i, c in enumerate((8, 16, 32, 64, 128, 256)):
        rows.append({"type": "conv", "spec": {"type": "conv", "h": 32, "cin": 3, "cout": c, "k": 3, "s": 2,
                                               "groups": 1}, "ms": 0.01 + 0.002 * c})
        for t in ("hardswish", "mean", "dynreshape"):
            rows.append({"type": t, "spec": {"type": t, "h": 16, "c": c}, "ms": 0.01 + 0.0001 * c * (i + 1)})
    predictor = fit_kernels(rows, {"name": "test-device"}, log=lambda _: None)
    path = tmp_path / "kernels.json"
    predictor.save(path)
    return path


def test_an_unpriced_node_is_reported_with_its_flops_share_never_silently_zero(tmp_path, capsys, monkeypatch):
    path = _predictor(tmp_path)
    pred = KernelPredictor.load(path).predict_graph(_graph())
    unpriced = {u["op"]: u for u in pred.unpriced}
    assert set(unpriced) == {"GATHER", "MUL"}  # MUL: no mul_se predictor in this file
    assert "no mul_se kernel predictor" in unpriced["MUL"]["reason"]
    assert 0 < pred.unpriced_flops_share < 1
    model = tmp_path / "m.tflite"
    model.write_bytes(b"")
    # through the CLI: the JSON and the text carry the same unpriced nodes and the warning
    from hwnas.modelgraph import tflite_reader

    monkeypatch.setattr(tflite_reader, "read_tflite", lambda p: _graph())
    assert main(["predict", "--json", "--kernels", str(path), str(model)]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert sorted(u["op"] for u in result["unpriced"]) == ["GATHER", "MUL"]
    assert all(u["flops_share"] > 0 for u in result["unpriced"])
    assert all(k["predictor"].split(":")[0] == k["type"] for k in result["kernels"])
    assert result["total_ms"] > result["overhead_ms"]
    assert "not priced (given no time)" in captured.err
    assert main(["predict", "--kernels", str(path), str(model)]) == 0
    out = capsys.readouterr().out
    assert "GATHER" in out and "of the FLOPs" in out and "hardswish:linear" in out


def test_truncated_or_foreign_files_are_one_line_errors(tmp_path, capsys, monkeypatch):
    path = _predictor(tmp_path)
    bad = tmp_path / "cut.tflite"
    bad.write_bytes(b"TFL3\x00\x01")
    assert main(["predict", "--kernels", str(path), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hwnas: error: {bad}: not a readable TFLite model") and "\n" not in err
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"type": "lut"}))
    model = tmp_path / "m.tflite"
    model.write_bytes(b"")
    from hwnas.modelgraph import tflite_reader

    monkeypatch.setattr(tflite_reader, "read_tflite", lambda p: _graph())
    assert main(["predict", "--kernels", str(foreign), str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"hwnas: error: {foreign}: not an hwnas kernel predictor (field 'format' is not " \
                  "'hwnas-kernel-predictor')"
    data = json.loads(path.read_text())
    del data["types"]["conv"]["model"]
    path.write_text(json.dumps(data))
    assert main(["predict", "--kernels", str(path), str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"hwnas: error: {path}: damaged kernel predictor (KeyError: 'model')"
    path.write_text(path.read_text()[:100])  # truncated
    assert main(["predict", "--kernels", str(path), str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hwnas: error: {path}: ") and "\n" not in err


def test_kernel_commands_refuse_a_bad_file_before_any_work(tmp_path, capsys):
    """One line and exit 2, before any export or timing (calibrating times ~40 networks)."""
    (tmp_path / "k.json").write_text("{}")
    for argv, message in ((["kernels", "calibrate", str(tmp_path / "none.json"), "--cache", str(tmp_path / "c")],
                           "no such kernel predictor"),
                          (["kernels", "calibrate", str(tmp_path / "k.json"), "--cache", str(tmp_path / "c")],
                           "not an hwnas kernel predictor"),
                          (["kernels", "fit", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o.json")],
                           "cannot read the kernel table"),
                          (["kernels", "profile", "--out", str(tmp_path / "o.csv"), "--cache", str(tmp_path / "c"),
                            "--from-models", str(tmp_path / "none.tflite")], "no such model file"),
                          (["kernels", "profile", "--out", str(tmp_path / "o.csv"), "--cache", str(tmp_path / "c"),
                            "--from-models", str(tmp_path / "none.tflite"), "--max-kernels", "0"],
                           "--max-kernels must be at least 1"),
                          (["kernels", "profile", "--out", str(tmp_path / "o.csv"), "--cache", str(tmp_path / "c"),
                            "--retime", str(tmp_path / "none.csv")], "cannot read the kernel table"),
                          (["kernels", "profile", "--out", str(tmp_path / "o.csv"), "--cache", str(tmp_path / "c"),
                            "--retime", str(tmp_path / "none.csv"), "--from-models", str(tmp_path / "m.tflite")],
                           "exclude each other"),
                          (["kernels", "profile", "--runtime", "onnxruntime", "--out", str(tmp_path / "o.csv"),
                            "--cache", str(tmp_path / "c"), "--from-models", str(tmp_path / "m.tflite")],
                           "profiles the kernels of .onnx files"),
                          (["kernels", "profile", "--out", str(tmp_path / "o.csv"), "--cache", str(tmp_path / "c"),
                            "--types", "pad,bogus"], "unknown kernel type(s) bogus for tflite"),
                          (["kernels", "profile", "--out", str(tmp_path / "o.csv"), "--cache", str(tmp_path / "c"),
                            "--runtime", "onnxruntime", "--types", "dynreshape"],
                           "unknown kernel type(s) dynreshape for onnxruntime"),
                          (["kernels", "profile", "--out", str(tmp_path / "o.csv"), "--cache", str(tmp_path / "c"),
                            "--types", ""], "no kernel type given for tflite")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "c").exists() and not (tmp_path / "o.json").exists() and not (tmp_path / "o.csv").exists()


def test_retime_takes_each_distinct_kernel_of_the_csvs_once_and_names_a_bad_line(tmp_path):
    from hwnas.kernels.profile import retime_specs

    header = "type,spec,ms,iqr_ms,rounds\n"
    a = '"{""type"": ""relu"", ""h"": 8, ""c"": 16}"'
    b = '"{""type"": ""add"", ""h"": 4, ""c"": 32}"'
    (tmp_path / "one.csv").write_text(header + f"relu,{a},0.01,0.001,3\nadd,{b},0.02,0.001,3\n")
    (tmp_path / "two.csv").write_text(header + f"relu,{a},0.03,0.001,3\n")  # the same kernel, timed elsewhere
    specs = retime_specs([tmp_path / "one.csv", tmp_path / "two.csv"])
    assert specs == [{"type": "relu", "h": 8, "c": 16}, {"type": "add", "h": 4, "c": 32}]
    (tmp_path / "bad.csv").write_text(header + f"relu,{a},fast,0.001,3\n")
    with pytest.raises(HwnasError, match="bad.csv:2: not a kernel row"):
        retime_specs([tmp_path / "bad.csv"])
    (tmp_path / "empty.csv").write_text(header)
    with pytest.raises(HwnasError, match="no kernel rows"):
        retime_specs([tmp_path / "empty.csv"])


def test_model_specs_are_the_distinct_kernels_of_real_models(tmp_path, monkeypatch):
    from hwnas.kernels import profile
    from hwnas.modelgraph import tflite_reader

    monkeypatch.setattr(tflite_reader, "read_tflite", lambda p: _graph())
    for name in ("a.tflite", "b.tflite"):
        (tmp_path / name).write_bytes(b"")
    specs = profile.model_specs([tmp_path / "a.tflite", tmp_path / "b.tflite"])  # the same graph twice
    assert [s["type"] for s in specs] == ["conv", "hardswish", "mean", "dynreshape", "mul"]
    assert specs[0]["h"] == 32  # the convolution on its unpadded input, as detect() cuts it


def test_calibration_scales_each_group_and_old_files_keep_their_meaning(tmp_path):
    from hwnas.kernels.calibrate import fit_terms

    predictor = KernelPredictor.load(_predictor(tmp_path))
    base = predictor.predict_graph(_graph())
    conv = base.kernels[0].ms
    predictor.calibration = {"per_kernel_ms": 0.0, "ms_per_melem": 0.0}  # a file from before the group factors
    assert predictor.predict_graph(_graph()).total_ms == base.total_ms
    predictor.calibration["scale"] = {"conv": 0.5}
    assert abs(predictor.predict_graph(_graph()).kernels[0].ms - 1.5 * conv) < 1e-12
    # fitted on networks whose convolutions run 40% slower inside than alone, the conv factor is found
    predictor.calibration = None
    preds = [predictor.predict_graph(_graph()) for _ in range(3)]
    for i, p in enumerate(preds):  # three networks with different shares of conv time
        p.kernels[0].ms *= i + 1
        p.total_ms = p.overhead_ms + sum(k.ms for k in p.kernels)
    measured = np.array([p.total_ms + 0.4 * p.kernels[0].ms for p in preds])
    fit = fit_terms(preds, measured, log=lambda _: None)
    assert abs(fit["scale"]["conv"] - 0.4) < 0.02 and fit["mape_after"] < 0.5 < fit["mape_before"]


def test_a_prediction_carried_by_the_weights_beyond_the_caches_is_flagged(tmp_path, capsys, monkeypatch):
    """Where the calibration's weights term decides the total, the zoo was off by up to +-40%: say so."""
    from hwnas.modelgraph import tflite_reader

    monkeypatch.setattr(tflite_reader, "read_tflite", lambda p: _graph())
    model = tmp_path / "m.tflite"
    model.write_bytes(b"")
    path = _predictor(tmp_path)
    warned = []
    for rate in (0.0, 1000.0):
        predictor = KernelPredictor.load(path)
        predictor.calibration = {"per_kernel_ms": 0.0, "ms_per_melem": 0.0, "ms_per_mparam": rate,
                                 "resident_mparams": 0.0}
        predictor.save(tmp_path / "cal.json")
        assert main(["predict", "--json", "--kernels", str(tmp_path / "cal.json"), str(model)]) == 0
        result = json.loads(capsys.readouterr().out)
        assert (result["weights_ms"] > 0.5 * result["total_ms"]) == (rate > 0)
        warned.append(any("beyond the caches" in w for w in result["warnings"]))
    assert warned == [False, True]


def test_fitting_a_calibration_on_timed_networks_leaves_the_predictor_as_it_was(tmp_path, monkeypatch):
    """The zoo benchmark fits a session calibration and compares it with the file's: fitting must not change
    the predictor it prices with."""
    import hwnas.modelgraph
    from hwnas.kernels.calibrate import fit_calibration

    monkeypatch.setattr(hwnas.modelgraph, "read_model", lambda p: _graph())
    predictor = KernelPredictor.load(_predictor(tmp_path))
    uncalibrated = predictor.predict_graph(_graph()).total_ms
    kept = {"per_kernel_ms": 0.0, "ms_per_melem": 0.0, "scale": {"conv": 0.25}}
    predictor.calibration = kept
    files = {f"net-{i}": tmp_path / f"net-{i}.tflite" for i in range(4)}
    latency = {name: 1.3 * uncalibrated for name in files}  # every network 30% slower than its kernels
    result = fit_calibration(predictor, files, latency, log=lambda _: None)
    assert predictor.calibration is kept and predictor.calibration == {"per_kernel_ms": 0.0, "ms_per_melem": 0.0,
                                                                       "scale": {"conv": 0.25}}
    assert result["models"] == 4 and result["mape_before"] > 20 and result["mape_after"] < 1


def test_calibrate_refuses_an_out_it_cannot_write_before_any_timing(tmp_path, capsys):
    """``--out`` naming a folder: one line and exit 2 before the networks are exported or timed (~1 min)."""
    predictor = _predictor(tmp_path)
    before = predictor.read_bytes()
    assert main(["kernels", "calibrate", str(predictor), "--out", str(tmp_path), "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"hwnas: error: --out {tmp_path}: is a folder, expected a file name"
    assert not (tmp_path / "c").exists() and predictor.read_bytes() == before


def test_a_stored_calibration_replaces_only_that_field_and_leaves_no_temporary_file(tmp_path):
    from hwnas.kernels.calibrate import store_calibration

    path = _predictor(tmp_path)
    out = tmp_path / "new" / "calibrated.json"
    store_calibration(path, {"per_kernel_ms": 0.001, "ms_per_melem": 0.0}, out)
    assert KernelPredictor.load(out).calibration == {"per_kernel_ms": 0.001, "ms_per_melem": 0.0}
    assert KernelPredictor.load(path).calibration is None  # the source file untouched
    old, new = json.loads(path.read_text()), json.loads(out.read_text())
    assert {k: v for k, v in new.items() if k != "calibration"} == {k: v for k, v in old.items() if k != "calibration"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["calibrated.json"]


def test_the_kernel_predictor_of_this_instruction_set_comes_first_and_another_is_warned_about(
        tmp_path, capsys, monkeypatch):
    """One CPU string, two instruction sets (AVX-512 and AVX2 AMD EPYC VMs): XNNPACK and ORT run other kernels,
    so `<device>-<isa>-...` is preferred to `<device>-...`, and a predictor profiled on another ISA is flagged."""
    from hwnas import latency_data
    from hwnas.cli import predict_kernels
    from hwnas.modelgraph import tflite_reader

    monkeypatch.setattr(tflite_reader, "read_tflite", lambda p: _graph())
    this = {"name": "cpu-2c", "vector_isa": "avx2"}
    monkeypatch.setattr(latency_data, "describe_this_device", lambda name=None: this)
    monkeypatch.setattr(latency_data, "vector_isa", lambda cpuinfo=None: this["vector_isa"])
    monkeypatch.setattr(predict_kernels, "KERNEL_DIR", tmp_path)
    assert predict_kernels.this_machines_kernels("tflite", "fp32") is None
    plain, own = tmp_path / "cpu-2c-tflite-fp32-t1.json", tmp_path / "cpu-2c-avx2-tflite-fp32-t1.json"
    for path, isa in ((plain, "avx512"), (own, "avx2")):
        predictor = KernelPredictor.load(_predictor(tmp_path))
        predictor.device = {"name": "cpu-2c", "vector_isa": isa}
        predictor.save(path)
    assert predict_kernels.this_machines_kernels("tflite", "fp32") == own
    model = tmp_path / "m.tflite"
    model.write_bytes(b"")
    warned = []
    for path in (own, plain):
        assert main(["predict", "--json", "--kernels", str(path), str(model)]) == 0
        warned.append([w for w in json.loads(capsys.readouterr().out)["warnings"] if "avx512" in w])
    assert warned[0] == [] and "this one has avx2" in warned[1][0]
    own.unlink()
    assert predict_kernels.this_machines_kernels("tflite", "fp32") == plain


def test_the_calibration_fit_follows_most_networks_not_one_far_off():
    """A network measured far from its kernels' sum (a chain of sub-microsecond kernels at 2.7x it) must not
    decide the whole-network terms for the others: Huber weights beyond 5% relative error."""
    from scipy.optimize import lsq_linear

    from hwnas.kernels.calibrate import robust_fit

    rng = np.random.default_rng(0)
    A = rng.uniform(0.0, 1.0, (20, 2))
    b = A @ np.array([0.3, -0.2])
    b[0] += 1.5
    bounds = ([-1.0, -1.0], [1.0, 1.0])
    assert np.abs(lsq_linear(A, b, bounds=bounds).x - [0.3, -0.2]).max() > 0.05  # least squares is pulled off
    assert np.abs(robust_fit(A, b, bounds) - [0.3, -0.2]).max() < 0.01


def test_a_fully_connected_kernel_takes_the_1x1_convolutions_factor_unless_the_calibration_predates_it(tmp_path):
    """fc at batch 1 is a 1x1 convolution on a 1x1 input: new calibrations put it in conv1x1's group (recorded as
    ``group_of``); a calibration without that field keeps pricing it with the "other" factor it was fitted with."""
    from hwnas.kernels.calibrate import store_calibration
    from hwnas.kernels.predictor import GROUP_OF

    rows = [{"type": "empty", "spec": {"type": "empty", "h": 1, "c": 1}, "ms": 0.001}]
    rows += [{"type": "fc", "spec": {"type": "fc", "cin": c, "cout": 1000}, "ms": 0.001 + 7e-8 * c * 1000}
             for c in (64, 128, 256, 512, 1024, 1280, 2048)]
    path = tmp_path / "fc.json"
    fit_kernels(rows, {"name": "test-device"}, log=lambda _: None).save(path)
    spec = {"type": "fc", "cin": 1280, "cout": 1000}
    raw = KernelPredictor.load(path).price(spec)[0]
    terms = {"per_kernel_ms": 0.0, "ms_per_melem": 0.0, "scale": {"conv": 0.0, "conv1x1": 0.0, "dwconv": 0.0,
                                                                   "other": 1.0}}
    store_calibration(path, terms, tmp_path / "legacy.json")
    store_calibration(path, {**terms, "group_of": dict(GROUP_OF)}, tmp_path / "now.json")
    assert KernelPredictor.load(tmp_path / "legacy.json").price(spec)[0] == pytest.approx(2 * raw)
    assert KernelPredictor.load(tmp_path / "now.json").price(spec)[0] == pytest.approx(raw)
    store_calibration(path, {**terms, "group_of": {"fc": "matmul"}}, tmp_path / "bad.json")
    with pytest.raises(HwnasError, match=r"bad.json: field 'calibration.group_of' must map kernel types to one of"):
        KernelPredictor.load(tmp_path / "bad.json")


def test_a_dilated_litert_conv_is_priced_as_its_undilated_shape_and_flagged():
    """XNNPACK ran dilation 2 at 0.95-1.00x the time of dilation 1 (5 Keras convs alone, docs/predictors.md):
    priced as the undilated conv, and flagged as outside the sampled range instead of silently."""
    predictor = KernelPredictor.load(Path(__file__).resolve().parents[1] / "predictors" / "kernels"
                                     / "amd-epyc-2c-tflite-fp32-t1.json")
    dw = {"kernel": (5, 5), "stride": (1, 1), "groups": 672, "act": "none"}
    priced = {}
    for d in (1, 2):
        node = _node(0, "DEPTHWISE_CONV_2D", ["x"], ["y"], (1, 672, 14, 14), (1, 672, 14, 14), "conv",
                     dilation=(d, d), **dw)
        result = predictor.predict_graph(Graph(Path("d.tflite"), "tflite", "fp32", [node], ["x"], ["y"]))
        (kernel,) = result.kernels
        assert kernel.spec.get("dilation", 1) == d and not result.unpriced
        priced[d] = (kernel.ms, kernel.out_of_range)
    assert priced[2][0] == pytest.approx(priced[1][0])
    assert priced[1][1] == [] and any("dilation=2" in r for r in priced[2][1])
