"""Parity check: the same input through PyTorch, ONNX Runtime and LiteRT.

``parity(ops, model, onnx_path=None, tflite_path=None, x=None, seed=0) -> dict``
    Runs ``model`` (eval mode) on ``x`` (NCHW float32; random normal when None)
    and each given exported file, and returns the largest absolute difference
    to PyTorch per runtime, e.g. ``{"onnxruntime": 2e-7, "tflite": 3e-7}``.
    TFLite models take NHWC input; int8 models are fed quantized input and
    their output is dequantized, so their difference shows quantization error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hwnas.export.onnx_export import input_shape
from hwnas.ops import OpSpec


def run_onnx(path: str | Path, x: np.ndarray) -> np.ndarray:
    """Run a .onnx model (batch 1) on each row of ``x`` with ONNX Runtime, one thread; the outputs stacked."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def run_tflite(path: str | Path, x: np.ndarray) -> np.ndarray:
    """Run a .tflite model (batch 1) on each row of NCHW input ``x``; returns NCHW (or (N, C)) float output.

    A quantized input is fed quantized values and a quantized output is dequantized."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    data = x.transpose(0, 2, 3, 1) if x.ndim == 4 else x
    if inp["dtype"] != np.float32:
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        data = np.clip(np.round(data / scale + zero), info.min, info.max)
    rows = []
    for row in data.astype(inp["dtype"]):
        interp.set_tensor(inp["index"], row[None])
        interp.invoke()
        rows.append(interp.get_tensor(out["index"]))
    y = np.concatenate(rows)
    if out["dtype"] != np.float32:
        scale, zero = out["quantization"]
        y = (y.astype(np.float32) - zero) * scale
    return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y


def parity(ops: list[OpSpec], model: torch.nn.Module, onnx_path: str | Path | None = None,
           tflite_path: str | Path | None = None, x: np.ndarray | None = None, seed: int = 0) -> dict[str, float]:
    """Max abs difference of each exported file's output to PyTorch's on the same input."""
    if x is None:
        x = np.random.default_rng(seed).standard_normal(input_shape(ops)).astype(np.float32)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    model.train(was_training)
    diffs = {}
    if onnx_path is not None:
        diffs["onnxruntime"] = float(np.abs(run_onnx(onnx_path, x) - ref).max())
    if tflite_path is not None:
        diffs["tflite"] = float(np.abs(run_tflite(tflite_path, x) - ref).max())
    return diffs
