"""ONNX export of a PyTorch network built from operators.

``export_onnx(ops, model=None, path="model.onnx", opset=17) -> Path``
    Export ``model`` (default: ``hwnas.builder.build_network(ops)`` with random
    weights) in eval mode with the TorchScript exporter (``dynamo=False``: the
    dynamo exporter imports triton, which segfaults next to TensorFlow here and
    is much slower). Input name ``input`` of shape (1, C, H, W) (or (1, C) when
    the first op is ``linear``), output name ``output``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from hwnas.ops import OpSpec

OPSET = 17


def input_shape(ops: list[OpSpec]) -> tuple[int, ...]:
    """NCHW input shape (batch 1) of a network that starts with ``ops[0]``."""
    first = next(op for op in ops if op.kind != "zero")
    return (1, first.c_in) if first.kind == "linear" else (1, first.c_in, first.h, first.w)


def export_onnx(ops: list[OpSpec], model: torch.nn.Module | None = None, path: str | Path = "model.onnx",
                opset: int = OPSET) -> Path:
    """Write ``model`` (or a randomly initialized network of ``ops``) to ``path`` as ONNX."""
    if model is None:
        from hwnas.builder import build_network

        model = build_network(ops)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(input_shape(ops)),), str(path), dynamo=False,
                              opset_version=opset, input_names=["input"], output_names=["output"])
    finally:
        model.train(was_training)
    return path
