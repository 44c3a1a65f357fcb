"""Export parity: ONNX Runtime and LiteRT outputs match PyTorch for the operator kinds of the spaces.

One conversion worker (one TensorFlow import, in a subprocess) serves the whole module.
"""

import numpy as np
import pytest
import torch

from hwnas.builder import build_network
from hwnas.errors import HwnasError
from hwnas.export import TFLiteConverter, export_onnx, export_tflite, parity
from hwnas.export.tflite import _save_state
from hwnas.ops import OpSpec
from hwnas.runners import get_runner

# stride 2, k7, grouped ir with shuffle, skip projection, residual mbconv, expand-1 mbconv, pool, linear
NETWORK = [
    OpSpec("conv", 3, 16, 15, 15, kernel=3, stride=2, act="relu6"),
    OpSpec("mbconv", 16, 24, 8, 8, kernel=7, stride=2, expand=6, act="relu6"),
    OpSpec("ir", 24, 24, 4, 4, kernel=5, stride=1, expand=3, groups=2, act="relu"),
    OpSpec("skip", 24, 32, 4, 4, stride=2, act="relu"),
    OpSpec("mbconv", 32, 32, 2, 2, kernel=3, stride=1, expand=1, act="relu6"),
    OpSpec("ir", 32, 32, 2, 2, kernel=3, stride=1, expand=1, groups=1, act="relu"),
    OpSpec("conv", 32, 64, 2, 2, kernel=1, act="relu6"),
    OpSpec("pool", 64, 64, 2, 2, act="none"),
    OpSpec("linear", 64, 10, 1, 1, act="none"),
]
INT8_OP = OpSpec("mbconv", 8, 8, 8, 8, kernel=3, stride=1, expand=3, act="relu6")


def randomized(ops):
    """A network with non-trivial BN statistics, so that BN conversion errors would show."""
    torch.manual_seed(0)
    model = build_network(ops)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    model = randomized(NETWORK)
    weights = _save_state(model.state_dict(), tmp / "w.safetensors")
    with TFLiteConverter(tmp / "log.txt") as conv:
        fp32 = conv.convert(NETWORK, tmp / "net.tflite", "fp32", weights=weights)
        int8_model = randomized([INT8_OP])
        int8 = conv.convert([INT8_OP], tmp / "op8.tflite", "int8", int8_io=True,
                            weights=_save_state(int8_model.state_dict(), tmp / "w8.safetensors"))
        np.save(tmp / "rep.npy", np.zeros((2, 3, 4, 4), np.float32))
        with pytest.raises(HwnasError, match="representative data has shape"):
            conv.convert([INT8_OP], tmp / "x.tflite", "int8", representative=str(tmp / "rep.npy"))
        with pytest.raises(HwnasError, match="conversion .* failed"):
            conv.convert([OpSpec("conv", 3, 8, 8, 8)], tmp / "bad.tflite", "fp32", weights=str(tmp / "nope"))
        again = conv.convert(NETWORK[:1], tmp / "first.tflite", "fp32")  # the worker survives a failed job
    return {"model": model, "fp32": fp32, "int8": int8, "int8_model": int8_model, "first": again, "tmp": tmp}


def test_onnx_and_tflite_match_pytorch(converted):
    onnx_path = export_onnx(NETWORK, converted["model"], converted["tmp"] / "net.onnx")
    diffs = parity(NETWORK, converted["model"], onnx_path, converted["fp32"])
    assert diffs["onnxruntime"] < 1e-4 and diffs["tflite"] < 1e-4, diffs
    assert not converted["model"].training


def test_single_ops_onnx_parity(tmp_path):
    for op in NETWORK[:4]:
        model = randomized([op])
        path = export_onnx([op], model, tmp_path / "op.onnx")
        assert parity([op], model, onnx_path=path)["onnxruntime"] < 1e-4, op


def test_tflite_parity_detects_wrong_weights(converted):
    other = randomized(NETWORK)
    with torch.no_grad():
        other[1].body[1][0].weight.mul_(1.5)
    assert parity(NETWORK, other, tflite_path=converted["fp32"])["tflite"] > 1e-3


def test_int8_op_has_int8_io_and_is_close_to_pytorch(converted):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(converted["int8"]))
    assert interp.get_input_details()[0]["dtype"] == np.int8
    assert interp.get_output_details()[0]["dtype"] == np.int8
    diff = parity([INT8_OP], converted["int8_model"], tflite_path=converted["int8"])["tflite"]
    assert 0 < diff < 0.5  # quantization error, not a wrong graph


def test_tflite_runner_times_converted_model_with_and_without_xnnpack(converted):
    for xnnpack in (True, False):
        runner = get_runner("tflite", xnnpack=xnnpack)
        timing = runner.time(converted["first"])
        assert timing.median_ms > 0 and timing.repeats == 5 and len(timing.samples) == 5
        assert runner.describe()["xnnpack"] is xnnpack


def test_export_tflite_one_shot_with_representative_data(tmp_path):
    op = OpSpec("conv", 3, 8, 8, 8, kernel=3, stride=2)
    model = randomized([op])
    rep = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    path = export_tflite([op], model.state_dict(), tmp_path / "c.tflite", "int8", representative=rep)
    assert parity([op], model, tflite_path=path)["tflite"] < 0.2  # int8 quantization error only
    with pytest.raises(HwnasError, match="unknown quantization"):
        export_tflite([op], None, tmp_path / "e.tflite", "int4")
