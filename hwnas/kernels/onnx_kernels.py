"""Sampled kernel specs (:mod:`hwnas.kernels.sample`) as one-kernel ONNX models, built with ``onnx.helper``.

No exporter is involved (no torch, no TensorFlow): each spec becomes a graph
with one float input (NCHW, batch 1), the kernel's node(s) with random
constant weights, and one output, as ``torch.onnx.export`` writes the same
layer in eval mode (batch norm already folded into the convolution; relu6 as
``Clip(0, 6)``; swish as ``Sigmoid`` then ``Mul``). ONNX-only kernel types,
sampled by :func:`sample_onnx_specs`:

==============  ==============================================================
hardsigmoid     ``h``, ``c`` (the squeeze-excite gate of MobileNetV3)
swish           ``h``, ``c``: ``Sigmoid`` then ``Mul`` (ORT fuses them: ``QuickGelu``)
bn              ``h``, ``c``: a batch norm not after a convolution (DenseNet); built as the 1 x 1
                depthwise convolution ORT turns it into inside a network
reorder_in/out  ``h``, ``c``: ORT's NCHW <-> NCHWc layout change (``com.microsoft.nchwc``
                ``ReorderInput`` / ``ReorderOutput``), inserted where a blocked-layout kernel
                meets one that is not (:mod:`hwnas.kernels.onnx_detect`)
transpose       ``h``, ``c``: channel shuffle, (1, g, c/g, h, h) -> (1, c/g, g, h, h)
split           ``h``, ``c`` (input), ``n`` outputs along the channels
gelu            ``h``, ``c``: torch's exact GELU, ``x * (erf(x / sqrt 2) + 1) * 0.5`` (ORT fuses it: ``Gelu``)
layernorm       ``h``, ``c``: ``LayerNormalization`` over the last axis of (1, h, h, c), as a
                channels-last ``nn.LayerNorm`` (ConvNeXt) or a transformer's over its tokens
==============  ==============================================================
"""

from __future__ import annotations

import math
import random

import numpy as np

from hwnas.kernels.sample import MAX_ELEMS, draw_spec, nchwc_block, sample_specs

OPSET = 17
NCHWC = "com.microsoft.nchwc"
# kernel type -> sampled configurations (ONNX Runtime; ``dynreshape`` is a Keras pattern). Types added later come
# last (pad, resize, softmax; then gelu, layernorm), so the draws before them are those of the first profiling
ONNX_COUNTS = {"conv": 110, "conv1x1": 110, "dwconv": 90, "gconv": 25, "fc": 30, "maxpool": 20, "avgpool": 15,
               "mean": 25, "add": 20, "mul": 20, "mul_se": 20, "relu": 12, "relu6": 10, "hardswish": 12,
               "sigmoid": 12, "hardsigmoid": 12, "swish": 15, "bn": 15, "concat": 25, "transpose": 15,
               "split": 15, "reshape": 8, "reorder_in": 20, "reorder_out": 20, "empty": 1,
               "pad": 12, "resize": 24, "softmax": 4,  # softmax: 4 sizes only
               "gelu": 24, "layernorm": 24}
ONNX_ONLY = ("hardsigmoid", "swish", "bn", "transpose", "split", "reorder_in", "reorder_out", "gelu", "layernorm")


def _log_int(rng: random.Random, low: int, high: int) -> int:
    return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))


def _one_onnx(rng: random.Random, group: str) -> dict:
    if group not in ONNX_ONLY:
        spec = draw_spec(rng, group)
        if spec.get("type") in ("maxpool", "avgpool") and spec["h"] < spec["k"]:
            return {}  # no padding here: the window must fit (ORT crashes on an empty output)
        for key in ("c", "cin", "cout"):  # convolutions: channels in multiples of 8, as in every torchvision
            if spec.get("type") in ("conv", "dwconv") and spec.get(key, 3) > 3:  # network (ORT runs a depthwise
                spec[key] = max(8, spec[key] // 8 * 8)  # conv of 18 or 95 channels in another, slower layout)
        if spec.get("groups", 1) > 1 and (spec["cin"] % spec["groups"] or spec["cout"] % spec["groups"]):
            return {}
        if spec.get("type") in ("conv", "dwconv"):  # the conv alone: a fused activation other than relu is
            spec["act"] = "none"  # priced as its own element-wise kernel (hwnas.kernels.onnx_detect)
        if spec.get("type") == "resize":  # as torch exports F.interpolate: ORT's NCHWc Upsample in a network
            spec["mode"] = rng.choice(("nearest", "linear"))
            if spec["c"] % 4:  # a blocked layout change needs channels in multiples of 4: ORT's plain Resize
                spec["plain"] = True
        return spec
    h = _log_int(rng, 1, 112)
    c = max(8, _log_int(rng, 8, 2048) // 8 * 8)
    if h * h * c > MAX_ELEMS:
        return {}
    if group == "transpose":
        return {"type": "transpose", "h": h, "c": c, "g": 2}
    if group in ("reorder_in", "reorder_out"):
        return {"type": group, "h": h, "c": c}
    if group == "split":
        return {"type": "split", "h": h, "c": c, "n": 2}
    return {"type": group, "h": h, "c": c}


def sample_onnx_specs(seed: int = 0, counts: dict | None = None) -> list[dict]:
    """The sampled ONNX Runtime kernel specs (deterministic for a seed)."""
    return sample_specs(seed, counts or ONNX_COUNTS, draw=_one_onnx)


class GraphBuilder:
    """Nodes and random initializers of one small graph."""

    def __init__(self, seed: int):
        self.nodes, self.inits, self.rng, self.n = [], [], np.random.default_rng(seed), 0

    def const(self, array) -> str:
        from onnx import numpy_helper

        self.n += 1
        name = f"w{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, *shape) -> str:
        return self.const((self.rng.standard_normal(shape) * 0.1).astype(np.float32))

    def node(self, op: str, ins: list[str], n_out: int = 1, domain: str = "", **attrs) -> list[str]:
        from onnx import helper

        self.n += 1
        outs = [f"t{self.n}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, ins, outs, name=f"{op.lower()}{self.n}", domain=domain, **attrs))
        return outs

    def act(self, x: str, act: str) -> str:
        if act == "relu":
            return self.node("Relu", [x])[0]
        if act == "relu6":
            return self.node("Clip", [x, self.const(np.float32(0)), self.const(np.float32(6))])[0]
        if act == "hardswish":
            return self.node("HardSwish", [x])[0]
        if act == "sigmoid":
            return self.node("Sigmoid", [x])[0]
        if act == "hardsigmoid":
            return self.node("HardSigmoid", [x], alpha=1 / 6, beta=0.5)[0]
        if act == "swish":
            return self.node("Mul", [x, self.node("Sigmoid", [x])[0]])[0]
        return x


def _pads(k: int, dilation: int = 1) -> list[int]:
    return [dilation * (k // 2)] * 4


def add_kernel(b: GraphBuilder, spec: dict, x: str) -> str:
    t, h, c = spec["type"], spec.get("h", 1), spec.get("c", 1)
    d = spec.get("dilation", 1)  # detected in a network (hwnas.kernels.onnx_detect), never sampled
    if t == "conv":
        k, g = spec["k"], spec.get("groups", 1)
        y = b.node("Conv", [x, b.weight(spec["cout"], spec["cin"] // g, k, k), b.weight(spec["cout"])],
                   kernel_shape=[k, k], strides=[spec["s"]] * 2, pads=_pads(k, d), group=g, dilations=[d, d])[0]
        return b.act(y, spec.get("act", "none"))
    if t == "dwconv":
        k = spec["k"]
        y = b.node("Conv", [x, b.weight(c, 1, k, k), b.weight(c)], kernel_shape=[k, k], strides=[spec["s"]] * 2,
                   pads=_pads(k, d), group=c, dilations=[d, d])[0]
        return b.act(y, spec.get("act", "none"))
    if t == "fc":
        return b.node("Gemm", [x, b.weight(spec["cout"], spec["cin"]), b.weight(spec["cout"])], transB=1)[0]
    if t in ("maxpool", "avgpool"):
        return b.node("MaxPool" if t == "maxpool" else "AveragePool", [x], kernel_shape=[spec["k"]] * 2,
                      strides=[spec["s"]] * 2)[0]
    if t == "mean":
        return b.node("GlobalAveragePool", [x])[0]
    if t in ("add", "mul"):
        other = b.weight(1, c, 1, 1) if spec.get("broadcast") else x + "_b"
        return b.node("Add" if t == "add" else "Mul", [x, other])[0]
    if t in ("relu", "relu6", "hardswish", "sigmoid", "hardsigmoid", "swish"):
        return b.act(x, t)
    if t == "bn":  # inside a network ORT runs it as a 1 x 1 depthwise convolution in the NCHWc layout
        return b.node("Conv", [x, b.weight(c, 1, 1, 1), b.weight(c)], kernel_shape=[1, 1], group=c)[0]
    if t == "reorder_in":
        return b.node("ReorderInput", [x], domain=NCHWC)[0]
    if t == "reorder_out":
        return b.node("ReorderOutput", [x], domain=NCHWC, channels=c)[0]
    if t == "concat":
        return b.node("Concat", [f"{x}_{i}" if i else x for i in range(spec["n"])], axis=1)[0]
    if t == "transpose":
        g = spec["g"]
        y = b.node("Reshape", [x, b.const(np.array([1, g, c // g, h, h], np.int64))])[0]
        y = b.node("Transpose", [y], perm=[0, 2, 1, 3, 4])[0]
        return b.node("Reshape", [y, b.const(np.array([1, c, h, h], np.int64))])[0]
    if t == "split":
        n = spec["n"]
        return b.node("Split", [x, b.const(np.array([c // n] * n, np.int64))], n_out=n, axis=1)[0]
    if t == "reshape":
        return b.node("Flatten", [x], axis=1)[0]
    if t == "empty":
        return b.node("Identity", [x])[0]
    if t == "pad":  # constant zeros around H and W (one alone; before a Conv, ORT folds it into the Conv)
        p = spec["p"]
        return b.node("Pad", [x, b.const(np.array([0, 0, p, p, 0, 0, p, p], np.int64))], mode="constant")[0]
    if t == "resize":
        scale, mode = spec["scale"], "linear" if spec.get("mode") == "linear" else "nearest"
        if spec.get("plain"):  # coordinates that ORT does not run as its NCHWc Upsample
            return b.node("Resize", [x, "", b.const(np.array([1, 1, scale, scale], np.float32))], mode=mode,
                          coordinate_transformation_mode="pytorch_half_pixel" if mode == "linear" else "half_pixel",
                          nearest_mode="floor")[0]
        # the NCHWc Upsample that ORT makes of a resize after a blocked kernel (hwnas.kernels.onnx_detect.UPSAMPLE);
        # alone, ORT would keep a plain Resize, so it is written out with its layout changes (subtracted when timed)
        y = b.node("ReorderInput", [x], domain=NCHWC)[0]
        y = b.node("Upsample", [y], domain=NCHWC, scales=[1, 1, scale, scale], mode=mode,
                   coordinate_transformation_mode="half_pixel" if mode == "linear" else "asymmetric")[0]
        return b.node("ReorderOutput", [y], domain=NCHWC, channels=c)[0]
    if t == "softmax":
        return b.node("Softmax", [x], axis=-1)[0]
    if t == "gelu":  # as torch exports nn.GELU() (approximate="none")
        y = b.node("Erf", [b.node("Div", [x, b.const(np.float32(math.sqrt(2.0)))])[0]])[0]
        y = b.node("Mul", [x, b.node("Add", [y, b.const(np.float32(1.0))])[0]])[0]
        return b.node("Mul", [y, b.const(np.float32(0.5))])[0]
    if t == "layernorm":  # over the last axis of a (1, h, h, c) input (input_shapes)
        return b.node("LayerNormalization", [x, b.weight(c), b.weight(c)], axis=-1, epsilon=1e-6)[0]
    raise ValueError(f"no ONNX kernel for type {t!r}")


def input_shapes(spec: dict) -> dict[str, list[int]]:
    """The graph inputs of a spec's model: name -> NCHW shape (2-D for fully connected)."""
    t = spec["type"]
    if t == "fc":
        return {"x": [1, spec["cin"]]}
    if t == "softmax":
        return {"x": [1, spec["n"]]}
    h = spec.get("h", 1)
    c = spec["cin"] if t == "conv" else spec.get("c", 1)
    if t == "reorder_out":  # an NCHWc tensor: channels padded to this machine's block
        c = -(-c // nchwc_block()) * nchwc_block()
    if t == "layernorm":  # channels last: the normalised axis
        return {"x": [1, h, h, c]}
    shape = [1, c, h, h]
    if t in ("add", "mul") and not spec.get("broadcast"):
        return {"x": shape, "x_b": shape}
    if t == "concat":
        return {"x" if i == 0 else f"x_{i}": shape for i in range(spec["n"])}
    return {"x": shape}


def kernel_model(spec: dict, seed: int = 0):
    """The one-kernel ONNX model (``onnx.ModelProto``) of a spec."""
    import onnx
    from onnx import TensorProto, helper

    b = GraphBuilder(seed)
    out = add_kernel(b, spec, "x")
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in input_shapes(spec).items()]
    graph = helper.make_graph(b.nodes, "kernel", inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                              b.inits)
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(NCHWC, 1)] if t_reorder(spec) else [])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="hwnas")
    model.ir_version = 8
    return model if t_reorder(spec) else onnx.shape_inference.infer_shapes(model)


def t_reorder(spec: dict) -> bool:
    """The spec's model holds ORT's NCHWc nodes (no ONNX shape inference for them)."""
    return spec["type"] in ("reorder_in", "reorder_out") or (spec["type"] == "resize" and not spec.get("plain"))

