"""Kernel prediction on ONNX Runtime (hwnas.kernels.onnx_detect): fusion rules and layout changes on a hand-built
ONNX graph (checked against ORT's own optimised graph), an unpriced node reported with its FLOPs share (never a
silent zero), and bad files refused with one line and exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hwnas.cli import main
from hwnas.kernels.onnx_detect import detect_onnx
from hwnas.kernels.predictor import fit_kernels
from hwnas.modelgraph import read_model

onnx = pytest.importorskip("onnx")


def _hand_built(path: Path) -> Path:
    """conv+relu, conv+add+relu (residual), swish, squeeze-excite (pool, conv+hardsigmoid, broadcast mul),
    channel shuffle, an Erf (no predictor), a last conv."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = []

    def w(name, *shape):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name))
        return name

    def const(name, values):
        inits.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name

    n = helper.make_node
    nodes = [
        n("Conv", ["x", w("w0", 32, 32, 3, 3), w("b0", 32)], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Relu", ["c1"], ["r1"]),
        n("Conv", ["r1", w("w1", 32, 32, 1, 1), w("b1", 32)], ["c2"], kernel_shape=[1, 1]),
        n("Add", ["c2", "r1"], ["a1"]),
        n("Relu", ["a1"], ["r2"]),
        n("Sigmoid", ["r2"], ["s1"]),
        n("Mul", ["r2", "s1"], ["sw"]),
        n("GlobalAveragePool", ["sw"], ["g"]),
        n("Conv", ["g", w("w2", 32, 32, 1, 1), w("b2", 32)], ["gc"], kernel_shape=[1, 1]),
        n("HardSigmoid", ["gc"], ["gate"], alpha=1 / 6, beta=0.5),
        n("Mul", ["sw", "gate"], ["se"]),
        n("Reshape", ["se", const("s5", [1, 2, 16, 8, 8])], ["rs"]),
        n("Transpose", ["rs"], ["tr"], perm=[0, 2, 1, 3, 4]),
        n("Reshape", ["tr", const("s4", [1, 32, 8, 8])], ["shuf"]),
        n("Erf", ["shuf"], ["e"]),
        n("Conv", ["e", w("w3", 16, 32, 1, 1), w("b3", 16)], ["y"], kernel_shape=[1, 1]),
    ]
    graph = helper.make_graph(nodes, "hand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_ort_fusion_rules_and_layout_changes_on_a_hand_built_graph(tmp_path):
    path = _hand_built(tmp_path / "hand.onnx")
    found = detect_onnx(read_model(path))
    kinds = [(k.spec["type"], k.span) for k in found.kernels]
    assert kinds == [("reorder_in", "0"), ("conv", "0-1"), ("conv", "2-4"), ("swish", "5-6"), ("mean", "7"),
                     ("conv", "8-9"), ("hardsigmoid", "9"), ("reorder_out", "10"), ("reorder_out", "10"),
                     ("mul", "10"), ("transpose", "11-13"), ("reorder_in", "15"), ("conv", "15"),
                     ("reorder_out", "15")]
    residual, gate = found.kernels[2].spec, found.kernels[5].spec
    assert residual["residual"] and residual["act"] == "relu" and gate["act"] == "hardsigmoid"
    # a fused hard-sigmoid is one node for ORT but still a pass over the output: priced on its own, marked fused
    assert found.kernels[6].spec == {"type": "hardsigmoid", "h": 1, "c": 32, "fused": True}
    assert found.kernels[9].spec["broadcast"] is True  # the squeeze-excite multiply
    assert [(u.node.op, u.flops) for u in found.unpriced] == [("Erf", 32 * 8 * 8)]
    # the layout changes are the ones ORT itself inserts (its optimised graph of the same file)
    from hwnas.kernels.onnx_profile import optimised_ops

    ops = optimised_ops(path)
    for kind, op in (("reorder_in", "ReorderInput"), ("reorder_out", "ReorderOutput")):
        assert sum(t == kind for t, _ in kinds) == ops.count(op)
    assert "Add" not in ops and "Relu" not in ops and "HardSigmoid" not in ops  # fused into the convs


def test_convs_whose_channels_do_not_divide_by_4_stay_in_the_plain_layout_as_in_ort(tmp_path):
    """ShuffleNetV2 x1.0 splits 116 channels into 58 + 58: ORT runs those convs unblocked, with no layout changes."""
    from hwnas.kernels.onnx_kernels import kernel_model
    from hwnas.kernels.onnx_profile import optimised_ops

    specs = [{"type": "conv", "h": 14, "cin": cin, "cout": cout, "k": 1, "s": 1, "groups": 1, "act": "relu"}
             for cin, cout in ((58, 58), (56, 58), (62, 64), (64, 64), (6, 64))]
    specs += [{"type": "dwconv", "h": 14, "c": c, "k": 3, "s": 1, "act": "relu"} for c in (58, 60)]
    blocked = []
    for i, spec in enumerate(specs):
        path = tmp_path / f"k{i}.onnx"
        onnx.save(kernel_model(spec), path)
        kinds = [k.spec["type"] for k in detect_onnx(read_model(path)).kernels]
        ops = optimised_ops(path)
        assert kinds.count("reorder_in") == ops.count("ReorderInput"), (spec, ops)
        assert kinds.count("reorder_out") == ops.count("ReorderOutput"), (spec, ops)
        blocked.append("ReorderOutput" in ops)
    assert blocked == [False, True, False, True, True, False, True]


def _pool_between_convs(path: Path, channels: int = 24) -> Path:
    """conv 16 -> ``channels``, a 2 x 2 max pool, conv -> 32: the pool runs blocked only where ``channels`` is a
    multiple of ORT's NCHWc block (24: on a CPU without AVX-512, block 8, not with AVX-512, block 16)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c0"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p", "w1"], ["y"], kernel_shape=[1, 1])]
    graph = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 4, 4])],
                              [w("w0", channels, 16, 3, 3), w("w1", 32, channels, 1, 1)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_the_layout_changes_follow_this_machines_nchwc_block(tmp_path):
    """ORT's NCHWc block is 16 channels with AVX-512 and 8 without (the third AMD EPYC VM, same CPU string as the
    reference one): the detection takes the block, the one measured here matches ORT's own optimised graph, and a
    layout change's kernel model is built for it (with 16 assumed, ORT refused to run a reorder of 20 channels on
    the AVX2-only VM and the kernel profiling stopped with a traceback)."""
    from hwnas.kernels.onnx_kernels import kernel_model
    from hwnas.kernels.onnx_profile import optimised_ops
    from hwnas.kernels.sample import nchwc_block
    from hwnas.runners.onnxruntime import OnnxRuntimeRunner

    block = nchwc_block()
    assert block in (8, 16)
    path = _pool_between_convs(tmp_path / "pool.onnx")
    reorders = {b: [k.spec["type"] for k in detect_onnx(read_model(path), b).kernels if "reorder" in k.spec["type"]]
                for b in (8, 16)}
    assert reorders[8] == ["reorder_in", "reorder_out"]  # the pool runs blocked: in once, out once
    assert reorders[16] == ["reorder_in", "reorder_out", "reorder_in", "reorder_out"]  # 24 channels: pool plain
    ops = optimised_ops(path)
    assert len(reorders[block]) == ops.count("ReorderInput") + ops.count("ReorderOutput"), ops
    for kind in ("reorder_in", "reorder_out"):
        model = tmp_path / f"{kind}.onnx"
        onnx.save(kernel_model({"type": kind, "h": 4, "c": 20}), model)
        assert OnnxRuntimeRunner(threads=1).time(model).median_ms > 0  # runs on this machine


def test_an_ort_kernel_predictor_keeps_the_block_it_was_profiled_with(tmp_path, capsys):
    from hwnas.errors import HwnasError
    from hwnas.kernels.predictor import KernelPredictor

    path = _predictor(tmp_path)
    data = json.loads(path.read_text())
    assert data["nchwc_block"] == 16  # rows without the column: the reference machine's tables
    del data["nchwc_block"]
    path.write_text(json.dumps(data))
    assert KernelPredictor.load(path).nchwc_block == 16  # a file from before the field
    data["nchwc_block"] = 8
    path.write_text(json.dumps(data))
    p8 = KernelPredictor.load(path)
    model = _pool_between_convs(tmp_path / "pool.onnx")
    kinds = [k.type for k in p8.predict_graph(read_model(model)).kernels]
    assert kinds.count("reorder_in") == kinds.count("reorder_out") == 1  # detected with block 8 (16: 2 and 2)
    data["nchwc_block"] = 0
    path.write_text(json.dumps(data))
    with pytest.raises(HwnasError, match="field 'nchwc_block' must be 4, 8, 16 or 32"):
        KernelPredictor.load(path)
    rows = [{"type": "empty", "spec": {"type": "empty", "h": 1, "c": 1}, "ms": 0.005, "nchwc_block": 8},
            {"type": "relu", "spec": {"type": "relu", "h": 8, "c": 32}, "ms": 0.006, "nchwc_block": 16}]
    with pytest.raises(HwnasError, match="different ONNX Runtime NCHWc blocks"):
        fit_kernels(rows, {"name": "mixed"}, log=lambda _: None, runtime="onnxruntime")


def _predictor(tmp_path: Path, drop: str = "") -> Path:
    rows = [{"type": "empty", "spec": {"type": "empty", "h": 1, "c": 1}, "ms": 0.005}]
    for i, c in enumerate((16, 32, 64, 128, 256, 512)):
        rows.append({"type": "conv", "spec": {"type": "conv", "h": 8, "cin": c, "cout": 32, "k": 3, "s": 1,
                                               "groups": 1}, "ms": 0.01 + 0.001 * c})
        rows.append({"type": "conv", "spec": {"type": "conv", "h": 8, "cin": c, "cout": 16, "k": 1, "s": 1,
                                               "groups": 1}, "ms": 0.006 + 0.0001 * c})
        rows.append({"type": "mul", "spec": {"type": "mul", "h": 8, "c": c, "broadcast": True}, "ms": 0.006 + 1e-5 * c})
        for t in ("swish", "mean", "transpose", "reorder_in", "reorder_out", "hardsigmoid"):
            if t != drop:
                rows.append({"type": t, "spec": {"type": t, "h": 8, "c": c}, "ms": 0.006 + 1e-5 * c * (i + 1)})
    path = tmp_path / "kernels.json"
    fit_kernels(rows, {"name": "test-device"}, log=lambda _: None, runtime="onnxruntime").save(path)
    return path


def test_an_unpriced_onnx_node_is_reported_never_silently_zero(tmp_path, capsys):
    model = _hand_built(tmp_path / "hand.onnx")
    path = _predictor(tmp_path, drop="transpose")  # a kernel type missing from the predictor file
    assert main(["predict", "--kernels", str(path), str(model), "--json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["kind"] == "onnx" and out["predictor"]["runtime"] == "onnxruntime"
    unpriced = {u["op"]: u for u in out["unpriced"]}
    assert set(unpriced) == {"Erf", "Reshape"}
    assert unpriced["Erf"]["flops"] == 32 * 8 * 8 and unpriced["Erf"]["flops_share"] > 0
    assert "no transpose kernel predictor" in unpriced["Reshape"]["reason"]
    assert out["unpriced_flops_share"] == pytest.approx(sum(u["flops_share"] for u in out["unpriced"]))
    assert "2 node(s) not priced" in captured.err
    assert out["total_ms"] == pytest.approx(out["overhead_ms"] + sum(k["ms"] for k in out["kernels"]))
    assert all(k["predictor"].startswith(k["type"]) for k in out["kernels"])
    assert main(["predict", "--kernels", str(path), str(model)]) == 0  # the table says the same
    text = capsys.readouterr().out
    assert "not priced, given no time (2" in text and "Erf" in text


def test_bad_onnx_or_predictor_files_are_one_line_errors(tmp_path, capsys):
    model = _hand_built(tmp_path / "hand.onnx")
    path = _predictor(tmp_path)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(model.read_bytes()[:200])
    assert main(["predict", "--kernels", str(path), str(cut)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hwnas: error: {cut}: not a readable ONNX model") and "\n" not in err
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"format": "hwnas-lut", "rows": []}))
    assert main(["predict", "--kernels", str(foreign), str(model)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"hwnas: error: {foreign}: not an hwnas kernel predictor (field 'format' is not " \
                  "'hwnas-kernel-predictor')"
    path.write_text(path.read_text()[:150])  # truncated
    assert main(["predict", "--kernels", str(path), str(model), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().startswith(f"hwnas: error: {path}: ") and "\n" not in captured.err.strip()
    assert json.loads(captured.out)["error"].startswith(f"{path}: ")  # --json: the same line as a JSON error


def test_calibration_networks_are_never_zoo_networks_and_each_runtime_keeps_its_own_round_log(tmp_path):
    """The zoo benchmarks judge the kernel predictors on networks nothing was fitted on; the LiteRT and ONNX Runtime
    calibrations share network names (``chain-0``), so a shared round log would hand one runtime's times to the other."""
    import sys

    from hwnas.kernels import calibrate, onnx_calibrate

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import model_zoo
    import model_zoo_onnx

    onnx_zoo = {name for _, name, *_ in model_zoo_onnx.zoo_specs()}
    onnx_real = {onnx_calibrate.torchvision_name(*r) for r in onnx_calibrate.REAL_NETWORKS}
    assert len(onnx_real) == len(onnx_calibrate.REAL_NETWORKS) and not onnx_real & onnx_zoo
    assert "mobilenet_v2-w0.75-64" in onnx_real and "mobilenet_v2-w0.75-96" in onnx_zoo  # same naming on both sides
    tflite_zoo = {name for _, name, _ in model_zoo.zoo_specs()}
    tflite_real = {calibrate.real_name(s) for s in calibrate.REAL_NETWORKS}
    assert not tflite_real & tflite_zoo and "MobileNetV2-a1.0-96" in tflite_zoo
    logs = {calibrate.rounds_log(tmp_path, r) for r in ("tflite", "onnxruntime")}
    assert len(logs) == 2 and all(p.parent == tmp_path for p in logs)


def test_onnx_runtime_reads_only_the_filter_taps_that_meet_the_input(tmp_path):
    """Measured on a chain of eight 512 -> 512 3x3 convs: ORT at 1x1 pixel costs about as much as 1x1 convs, so the
    weights it streams are the centre taps; XNNPACK reads every tap."""
    from hwnas.kernels.sample import taps_read_share

    conv = {"type": "conv", "cin": 512, "cout": 512, "k": 3, "s": 1, "groups": 1}
    assert taps_read_share({**conv, "h": 1}) == pytest.approx(1 / 9)
    assert taps_read_share({**conv, "h": 2}) == 1.0 and taps_read_share({**conv, "k": 1, "h": 1}) == 1.0
    assert taps_read_share({"type": "dwconv", "c": 64, "k": 5, "s": 1, "h": 2}) == pytest.approx(9 / 25)
    assert taps_read_share({"type": "fc", "cin": 512, "cout": 10}) == 1.0
    from hwnas.kernels.onnx_kernels import kernel_model

    path = tmp_path / "conv.onnx"
    onnx.save(kernel_model({**conv, "h": 1, "act": "relu"}), path)
    rows = [{"type": "empty", "spec": {"type": "empty", "h": 1, "c": 1}, "ms": 0.005}]
    rows += [{"type": "conv", "spec": {**conv, "h": h, "cin": c}, "ms": 0.01 * c / 64} for h in (1, 2)
             for c in (64, 128, 256, 512)]
    for runtime, share in (("onnxruntime", 1 / 9), ("tflite", 1.0)):  # the rule follows the predictor's runtime
        pred = fit_kernels(rows, {"name": "test-device"}, log=lambda _: None, runtime=runtime)
        convs = [k for k in pred.predict_graph(read_model(path)).kernels if k.type == "conv"]
        assert [k.params for k in convs] == [pytest.approx(9 * 512 * 512 * share)]


def test_an_ort_squeeze_excite_multiply_is_priced_by_its_channels_as_measured():
    """ORT loops over the gate's channels (measured alone: about 4,000 elements take 1.0 us as 16 channels of
    16 x 16, 9.3 us as 960 channels of 2 x 2); XNNPACK's time follows the elements, so LiteRT keeps those alone."""
    rows = [{"type": "empty", "spec": {"type": "empty", "h": 1, "c": 1}, "ms": 0.005}]
    for h in (2, 4, 8, 16):
        for c in (16, 64, 240, 960):
            rows.append({"type": "mul", "spec": {"type": "mul", "h": h, "c": c, "broadcast": True},
                         "ms": 0.005 + 1e-5 * c + 2e-7 * h * h * c})
    many = {"type": "mul", "h": 2, "c": 960, "broadcast": True}  # 3,840 elements
    few = {"type": "mul", "h": 16, "c": 16, "broadcast": True}  # 4,096 elements
    ort = fit_kernels(rows, {"name": "test-device"}, log=lambda _: None, runtime="onnxruntime")
    assert ort.info["mul_se"]["features"][-1] == "broadcast_channels"
    assert ort.price(many)[0] == pytest.approx(1e-5 * 960 + 2e-7 * 3840, rel=0.05)
    assert ort.price(few)[0] == pytest.approx(1e-5 * 16 + 2e-7 * 4096, rel=0.05)
    lite = fit_kernels(rows, {"name": "test-device"}, log=lambda _: None, runtime="tflite")
    assert "broadcast_channels" not in lite.info["mul_se"]["features"]
    assert lite.price(many)[0] < 2 * lite.price(few)[0]  # elements alone cannot tell the two apart


def _pad_resize_softmax(path: Path, pad_value: float = 0.0) -> Path:
    """conv, a constant Pad (``pad_value``) read only by a conv, a nearest x2 resize and a bilinear one as torch
    exports them, then one with coordinates ORT keeps plain and a torch-style one after it (plain input), global
    pool, Gemm, Softmax."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    inits = []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def w(name, *shape):
        return const(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))

    scales = const("scales", np.array([1, 1, 2, 2], np.float32))
    n = helper.make_node
    nodes = [
        n("Conv", ["x", w("w0", 32, 16, 3, 3)], ["c0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        n("Pad", ["c0", const("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
                  const("fill", np.array(pad_value, np.float32))], ["p"], mode="constant"),
        n("Conv", ["p", w("w1", 32, 32, 3, 3)], ["c1"], kernel_shape=[3, 3]),
        n("Resize", ["c1", "", scales], ["r0"], mode="nearest", coordinate_transformation_mode="asymmetric",
          nearest_mode="floor"),
        n("Conv", ["r0", w("w2", 32, 32, 1, 1)], ["c2"], kernel_shape=[1, 1]),
        n("Resize", ["c2", "", scales], ["r1"], mode="linear", coordinate_transformation_mode="half_pixel"),
        n("Conv", ["r1", w("w3", 32, 32, 1, 1)], ["c3"], kernel_shape=[1, 1]),
        n("Resize", ["c3", "", scales], ["r2"], mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
        n("Resize", ["r2", "", scales], ["r3"], mode="nearest", coordinate_transformation_mode="asymmetric",
          nearest_mode="floor"),
        n("GlobalAveragePool", ["r3"], ["g"]),
        n("Flatten", ["g"], ["f"], axis=1),
        n("Gemm", ["f", w("w4", 10, 32), w("b4", 10)], ["logits"], transB=1),
        n("Softmax", ["logits"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "prs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_ort_folds_a_pad_into_its_conv_and_runs_torch_style_resizes_blocked(tmp_path):
    """Measured with ORT's optimised graphs: a zero Pad read by a Conv vanishes into it, nearest ("asymmetric") and
    bilinear ("half_pixel") resizes become its NCHWc Upsample on a blocked input, other coordinates or a plain
    input a plain Resize; the committed predictor prices every kernel (none unpriced)."""
    from hwnas.kernels.onnx_profile import optimised_ops
    from hwnas.kernels.predictor import KernelPredictor

    path = _pad_resize_softmax(tmp_path / "prs.onnx")
    found = detect_onnx(read_model(path))
    kinds = [k.spec["type"] for k in found.kernels]
    assert "pad" not in kinds and not found.unpriced
    convs = [k.spec for k in found.kernels if k.spec["type"] == "conv"]
    assert convs[1]["h"] == 8  # the conv after the folded Pad pads the 8 x 8 input itself
    resizes = [k.spec for k in found.kernels if k.spec["type"] == "resize"]
    assert [(r["mode"], bool(r.get("plain"))) for r in resizes] == [("nearest", False), ("linear", False),
                                                                   ("linear", True), ("nearest", True)]
    assert kinds[-1] == "softmax" and found.kernels[-1].spec == {"type": "softmax", "n": 10}
    ops = optimised_ops(path)
    assert "Pad" not in ops and ops.count("Upsample") == 2 and ops.count("Resize") == 2
    for kind, op in (("reorder_in", "ReorderInput"), ("reorder_out", "ReorderOutput")):
        assert kinds.count(kind) == ops.count(op), (kinds, ops)
    predictor = KernelPredictor.load(Path(__file__).resolve().parents[1] / "predictors" / "kernels"
                                     / "amd-epyc-2c-onnxruntime-fp32-t1.json")
    priced = predictor.predict_graph(read_model(path))
    assert not priced.unpriced and {"resize", "softmax"} <= {k.type for k in priced.kernels}
    blocked = {"type": "resize", "h": 20, "c": 256, "scale": 2, "mode": "linear"}
    # measured alone at 20 x 20 x 256: the plain Resize 0.58 ms, the Upsample 0.16 ms
    assert predictor.price({**blocked, "plain": True})[0] > 2 * predictor.price(blocked)[0]


def test_a_pad_with_a_nonzero_fill_stays_a_kernel_as_in_orts_graph(tmp_path):
    """A Conv pads with zeros, so ORT keeps a Pad that fills with 1.0: detection keeps it too, a pad kernel on the
    8 x 8 input, and the conv after it reads the padded 10 x 10 input."""
    from hwnas.kernels.onnx_profile import optimised_ops

    path = _pad_resize_softmax(tmp_path / "prs1.onnx", pad_value=1.0)
    assert read_model(path).nodes[1].attrs["value"] == 1.0
    found = detect_onnx(read_model(path))
    pads = [k.spec for k in found.kernels if k.spec["type"] == "pad"]
    assert pads == [{"type": "pad", "h": 8, "c": 32, "p": 1}]
    assert [k.spec["h"] for k in found.kernels if k.spec["type"] == "conv"][:2] == [8, 10]
    assert optimised_ops(path).count("Pad") == 1


def test_nodes_of_unknown_shape_are_counted_in_the_warning_not_hidden_as_0_flops(tmp_path, capsys):
    """A reshape to a shape given at run time: ORT's shapes are unknown from there on, so the conv after it has no
    FLOPs to share; the warning says so instead of a bare "0.0% of the FLOPs"."""
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.zeros((8, 8, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Conv", ["r", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "runtime-shape", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512]),
                                                        helper.make_tensor_value_info("shape", TensorProto.INT64, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "rs.onnx")
    assert main(["predict", "--kernels", str(_predictor(tmp_path)), str(tmp_path / "rs.onnx"), "--json"]) == 0
    captured = capsys.readouterr()
    unpriced = {u["op"]: u for u in json.loads(captured.out)["unpriced"]}
    assert unpriced["Conv"]["shape_known"] is False and unpriced["Conv"]["reason"] == "a convolution of unknown shape"
    assert "of unknown shape, so more than" in captured.err


def test_a_convnext_block_linear_over_pixels_gelu_and_layernorm_are_priced_as_ort_runs_them(tmp_path):
    """torch's Linear on (N, H, W, C) is a MatMul over H x W rows plus a bias Add (ORT: one Gemm), its exact GELU
    five nodes (ORT: one Gelu), its LayerNorm one LayerNormalization: detected as ORT's optimised graph has them,
    the Linear priced as the 1x1 conv over as many pixels (not as one row), element-wise kernels on channels-last
    tensors with their true element counts, and the committed predictor prices every kernel."""
    import torch

    from hwnas.kernels.onnx_profile import optimised_ops
    from hwnas.kernels.predictor import KernelPredictor

    class Block(torch.nn.Module):  # ConvNeXt's block, channels last between the permutes
        def __init__(self, c=32):
            super().__init__()
            self.dw = torch.nn.Conv2d(c, c, 7, padding=3, groups=c)
            self.norm = torch.nn.LayerNorm(c, eps=1e-6)
            self.up, self.act, self.down = torch.nn.Linear(c, 4 * c), torch.nn.GELU(), torch.nn.Linear(4 * c, c)

        def forward(self, x):
            y = self.norm(self.dw(x).permute(0, 2, 3, 1))
            return x + self.down(self.act(self.up(y))).permute(0, 3, 1, 2)

    path = tmp_path / "block.onnx"
    torch.onnx.export(Block().eval(), torch.zeros(1, 32, 14, 14), str(path), dynamo=False, opset_version=17)
    found = detect_onnx(read_model(path))
    specs = [k.spec for k in found.kernels]
    assert not found.unpriced
    assert [s for s in specs if s["type"] in ("fc", "gelu", "layernorm")] == [
        {"type": "layernorm", "h": 14, "c": 32}, {"type": "fc", "cin": 32, "cout": 128, "rows": 196},
        {"type": "gelu", "h": 14, "c": 128}, {"type": "fc", "cin": 128, "cout": 32, "rows": 196}]
    ops = optimised_ops(path)
    assert ops.count("Gemm") == 2 and ops.count("Gelu") == 1 and ops.count("LayerNormalization") == 1
    assert "MatMul" not in ops and "Erf" not in ops
    assert found.total_flops > 2 * 2 * 196 * 32 * 128  # the two Linears over 196 rows each
    predictor = KernelPredictor.load(Path(__file__).resolve().parents[1] / "predictors" / "kernels"
                                     / "amd-epyc-2c-onnxruntime-fp32-t1.json")
    priced = predictor.predict_graph(read_model(path))
    assert not priced.unpriced and {"gelu", "layernorm", "fc"} <= {k.type for k in priced.kernels}
    up = {"type": "fc", "cin": 32, "cout": 128, "rows": 196}
    conv = {"type": "conv", "h": 14, "cin": 32, "cout": 128, "k": 1, "s": 1, "groups": 1, "act": "none"}
    assert predictor.price(up)[0] == pytest.approx(predictor.price(conv)[0])
    assert predictor.price(up)[0] > 20 * predictor.price({"type": "fc", "cin": 32, "cout": 128})[0]
    from hwnas.kernels.onnx_kernels import kernel_model  # the sampled kernels: the same kernel, ORT's same op

    for spec, op in (({"type": "gelu", "h": 6, "c": 40}, "Gelu"), ({"type": "layernorm", "h": 6, "c": 40},
                                                                   "LayerNormalization")):
        onnx.save(kernel_model(spec), tmp_path / "kernel.onnx")
        assert [k.spec for k in detect_onnx(read_model(tmp_path / "kernel.onnx")).kernels] == [spec]
        assert optimised_ops(tmp_path / "kernel.onnx") == [op]


def test_attention_is_read_with_its_shapes_and_its_products_priced(tmp_path):
    """nn.MultiheadAttention as torchvision's ViT uses it: its head reshapes (Equal, Where, Mod on shapes) fold, so
    every shape is known; the projections are Linears over the tokens (a Gemm over 16 rows), the two products of
    activations per head ``matmul`` kernels (ORT: FusedMatMul), priced as 1x1 convs and flagged as never sampled."""
    import torch

    from hwnas.kernels.onnx_profile import optimised_ops
    from hwnas.kernels.predictor import KernelPredictor

    class Attention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = torch.nn.MultiheadAttention(32, 4, batch_first=True)

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    path = tmp_path / "attention.onnx"
    torch.onnx.export(Attention().eval(), torch.zeros(1, 16, 32), str(path), dynamo=False, opset_version=17)
    graph = read_model(path)
    assert all(n.out_shape is not None for n in graph.nodes)
    found = detect_onnx(graph)
    products = [k.spec for k in found.kernels if k.spec["type"] in ("fc", "matmul")]
    assert products == [{"type": "fc", "cin": 32, "cout": 96, "rows": 16},
                        {"type": "matmul", "batch": 4, "m": 16, "k": 8, "n": 16},
                        {"type": "matmul", "batch": 4, "m": 16, "k": 16, "n": 8},
                        {"type": "fc", "cin": 32, "cout": 32, "rows": 16}]
    ops = optimised_ops(path)
    assert ops.count("Gemm") == 2 and ops.count("FusedMatMul") == 2
    assert {u.node.op for u in found.unpriced} == {"Gather"}  # ORT: one Split of q, k, v
    predictor = KernelPredictor.load(Path(__file__).resolve().parents[1] / "predictors" / "kernels"
                                     / "amd-epyc-2c-onnxruntime-fp32-t1.json")
    priced = [k for k in predictor.predict_graph(graph).kernels if k.type == "matmul"]
    assert len(priced) == 2 and all(k.ms > 0 and any("never sampled" in o for o in k.out_of_range) for k in priced)


def test_torch_exported_pads_are_read_and_folded_as_ort_does(tmp_path):
    """torch writes F.pad's pads as shape arithmetic (ConstantOfShape, Reshape, Transpose ...), which the reader
    folds as ORT does: every shape is known, the zero pad vanishes into its conv, the 0.5 pad stays, as in ORT's
    optimised graph, and nothing is unpriced."""
    import torch

    from hwnas.kernels.onnx_profile import optimised_ops

    model = torch.nn.Sequential(torch.nn.ZeroPad2d(1), torch.nn.Conv2d(8, 8, 3), torch.nn.ConstantPad2d(1, 0.5),
                                torch.nn.Conv2d(8, 8, 3)).eval()
    path = tmp_path / "pads.onnx"
    torch.onnx.export(model, torch.zeros(1, 8, 16, 16), str(path), dynamo=False, opset_version=17)
    graph = read_model(path)
    assert [(n.op, n.out_shape, n.attrs.get("value")) for n in graph.nodes if n.op == "Pad"] == [
        ("Pad", (1, 8, 18, 18), 0.0), ("Pad", (1, 8, 18, 18), 0.5)]
    found = detect_onnx(graph)
    assert not found.unpriced
    assert [k.spec["type"] for k in found.kernels] == ["conv", "reorder_out", "pad", "conv", "reorder_out"]
    assert [k.spec["h"] for k in found.kernels if k.spec["type"] == "conv"] == [16, 18]
    assert optimised_ops(path) == ["Conv", "ReorderOutput", "Pad", "Conv", "ReorderOutput"]


def test_a_dilated_conv_is_priced_as_its_undilated_shape_and_flagged(tmp_path):
    """ORT ran dilation 2 at 0.92-1.00x the time of dilation 1 (5 convs alone, docs/predictors.md): priced as the
    undilated conv, flagged as outside the sampled range, never unpriced."""
    from hwnas.kernels.onnx_kernels import kernel_model
    from hwnas.kernels.predictor import KernelPredictor

    spec = {"type": "dwconv", "h": 14, "c": 672, "k": 5, "s": 1, "act": "none"}
    predictor = KernelPredictor.load(Path(__file__).resolve().parents[1] / "predictors" / "kernels"
                                     / "amd-epyc-2c-onnxruntime-fp32-t1.json")
    priced = {}
    for d in (1, 2):
        path = tmp_path / f"d{d}.onnx"
        onnx.save(kernel_model({**spec, "dilation": d} if d > 1 else spec), path)
        result = predictor.predict_graph(read_model(path))
        assert not result.unpriced
        (conv,) = [k for k in result.kernels if k.type == "dwconv"]
        assert conv.spec.get("dilation", 1) == d
        priced[d] = (conv.ms, conv.out_of_range)
    assert priced[2][0] == pytest.approx(priced[1][0])
    assert priced[1][1] == [] and any("dilation=2" in r for r in priced[2][1])
