"""Model files (TFLite, ONNX) read as a list of kernels, for predicting their latency.

``read_model(path) -> Graph`` reads a ``.tflite`` flatbuffer (the schema that
ships with ai-edge-litert) or an ``.onnx`` file (with ONNX shape inference) into
the same simple form: :class:`Node` objects in execution order, each with its
activation inputs and outputs (constant tensors such as weights left out), the
shapes of its first input and its output in NCHW order (NC for vectors), and a
normalised ``kind`` with the attributes that kind needs:

==========  ==================================================================
``conv``    ``kernel``, ``stride``, ``groups``, ``dilation``, ``act`` (fused:
            none, relu, relu6, or the name of another function)
``pad``     explicit padding (its output feeds a convolution)
``act``     ``act``: relu or relu6 (a separate activation node)
``bn``      batch normalisation not folded into the convolution
``add``     element-wise sum of two activations
``pool``    global average pooling (output 1 x 1)
``linear``  fully connected layer (``act`` fused, as for conv)
``bias``    a constant added to an activation (the bias of a MatMul)
``reshape`` / ``transpose``: layout only (flatten, channel shuffle)
``identity``: passes its input on (Identity, Dropout at inference)
``other``   anything else; never priced
==========  ==================================================================

:mod:`hwnas.modelgraph.recognise` turns a Graph into hwnas operators.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hwnas.errors import HwnasError

FORMATS = {".tflite": "tflite", ".onnx": "onnx"}


@dataclass
class Node:
    """One kernel of a model file."""

    index: int  # position in the file's list of operators
    op: str  # the file's own operator name (CONV_2D, Conv, ...)
    name: str  # a readable name: the node's or its output tensor's
    kind: str  # normalised kind (see the module docstring)
    inputs: list[str]  # activation tensors only
    outputs: list[str]
    in_shape: tuple[int, ...] | None  # first activation input, NCHW / NC
    out_shape: tuple[int, ...] | None
    attrs: dict = field(default_factory=dict)

    def describe(self) -> str:
        return f"node {self.index} {self.op} {self.name!r}"


@dataclass
class Graph:
    """A model file's kernels in execution order."""

    path: Path
    format: str  # tflite | onnx
    dtype: str  # fp32 | int8 | dynamic (weights only) | fp16
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]


def model_format(path: str | Path) -> str | None:
    """``"tflite"`` / ``"onnx"`` for a model file name, None for anything else (e.g. an architecture JSON)."""
    return FORMATS.get(Path(path).suffix.lower())


def read_model(path: str | Path) -> Graph:
    """The kernels of a ``.tflite`` or ``.onnx`` file; :class:`HwnasError` naming the file when it cannot be read."""
    path = Path(path)
    fmt = model_format(path)
    if fmt is None:
        raise HwnasError(f"{path}: expected a .tflite or .onnx model file")
    if not path.is_file():
        raise HwnasError(f"{path}: no such model file")
    if fmt == "tflite":
        from hwnas.modelgraph.tflite_reader import read_tflite

        return read_tflite(path)
    from hwnas.modelgraph.onnx_reader import read_onnx

    return read_onnx(path)
