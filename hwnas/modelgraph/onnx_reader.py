"""``.onnx`` -> :class:`hwnas.modelgraph.Graph`, with ONNX shape inference.

Constants are initializers, Constant nodes, and the outputs of nodes whose
inputs are all constants (e.g. Identity of a shared weight): such nodes are
folded away, as ONNX Runtime does. A symbolic batch dimension counts as 1.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hwnas.errors import HwnasError
from hwnas.modelgraph import Graph, Node

LAYOUT = {"Reshape": "reshape", "Flatten": "reshape", "Squeeze": "reshape", "Unsqueeze": "reshape",
          "Transpose": "transpose"}
PASS_THROUGH = ("Identity", "Dropout")


def _shape(value_info) -> tuple[int, ...] | None:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    if dims and dims[0] is None:
        dims[0] = 1  # symbolic batch
    return None if any(d is None for d in dims) else tuple(dims)


def read_onnx(path: Path) -> Graph:
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
        model = onnx.shape_inference.infer_shapes(model)
        if any(_shape(vi) is None for vi in model.graph.value_info):
            model = onnx.shape_inference.infer_shapes(fold_shape_arithmetic(model))
    except Exception as exc:  # protobuf decode errors, shape inference errors
        raise HwnasError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node:  # an empty file (or a few bytes) parses as an empty model
        raise HwnasError(f"{path}: not a readable ONNX model (it holds no graph nodes; {path.stat().st_size} bytes)")
    graph = model.graph
    shapes: dict[str, tuple | None] = {}
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        shapes[vi.name] = _shape(vi)
    values: dict[str, np.ndarray] = {}
    for init in graph.initializer:
        values[init.name] = numpy_helper.to_array(init)
        shapes[init.name] = tuple(init.dims)
    constants = set(values)
    activations = {vi.name for vi in graph.input if vi.name not in constants}

    nodes = []
    for index, node in enumerate(graph.node):
        attrs_in = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        ins = [i for i in node.input if i]
        act_in = [i for i in ins if i in activations]
        if not act_in:  # a constant: Constant, Identity of a weight, shape arithmetic
            if node.op_type == "Constant" and "value" in attrs_in:
                values[node.output[0]] = numpy_helper.to_array(attrs_in["value"])
            elif node.op_type in PASS_THROUGH and ins and ins[0] in values:
                values[node.output[0]] = values[ins[0]]
            constants.update(node.output)
            continue
        activations.update(o for o in node.output if o)
        out_shape = shapes.get(node.output[0]) if node.output else None
        kind, attrs = _classify(node.op_type, attrs_in, ins, act_in, out_shape, shapes, values)
        if node.op_type == "Pad":
            attrs["value"] = _pad_value(node, attrs_in, values)
        nodes.append(Node(index, node.op_type, node.name or node.output[0], kind, act_in,
                          [o for o in node.output if o], shapes.get(act_in[0]), out_shape, attrs))
    return Graph(path, "onnx", "fp32", nodes, [vi.name for vi in graph.input if vi.name not in constants],
                 [vi.name for vi in graph.output])


SHAPE_OPS = ("Shape", "Gather", "Add", "Sub", "Mul", "Div", "Unsqueeze", "Squeeze", "Concat", "Cast", "Slice",
             "Constant", "Identity", "Floor", "Ceil",
             "ConstantOfShape", "Reshape", "Transpose",  # how torch writes F.pad's pads
             "Equal", "Where", "Mod", "Max", "Min")  # and nn.MultiheadAttention's head reshapes
SHAPE_VALUES = 64  # at most this many numbers in each input of a folded node (and a ConstantOfShape's output)


def fold_shape_arithmetic(model):
    """``model`` with its arithmetic on static shapes (Shape, Gather, Div ... as a traced ``x.size()`` or
    ``chunk`` writes it) computed into initializers, as ONNX Runtime folds it when it loads the model; ONNX
    shape inference alone leaves what follows (e.g. a Slice's output) without a shape."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    values = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    dims = {vi.name: _shape(vi) for vi in list(graph.input) + list(graph.value_info)}
    folded, keep = set(), []
    for node in graph.node:
        ins = [i for i in node.input if i]
        try:
            if node.op_type == "Shape" and dims.get(ins[0]) is not None and not node.attribute:
                outs = [np.array(dims[ins[0]], np.int64)]
            elif node.op_type in SHAPE_OPS and all(i in values for i in ins) and \
                    all(values[i].size <= SHAPE_VALUES for i in ins):
                outs = ReferenceEvaluator(node).run(None, {i: values[i] for i in ins})
                if node.op_type == "ConstantOfShape" and np.asarray(outs[0]).size > SHAPE_VALUES:  # a tensor
                    keep.append(node)
                    continue
            else:
                keep.append(node)
                continue
        except Exception:  # an op the reference cannot run here: leave the node to shape inference
            keep.append(node)
            continue
        values.update(zip(node.output, (np.asarray(o) for o in outs)))
        folded.update(node.output)
    needed = {i for n in keep for i in n.input if i in folded}
    del graph.node[:]
    graph.node.extend(keep)
    graph.initializer.extend(numpy_helper.from_array(values[t], t) for t in sorted(needed))
    return model


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _scalar(values: dict, name: str | None) -> float | None:
    if not name or name not in values or values[name].size != 1:
        return None
    return float(values[name].reshape(()))


def _pad_value(node, attrs: dict, values: dict) -> float | None:
    """A Pad's fill value: its third input (opset >= 11; empty means 0) or its ``value`` attribute (opset < 11);
    None when that input is not a constant."""
    if len(node.input) > 2 and node.input[2]:
        return _scalar(values, node.input[2])
    return float(attrs.get("value", 0.0))


def _classify(op: str, attrs: dict, ins: list[str], act_in: list[str], out_shape: tuple | None, shapes: dict,
              values: dict) -> tuple[str, dict]:
    """The normalised kind and attributes of one ONNX node."""
    in_shape = shapes.get(act_in[0])
    if op == "Conv" and len(ins) > 1 and shapes.get(ins[1]) and in_shape and len(in_shape) == 4:
        weight = shapes[ins[1]]  # (O, I/g, kh, kw)
        kernel = tuple(attrs.get("kernel_shape", weight[2:]))
        return "conv", {"kernel": kernel, "stride": tuple(attrs.get("strides", (1, 1))),
                        "groups": int(attrs.get("group", 1)), "dilation": tuple(attrs.get("dilations", (1, 1))),
                        "act": "none"}
    if op == "BatchNormalization":
        return "bn", {}
    if op == "Relu":
        return "act", {"act": "relu"}
    if op == "Clip":
        low = _scalar(values, ins[1] if len(ins) > 1 else None) if "min" not in attrs else attrs["min"]
        high = _scalar(values, ins[2] if len(ins) > 2 else None) if "max" not in attrs else attrs["max"]
        if low == 0.0 and high == 6.0:
            return "act", {"act": "relu6"}
        if low == 0.0 and high is None:
            return "act", {"act": "relu"}
        return "other", {}
    if op == "Add":
        return ("add" if len(act_in) == 2 else "bias"), {"act": "none"}
    if op in ("GlobalAveragePool", "ReduceMean", "AveragePool") and in_shape and len(in_shape) == 4:
        whole = op != "AveragePool" or tuple(attrs.get("kernel_shape", ())) == tuple(in_shape[2:])
        if op == "ReduceMean":
            axes = attrs.get("axes", values[ins[1]].tolist() if len(ins) > 1 and ins[1] in values else [])
            whole = sorted(int(a) % 4 for a in axes) == [2, 3]
        return ("pool" if whole and out_shape is not None else "other"), {}
    if op == "Gemm" and len(ins) > 1 and shapes.get(ins[1]):
        weight = shapes[ins[1]]
        c_out, c_in = (weight[0], weight[1]) if attrs.get("transB", 0) else (weight[1], weight[0])
        rows = (in_shape[1] if attrs.get("transA", 0) else in_shape[0]) if in_shape and len(in_shape) == 2 else 1
        return "linear", {"c_in": c_in, "c_out": c_out, "act": "none", "rows": rows}
    if op == "MatMul" and len(ins) > 1 and ins[1] not in act_in and shapes.get(ins[1]) and len(shapes[ins[1]]) == 2:
        c_in, c_out = shapes[ins[1]]
        rows = math.prod(in_shape[:-1]) if in_shape else 1  # nn.Linear on (N, H, W, C) or (N, tokens, C)
        return "linear", {"c_in": c_in, "c_out": c_out, "act": "none", "rows": rows}
    if op in ("MaxPool", "AveragePool"):  # a local window (hwnas.kernels prices it)
        return "other", {"kernel": tuple(attrs.get("kernel_shape", ())), "stride": tuple(attrs.get("strides", (1, 1)))}
    if op == "Pad":
        return "pad", {"mode": _text(attrs.get("mode", "constant"))}
    if op in ("Resize", "Upsample"):  # Upsample (opset < 10) maps output to input pixels as "asymmetric" does
        default = "half_pixel" if op == "Resize" else "asymmetric"
        return "other", {"mode": _text(attrs.get("mode", "nearest")),
                         "coordinates": _text(attrs.get("coordinate_transformation_mode", default))}
    if op in LAYOUT:
        return LAYOUT[op], {}
    if op in PASS_THROUGH:
        return "identity", {}
    if op == "LayerNormalization":
        return "other", {"axis": int(attrs.get("axis", -1))}
    return "other", {}
