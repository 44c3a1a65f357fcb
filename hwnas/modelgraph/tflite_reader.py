"""``.tflite`` -> :class:`hwnas.modelgraph.Graph`, through the flatbuffer schema shipped with ai-edge-litert.

Only the first subgraph is read. Tensors NHWC are reported NCHW. A node whose
inputs are all constants (e.g. DEQUANTIZE of fp16 weights) is folded away: its
outputs count as constants too.
"""

from __future__ import annotations

from pathlib import Path

from hwnas.errors import HwnasError
from hwnas.modelgraph import Graph, Node

FUSED_ACT = {0: "none", 1: "relu", 3: "relu6"}
LAYOUT = {"RESHAPE": "reshape", "SQUEEZE": "reshape", "EXPAND_DIMS": "reshape", "TRANSPOSE": "transpose"}


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _names(enum) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_") and isinstance(v, int)}


def _nchw(shape) -> tuple[int, ...] | None:
    if shape is None:
        return None
    shape = tuple(int(d) for d in shape)
    return (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else shape


def _act(options, act_names: dict[int, str]) -> str:
    code = getattr(options, "fusedActivationFunction", 0) if options is not None else 0
    return FUSED_ACT.get(code, act_names.get(code, str(code)).lower())


def read_tflite(path: Path) -> Graph:
    schema = _schema()
    try:
        model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    except Exception as exc:  # a damaged flatbuffer raises anything from struct errors to IndexError
        raise HwnasError(f"{path}: not a readable TFLite model ({type(exc).__name__}: {exc})") from None
    if not model.subgraphs:
        raise HwnasError(f"{path}: the TFLite model has no subgraph")
    graph = model.subgraphs[0]
    op_names, act_names = _names(schema.BuiltinOperator), _names(schema.ActivationFunctionType)
    tensors = graph.tensors

    def tname(i: int) -> str:
        raw = tensors[i].name
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)

    def shape(i: int):
        return tuple(int(d) for d in tensors[i].shape) if tensors[i].shape is not None else None

    activations = {int(i) for i in graph.inputs}
    nodes, types = [], {"act": set(), "weight": set()}
    for index, op in enumerate(graph.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = op_names.get(builtin, f"BUILTIN_{builtin}") if builtin != schema.BuiltinOperator.CUSTOM else \
            f"CUSTOM:{(code.customCode or b'').decode('utf-8', 'replace')}"
        ins = [int(i) for i in op.inputs if i >= 0]
        outs = [int(i) for i in op.outputs]
        act_in = [i for i in ins if i in activations]
        if ins and not act_in:  # computed from constants only (e.g. fp16 weights dequantized once)
            types["weight"].update(tensors[i].type for i in ins)
            continue
        activations.update(outs)
        opts = op.builtinOptions
        in_shape = shape(act_in[0]) if act_in else None
        out_shape = shape(outs[0]) if outs else None
        kind, attrs = "other", {}
        weights = [i for i in ins if i not in activations]
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D") and in_shape and len(in_shape) == 4 and weights:
            filt = shape(weights[0])  # conv (O, kh, kw, I/g); depthwise (1, kh, kw, C*m)
            groups = in_shape[3] if name == "DEPTHWISE_CONV_2D" else in_shape[3] // max(1, filt[3])
            kind = "conv"
            attrs = {"kernel": (filt[1], filt[2]), "stride": (opts.strideH, opts.strideW), "groups": groups,
                     "dilation": (opts.dilationHFactor, opts.dilationWFactor), "act": _act(opts, act_names)}
            types["act"].add(tensors[act_in[0]].type)
            types["weight"].add(tensors[weights[0]].type)
        elif name in ("PAD", "PADV2"):
            kind = "pad"
        elif name in ("RELU", "RELU6"):
            kind, attrs = "act", {"act": name.lower()}
        elif name == "ADD":
            kind = "add" if len(act_in) == 2 else "bias"
            attrs = {"act": _act(opts, act_names)}
        elif name in ("MEAN", "AVERAGE_POOL_2D") and in_shape and len(in_shape) == 4 and out_shape:
            n_out = 1
            for d in out_shape:
                n_out *= d
            whole = name == "MEAN" or (opts.filterHeight, opts.filterWidth) == (in_shape[1], in_shape[2])
            if whole and n_out == in_shape[3]:
                kind = "pool"
        if name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):  # window and stride (hwnas.kernels prices local pooling)
            attrs = {"kernel": (opts.filterHeight, opts.filterWidth), "stride": (opts.strideH, opts.strideW)}
        if name == "FULLY_CONNECTED" and weights:
            w = shape(weights[0])  # (out, in)
            kind, attrs = "linear", {"c_in": w[1], "c_out": w[0], "act": _act(opts, act_names)}
            types["act"].add(tensors[act_in[0]].type)
            types["weight"].add(tensors[weights[0]].type)
        elif name in LAYOUT:
            kind = LAYOUT[name]
        nodes.append(Node(index, name, tname(outs[0]) if outs else name, kind,
                          [tname(i) for i in act_in], [tname(i) for i in outs], _nchw(in_shape), _nchw(out_shape),
                          attrs))
    return Graph(path, "tflite", _dtype(types, schema.TensorType), nodes,
                 [tname(int(i)) for i in graph.inputs], [tname(int(i)) for i in graph.outputs])


def _dtype(types: dict[str, set], codes) -> str:
    """fp32, int8 (integer activations), dynamic (int8 weights, float activations) or fp16 weights."""
    ints = {codes.INT8, codes.UINT8}
    if types["act"] & ints:
        return "int8"
    if types["weight"] & ints:
        return "dynamic"
    if types["weight"] & {codes.FLOAT16}:
        return "fp16"
    return "fp32"
