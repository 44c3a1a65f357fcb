"""Kernel configurations sampled over the ranges of mobile networks at 32-224 px, and their feature vectors.

A *spec* is a dict: ``type`` and the dimensions that type has (NHWC, square):

==================  ===========================================================
conv                ``h`` (input size), ``cin``, ``cout``, ``k``, ``s``, ``groups``
dwconv              ``h``, ``c``, ``k``, ``s``
fc                  ``cin``, ``cout``, ``rows`` (when more than one: priced as the 1x1 conv)
matmul              ``batch``, ``m``, ``k``, ``n``: a product of two activations (attention; never
                    sampled: priced as ``batch`` 1x1 convs over ``m`` pixels)
maxpool / avgpool   ``h``, ``c``, ``k``, ``s``
mean                ``h``, ``c`` (global average pooling)
add / mul           ``h``, ``c``, ``broadcast`` (second input 1 x 1 x c: squeeze-excite)
relu relu6 hardswish sigmoid   ``h``, ``c``
concat              ``h``, ``c`` (each input), ``n`` inputs
pad                 ``h``, ``c``, ``p``
resize              ``h``, ``c``, ``scale``
reshape / softmax   ``h``, ``c`` / ``n``
dynreshape          ``c`` (a reshape with a dynamic batch: SHAPE, STRIDED_SLICE, PACK, RESHAPE)
empty               nothing (a model's invoke cost)
==================  ===========================================================

Sizes and channels are drawn log-uniformly; a convolution whose activations or
multiply-adds exceed what real mobile networks (and ResNet-50, DenseNet-121) have
at 224 px is drawn again. :func:`features` gives the numbers a regressor sees.
"""

from __future__ import annotations

import functools
import math
import random

MAX_ELEMS = 2_000_000  # largest activation (h*h*c) drawn: 112 x 112 x 144 is 1.8 M
MAX_MACS = 250e6  # largest multiply-add count of one drawn convolution
UNARY = ("relu", "relu6", "hardswish", "sigmoid")
# kernel type -> how many configurations to sample (sized for ~20 minutes on a loaded 2-core machine)
COUNTS = {"conv": 110, "conv1x1": 110, "dwconv": 90, "gconv": 20, "fc": 30, "maxpool": 15, "avgpool": 15,
          "mean": 25, "add": 20, "mul": 20, "mul_se": 20, "relu": 10, "relu6": 10, "hardswish": 15,
          "sigmoid": 15, "concat": 20, "pad": 12, "resize": 10, "reshape": 8, "dynreshape": 6,
          "softmax": 4, "empty": 1}


def _log_int(rng: random.Random, low: int, high: int) -> int:
    return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))


def _channels(rng: random.Random, high: int = 2048) -> int:
    c = _log_int(rng, 8, high)
    return c if rng.random() < 0.3 else max(8, c // 8 * 8)  # most real channel counts are multiples of 8


def _one(rng: random.Random, group: str) -> dict:
    h = _log_int(rng, 1, 112)
    if group in ("conv", "conv1x1", "gconv"):
        k = 1 if group == "conv1x1" else rng.choice((3, 3, 3, 5, 7))
        s = rng.choice((1, 1, 2)) if h > 1 else 1
        cin = 3 if group == "conv" and rng.random() < 0.1 else _channels(rng)
        cout = _channels(rng)
        groups = 1
        if group == "gconv":
            groups = rng.choice((2, 3, 4, 8))
            cin, cout = max(groups, cin // groups * groups), max(groups, cout // groups * groups)
        macs = (h / s) ** 2 * k * k * cin * cout / groups
        if max(cin, cout) * h * h > MAX_ELEMS or macs > MAX_MACS:
            return {}
        return {"type": "conv", "h": h, "cin": cin, "cout": cout, "k": k, "s": s, "groups": groups,
                "act": rng.choice(("none", "relu", "relu6"))}
    c = _channels(rng, 2048)
    if h * h * c > MAX_ELEMS:
        return {}
    if group == "dwconv":
        s = rng.choice((1, 1, 2)) if h > 1 else 1
        return {"type": "dwconv", "h": h, "c": c, "k": rng.choice((3, 3, 5, 7)), "s": s,
                "act": rng.choice(("none", "relu6"))}
    if group == "fc":
        return {"type": "fc", "cin": _channels(rng, 4096), "cout": rng.choice((10, 100, 1000, _channels(rng)))}
    if group in ("maxpool", "avgpool"):
        return {"type": group, "h": max(2, h), "c": c, "k": rng.choice((2, 3)), "s": rng.choice((1, 2))}
    if group == "mean":
        return {"type": "mean", "h": h, "c": c}
    if group in ("add", "mul", "mul_se"):
        return {"type": "add" if group == "add" else "mul", "h": h, "c": c, "broadcast": group == "mul_se"}
    if group in UNARY:
        return {"type": group, "h": h, "c": c}
    if group == "concat":
        n = rng.choice((2, 2, 3, 4))
        return {"type": "concat", "h": h, "c": max(8, c // n), "n": n}
    if group == "pad":
        return {"type": "pad", "h": h, "c": c, "p": 1}
    if group == "resize":
        return {"type": "resize", "h": min(h, 56), "c": min(c, 256), "scale": 2}
    if group == "reshape":
        return {"type": "reshape", "h": h, "c": c}
    if group == "dynreshape":  # Keras Reshape of a batch-free tensor: SHAPE, STRIDED_SLICE, PACK, RESHAPE
        return {"type": "dynreshape", "h": 1, "c": c}
    if group == "empty":  # no kernel at all: what one invoke of a model costs
        return {"type": "empty", "h": 1, "c": 1}
    if group == "softmax":
        return {"type": "softmax", "n": rng.choice((10, 100, 1000, 1001))}
    raise ValueError(group)


def sample_specs(seed: int = 0, counts: dict | None = None, draw=None) -> list[dict]:
    """The sampled kernel specs (deterministic for a seed), each drawn until it fits the ranges (``draw(rng,
    group)``: another runtime's drawing, e.g. :func:`hwnas.kernels.onnx_kernels.sample_onnx_specs`)."""
    rng = random.Random(seed)
    specs, seen = [], set()
    for group, count in (counts or COUNTS).items():
        made = 0
        while made < count:
            spec = (draw or _one)(rng, group)
            key = repr(sorted(spec.items()))
            if spec and key not in seen:
                seen.add(key)
                specs.append(spec)
                made += 1
    return specs


FEATURES = {
    "conv": ("h", "cin", "cout", "k", "s", "groups", "macs", "in_elems", "out_elems", "params", "macs_tiled"),
    "dwconv": ("h", "c", "k", "s", "macs", "in_elems", "out_elems", "macs_tiled"),
    "fc": ("cin", "cout", "macs"),
    "pool": ("h", "c", "k", "s", "in_elems", "out_elems"),
}
ELEMENTWISE = ("in_elems", "out_elems")


def kernel_type(spec: dict) -> str:
    """The predictor a spec belongs to (max and average pooling share one, as do the squeeze-excite multiply)."""
    t = spec["type"]
    if t in ("maxpool", "avgpool"):
        return t
    if t == "mul" and spec.get("broadcast"):
        return "mul_se"
    if t == "conv" and spec.get("groups", 1) > 1:
        return "gconv"
    if t == "conv" and spec["k"] == 1:
        return "conv1x1"
    return t


BLOCK = 16  # ORT's NCHWc channel block on the reference CPU (AVX-512: a ReorderInput pads 20 channels to 32)


@functools.lru_cache(maxsize=1)
def nchwc_block() -> int:
    """ORT's NCHWc channel block on THIS machine, measured: the channels a ReorderInput pads 4 channels to (16 with
    AVX-512, 8 with AVX2 only: the third AMD EPYC VM, whose CPU string equals the reference CPU's, has no
    AVX-512). Kernel models are built for it; a kernel predictor records the block it was profiled with."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    node = helper.make_node("ReorderInput", ["x"], ["y"], domain="com.microsoft.nchwc")
    graph = helper.make_graph([node], "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 1, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft.nchwc", 1)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return int(session.run(None, {"x": np.zeros((1, 4, 1, 1), np.float32)})[0].shape[1])


def taps_read_share(spec: dict) -> float:
    """The share of a convolution's filter taps that ever meet the input (1 for other kernels): at 1 x 1 pixel a
    3 x 3 "same" conv reads only its centre tap. ONNX Runtime then reads only those weights (measured: eight
    512 -> 512 3 x 3 convs at 1 x 1 pixel 0.23 ms, at 2 x 2 5.5 ms; eight 1 x 1 convs at 1 x 1 pixel 0.12 ms);
    XNNPACK reads them all (3.4 and 3.2 ms)."""
    k = spec.get("k", 1)
    if spec["type"] not in ("conv", "dwconv") or k == 1:
        return 1.0
    return min(k, 2 * spec["h"] - 1) ** 2 / k ** 2


def plain_layout(spec: dict) -> bool:
    """ONNX Runtime keeps this conv or depthwise conv out of its blocked NCHWc layout: its input channels do not
    divide by 4 (measured with ORT's optimised graphs; a conv with fewer than BLOCK input channels is a stem,
    which reads the plain layout and writes the blocked one)."""
    if spec["type"] == "dwconv":
        return spec["c"] % 4 != 0
    return spec["type"] == "conv" and spec.get("groups", 1) == 1 and spec["cin"] >= BLOCK and spec["cin"] % 4 != 0


TILE = 16  # XNNPACK's f32 GEMM and depthwise kernels on AVX2/FMA3 compute output channels in tiles of 16


def _tiled(c: int) -> int:
    return -(-c // TILE) * TILE


def fc_spec(cin: int, cout: int, rows: int = 1) -> dict:
    """A fully connected kernel's spec; ``rows`` only when the input has more than one row (a Linear or Dense over
    every pixel or token), so a one-row spec is the same as it always was."""
    spec = {"type": "fc", "cin": cin, "cout": cout}
    return {**spec, "rows": rows} if rows > 1 else spec


def features(spec: dict) -> dict[str, float]:
    """The numbers that decide a kernel's time: its dimensions, multiply-adds, elements read and written, and
    (convolutions, fully connected) its weights ``params``; for convolutions also ``macs_tiled``, the multiply-adds
    with the output channels rounded up to XNNPACK's tile (:data:`TILE`)."""
    t = spec["type"]
    h = spec.get("h", 1)
    out_h = math.ceil(h / spec.get("s", 1))
    f = dict(spec)
    if t == "conv":
        f["macs"] = out_h * out_h * spec["k"] ** 2 * spec["cin"] * spec["cout"] / spec["groups"]
        f["in_elems"], f["out_elems"] = h * h * spec["cin"], out_h * out_h * spec["cout"]
        f["params"] = spec["k"] ** 2 * spec["cin"] * spec["cout"] / spec["groups"]
        f["macs_tiled"] = f["macs"] / spec["cout"] * _tiled(spec["cout"] // spec["groups"]) * spec["groups"]
        f["plain"] = float(plain_layout(spec))
    elif t == "dwconv":
        f["macs"] = out_h * out_h * spec["k"] ** 2 * spec["c"]
        f["in_elems"], f["out_elems"] = h * h * spec["c"], out_h * out_h * spec["c"]
        f["params"] = spec["k"] ** 2 * spec["c"]
        f["macs_tiled"] = out_h * out_h * spec["k"] ** 2 * _tiled(spec["c"])
        f["plain"] = float(plain_layout(spec))
    elif t == "fc":  # ``rows``: an input of more than one row (a Linear over every pixel or token)
        rows = spec.get("rows", 1)
        f["params"] = spec["cin"] * spec["cout"]
        f["macs"] = rows * f["params"]
        f["in_elems"], f["out_elems"] = rows * spec["cin"], rows * spec["cout"]
    elif t in ("maxpool", "avgpool"):
        f["in_elems"], f["out_elems"] = h * h * spec["c"], out_h * out_h * spec["c"]
    elif t == "concat":
        f["in_elems"] = f["out_elems"] = h * h * spec["c"] * spec["n"]
    elif t == "pad":
        f["in_elems"], f["out_elems"] = h * h * spec["c"], (h + 2 * spec["p"]) ** 2 * spec["c"]
    elif t == "resize":
        f["in_elems"], f["out_elems"] = h * h * spec["c"], (h * spec["scale"]) ** 2 * spec["c"]
        f["interp_elems"] = f["out_elems"] if spec.get("mode") == "linear" else 0  # each a mix of 4 inputs
        f["plain"] = float(bool(spec.get("plain")))  # ONNX Runtime: a plain Resize, not its NCHWc Upsample
    elif t == "mean":
        f["in_elems"], f["out_elems"] = h * h * spec["c"], spec["c"]
    elif t == "matmul":  # two activations (attention): no weights
        b = spec["batch"]
        f["macs"] = b * spec["m"] * spec["k"] * spec["n"]
        f["in_elems"], f["out_elems"] = b * (spec["m"] + spec["n"]) * spec["k"], b * spec["m"] * spec["n"]
    elif t == "softmax":
        f["in_elems"] = f["out_elems"] = spec["n"]
    else:  # add, mul, activations, reshape
        f["in_elems"] = f["out_elems"] = h * h * spec["c"]
        if t == "mul" and spec.get("broadcast"):  # the gate's channels, each spread over h x h (none at 1 x 1)
            f["broadcast_channels"] = spec["c"] if h > 1 else 0
    return f


def feature_names(ktype: str, runtime: str = "tflite") -> tuple[str, ...]:
    """The features a kernel type's regressor is fitted on; ONNX Runtime's convolutions also get ``plain``
    (1 where ORT keeps the kernel out of its blocked layout, :func:`plain_layout`: measured alone, a 3 x 3
    depthwise conv at 8 x 8 takes 0.028 ms with 58 channels and 0.007 ms with 116); its squeeze-excite multiply
    also gets ``broadcast_channels``, since ORT loops over the channels of the gate (measured alone: about 4,000
    elements take 1.0 us as 16 channels of 16 x 16 and 9.3 us as 960 channels of 2 x 2)."""
    plain = ("plain",) if runtime == "onnxruntime" else ()
    if ktype in ("conv", "conv1x1"):
        return FEATURES["conv"] + plain
    if ktype == "gconv":
        return FEATURES["conv"]
    if ktype == "dwconv":
        return FEATURES[ktype] + plain
    if ktype == "fc":
        return FEATURES[ktype]
    if ktype in ("maxpool", "avgpool"):
        return FEATURES["pool"]
    if ktype == "mul_se" and runtime == "onnxruntime":
        return ELEMENTWISE + ("broadcast_channels",)
    if ktype == "layernorm":  # a mean and a variance per row of c
        return ELEMENTWISE + ("c",)
    if ktype == "resize" and runtime == "onnxruntime":  # ORT's resizes say their mode (LiteRT's detection does not)
        return ELEMENTWISE + ("interp_elems", "plain")
    return ELEMENTWISE


def draw_spec(rng: random.Random, group: str) -> dict:
    """One configuration of ``group`` drawn from ``rng``, ``{}`` when it falls outside the ranges (draw again);
    the ONNX Runtime sampling (:mod:`hwnas.kernels.onnx_kernels`) draws the shared kernel types with it."""
    return _one(rng, group)
