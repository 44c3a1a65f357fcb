"""An ONNX graph as the kernels ONNX Runtime runs (CPU EP, 1 thread, ORT_ENABLE_ALL): fusion rules, layout changes.

Fusion rules (:data:`FUSION_RULES`) were read from ORT's optimised graphs of
torchvision networks and timed (``benchmarks/onnx_fusion.py``; docs/predictors.md,
"Kernel predictors on ONNX Runtime"): a ``Conv`` absorbs the residual ``Add`` that
follows it and the activation after that (Relu, Clip, HardSwish, HardSigmoid,
Sigmoid; one node, but all except Relu still cost about their own pass over the
output, so they are priced as an element-wise kernel marked ``fused``); batch norm after a conv is already folded by the exporter, one that is
not (DenseNet) becomes a 1 x 1 depthwise conv with its Relu; ``Sigmoid`` then
``Mul`` of the same tensor (swish) is one ``QuickGelu``; ``Gemm`` absorbs a Relu;
channel shuffle (Reshape, Transpose, Reshape) is one transpose kernel; slices of
one tensor along the channels are one ``Split``; a constant zero ``Pad`` before a
``Conv`` is folded into its padding; shape arithmetic on static shapes (Shape,
Gather, Div ...) is folded away at load and costs nothing.

Layout: on x86 ORT runs convolutions, pooling, batch norm and most resizes (its
``Upsample`` kernel: :data:`UPSAMPLE`) in a blocked
channel layout (NCHWc, blocks of ``block`` channels: 16 with AVX-512, 8 without) and
inserts a ``ReorderInput`` / ``ReorderOutput`` kernel where such a kernel meets
one that is not (a squeeze-excite ``Mul``, a transpose, a flatten before ``Gemm``).
:func:`detect_onnx` adds those as ``reorder_in`` / ``reorder_out`` kernels, once
per tensor. Everything else is an :class:`hwnas.kernels.detect.Unpriced` node
with its reason and FLOPs, never silently zero.
"""

from __future__ import annotations

import math

from hwnas.kernels.detect import Kernel, Kernels, Unpriced
from hwnas.kernels.sample import BLOCK, fc_spec, plain_layout
from hwnas.modelgraph import Graph, Node

FUSION_RULES = [
    {"name": "conv+add+act", "nodes": ("Conv", "Add?", "Relu|Clip|HardSwish|HardSigmoid|Sigmoid?"), "fused": True,
     "why": "ORT's NCHWc conv sums the residual input and applies the activation in the same kernel "
            "(ResNet-18's 8 Add and 17 Relu vanish from its optimised graph)"},
    {"name": "bn+act", "nodes": ("BatchNormalization", "Relu?"), "fused": True,
     "why": "a batch norm on an NCHWc tensor becomes a 1x1 depthwise NCHWc conv with the Relu fused"},
    {"name": "swish", "nodes": ("Sigmoid", "Mul"), "fused": True, "why": "Sigmoid(x) * x is one QuickGelu kernel"},
    {"name": "gemm+relu", "nodes": ("Gemm|MatMul", "Add?", "Relu?"), "fused": True,
     "why": "FusedGemm; a MatMul and its bias Add (torch's Linear on a (N, H, W, C) or (N, tokens, C) input) are one "
            "Gemm"},
    {"name": "gelu", "nodes": ("Div", "Erf", "Add", "Mul", "Mul"), "fused": True,
     "why": "torch's exact GELU, x * (erf(x / sqrt 2) + 1) * 0.5, is one Gelu kernel"},
    {"name": "channel shuffle", "nodes": ("Reshape", "Transpose", "Reshape"), "fused": True,
     "why": "the reshapes are free views; the transpose moves the data"},
    {"name": "slices", "nodes": ("Slice+",), "fused": True, "why": "slices of one tensor along the channels: Split"},
    {"name": "shape arithmetic", "nodes": ("Shape", "Gather|Div|Mul|Add|..."), "fused": True,
     "why": "static shapes: constant-folded when the session loads (no kernel)"},
    {"name": "pad+conv", "nodes": ("Pad", "Conv"), "fused": True,
     "why": "a constant zero Pad before a Conv is folded into the Conv's own padding (ORT's optimised graph)"},
    {"name": "hardsigmoid+mul", "nodes": ("HardSigmoid", "Mul"), "fused": False,
     "why": "ORT leaves both nodes (a squeeze-excite gate not after a conv)"},
]
FREE_ACTS = ("none", "relu")  # fused into the conv at no measurable cost; relu6, hardswish, sigmoid cost a pass
ACTS = {"Relu": "relu", "HardSwish": "hardswish", "HardSigmoid": "hardsigmoid", "Sigmoid": "sigmoid"}
RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")
FREE = ("Identity", "Dropout")


def onnx_node_flops(node: Node) -> float:
    """Floating-point operations of an ONNX node: 2 x multiply-adds for Conv and Gemm/MatMul, else one per output
    element."""
    a, o, i = node.attrs, node.out_shape, node.in_shape
    elems = math.prod(o) if o else 0
    if node.kind == "conv" and o and i:
        return 2.0 * elems * a["kernel"][0] * a["kernel"][1] * i[1] // max(1, a.get("groups", 1))
    if node.kind == "linear":
        return 2.0 * a.get("rows", 1) * a["c_in"] * a["c_out"]
    if node.op == "MatMul" and o and i:  # a product of two activations (attention): k multiply-adds per output
        return 2.0 * elems * i[-1]
    return float(elems)


def _act_of(node: Node) -> str | None:
    if node.op in ACTS:
        return ACTS[node.op]
    if node.op == "Clip" and node.kind == "act":
        return node.attrs["act"]
    return None


def _conv_spec(node: Node) -> dict | str:
    a, i, o = node.attrs, node.in_shape, node.out_shape
    if node.kind != "conv" or not i or not o or len(o) != 4:
        return "a convolution of unknown shape"
    if a["dilation"][0] != a["dilation"][1]:
        return "a convolution with unequal dilations (not sampled)"
    k = a["kernel"][0] if a["kernel"][0] == a["kernel"][1] else round(math.sqrt(a["kernel"][0] * a["kernel"][1]))
    s = a["stride"][0]
    if a["groups"] > 1 and a["groups"] == i[1] == o[1]:
        spec = {"type": "dwconv", "h": i[2], "c": o[1], "k": k, "s": s}
    else:
        spec = {"type": "conv", "h": i[2], "cin": i[1], "cout": o[1], "k": k, "s": s, "groups": a["groups"]}
    if a["dilation"][0] > 1:  # priced as the undilated conv (KernelPredictor.price flags it): measured alone, ORT
        spec["dilation"] = a["dilation"][0]  # runs dilation 2 at 0.92-1.00x the time of dilation 1
    return spec


class _Walk:
    """State of one pass over the graph: consumers, free tensors, nodes already in a kernel."""

    def __init__(self, graph: Graph):
        self.nodes = graph.nodes
        self.consumers: dict[str, list[int]] = {}
        for j, n in enumerate(self.nodes):
            for t in n.inputs:
                self.consumers.setdefault(t, []).append(j)
        self.shapes = {}
        for n in self.nodes:
            if n.inputs and n.in_shape is not None:
                self.shapes.setdefault(n.inputs[0], n.in_shape)
            for t in n.outputs:
                self.shapes[t] = n.out_shape
        self.static: set[str] = set()  # outputs of shape arithmetic (constant-folded by ORT)
        self.alias: dict[str, str] = {}  # Identity / Dropout / folded Pad output -> its input
        self.unpadded: dict[str, tuple] = {}  # folded Pad output -> the shape before the padding
        self.used: set[int] = set()
        self.outputs = set(graph.outputs)

    def real(self, t: str) -> str:
        while t in self.alias:
            t = self.alias[t]
        return t

    def data_inputs(self, node: Node) -> list[str]:
        return [self.real(t) for t in node.inputs if t not in self.static]

    def only_consumer(self, node: Node, ops: tuple[str, ...]) -> tuple[int, Node] | None:
        """The single node reading ``node``'s output, when its op is one of ``ops`` and it is free."""
        out = node.outputs[0]
        users = [j for t in [out] + [a for a, b in self.alias.items() if self.real(a) == out]
                 for j in self.consumers.get(t, []) if self.nodes[j].op not in FREE]
        if len(users) != 1 or users[0] in self.used or out in self.outputs:
            return None
        nxt = self.nodes[users[0]]
        return (users[0], nxt) if nxt.op in ops else None


def _folds_into_conv(node: Node, walk: _Walk) -> bool:
    """A constant zero Pad of the spatial dimensions whose only reader is a Conv: ORT folds it into the Conv (a
    Conv pads with zeros, so a Pad with another fill value stays a kernel of its own)."""
    i, o = node.in_shape, node.out_shape
    if node.op != "Pad" or node.attrs.get("mode", "constant") != "constant" or not i or not o or len(i) != 4:
        return False
    if node.attrs.get("value", 0.0) != 0.0:
        return False
    return o[:2] == i[:2] and walk.only_consumer(node, ("Conv",)) is not None


def _square(o: tuple | None) -> tuple[int, int]:
    """An element-wise kernel's (h, c) for output shape ``o``: (H, C) of an NCHW image; for a 4-D tensor that is
    not square (N, H, W, C after a permute, or a non-square image) c is chosen so that h x h x c keeps the count."""
    n = math.prod(o) if o else 0
    if not o or len(o) != 4:
        return 1, n
    return (o[2], o[1]) if o[2] == o[3] else (o[2], max(1, round(n / (o[2] * o[2]))))


def _elementwise(node: Node, walk: _Walk) -> dict | str:
    o = node.out_shape
    n = math.prod(o) if o else 0
    shape_h, shape_c = _square(o)
    ins = walk.data_inputs(node)
    full = [t for t in ins if walk.shapes.get(t) is not None and math.prod(walk.shapes[t]) == n]
    if node.op in ("Add", "Mul", "Sub", "Div"):
        if len(ins) == 2 and len(full) == 2:
            return {"type": "add" if node.op in ("Add", "Sub") else "mul", "h": shape_h, "c": shape_c,
                    "broadcast": False}
        return {"type": "mul", "h": shape_h, "c": shape_c, "broadcast": True}
    act = _act_of(node)
    if act:
        return {"type": act, "h": shape_h, "c": shape_c}
    return f"no kernel predictor for {node.op}"


def _spec(node: Node, walk: _Walk) -> dict | str:
    op, i, o = node.op, node.in_shape, node.out_shape
    four = i is not None and len(i) == 4 and o is not None and len(o) == 4
    if node.kind == "pool" and four:
        return {"type": "mean", "h": i[2], "c": i[1]}
    if op == "ReduceMean" and i and len(i) == 4 and o and math.prod(o) == i[1]:  # mean over H, W: plain layout
        return {"type": "mean", "h": i[2], "c": i[1], "reduce": True}
    if op in ("MaxPool", "AveragePool") and four:
        k, s = node.attrs.get("kernel") or (2, 2), node.attrs.get("stride") or (1, 1)
        return {"type": "maxpool" if op == "MaxPool" else "avgpool", "h": i[2], "c": i[1], "k": k[0], "s": s[0]}
    if node.kind == "linear":
        return fc_spec(node.attrs["c_in"], node.attrs["c_out"], node.attrs.get("rows", 1))
    if op == "Concat" and o:
        n = max(1, len(walk.data_inputs(node)))
        return {"type": "concat", "h": o[2] if len(o) == 4 else 1,
                "c": max(1, (o[1] if len(o) == 4 else math.prod(o)) // n), "n": n}
    if op == "Split" and i and len(i) == 4:
        return {"type": "split", "h": i[2], "c": i[1], "n": len(node.outputs)}
    if op == "Transpose" and i:
        return {"type": "transpose", "h": 1, "c": math.prod(i), "g": 2}
    if op in RESHAPES and i:
        return {"type": "reshape", "h": 1, "c": math.prod(i)}
    if op == "Softmax" and o:
        return {"type": "softmax", "n": math.prod(o)}
    if op == "MatMul" and i and o and len(i) >= 2 and len(o) >= 2:  # two activations: attention's products
        return {"type": "matmul", "batch": math.prod(o[:-2]), "m": o[-2], "k": i[-1], "n": o[-1]}
    if op == "Gelu" and o:  # opset 20, or ORT's contrib op
        h, c = _square(o)
        return {"type": "gelu", "h": h, "c": c}
    if op == "LayerNormalization" and o:
        if node.attrs.get("axis", -1) % len(o) != len(o) - 1:
            return f"a LayerNormalization over axis {node.attrs['axis']} (only the last axis is sampled)"
        c = o[-1]
        return {"type": "layernorm", "h": max(1, round(math.sqrt(math.prod(o) / c))), "c": c}
    if op == "Pad" and four and o[1] == i[1]:
        if node.attrs.get("mode", "constant") != "constant":
            return f"a Pad in {node.attrs['mode']} mode (not sampled)"
        return {"type": "pad", "h": i[2], "c": i[1], "p": max(1, (o[2] - i[2]) // 2)}
    if op in ("Resize", "Upsample") and four and o[1] == i[1] and o[2] >= i[2]:
        return _resize_spec(node)
    return _elementwise(node, walk)


# (mode, coordinate transformation) pairs that ORT runs as its NCHWc Upsample kernel (measured with its optimised
# graphs: torch exports nearest as "asymmetric" and bilinear as "half_pixel"); others run as a plain-layout Resize
UPSAMPLE = {("nearest", "asymmetric"), ("linear", "half_pixel"), ("linear", "align_corners")}


def _resize_spec(node: Node) -> dict | str:
    i, o, mode = node.in_shape, node.out_shape, node.attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear"):
        return f"a {mode} resize (not sampled)"
    spec = {"type": "resize", "h": i[2], "c": i[1], "scale": max(1, o[2] // max(1, i[2])), "mode": mode}
    if (mode, node.attrs.get("coordinates", "half_pixel")) not in UPSAMPLE or o[2] % max(1, i[2]):
        spec["plain"] = True
    return spec


def _gelu(j: int, node: Node, walk: _Walk) -> tuple[list[int], dict] | None:
    """torch's exact GELU starting at its ``Div``: x / sqrt 2, Erf, + 1, x * that, * 0.5 (the last may be missing):
    the nodes ORT fuses into one Gelu kernel, or None when ``node`` does not start one."""
    x = walk.data_inputs(node)
    erf = walk.only_consumer(node, ("Erf",))
    add = erf and walk.only_consumer(erf[1], ("Add",))
    mul = add and walk.only_consumer(add[1], ("Mul",))
    if not mul or len(x) != 1 or sorted(walk.data_inputs(mul[1])) != sorted([x[0], add[1].outputs[0]]):
        return None
    group = [j, erf[0], add[0], mul[0]]
    half = walk.only_consumer(mul[1], ("Mul",))
    if half and len(walk.data_inputs(half[1])) == 1:
        group.append(half[0])
    h, c = _square(node.out_shape)
    return group, {"type": "gelu", "h": h, "c": c}


def _group(j: int, node: Node, walk: _Walk) -> tuple[list[int], dict | str]:
    """The node indices of the kernel starting at ``node`` (fusion rules) and its spec, or why it has none."""
    if node.op == "Conv":
        spec, group = _conv_spec(node), [j]
        before = walk.unpadded.get(node.inputs[0]) if node.inputs else None
        if isinstance(spec, dict) and before:  # a folded Pad: the conv pads the unpadded input itself
            spec["h"] = before[2]
        if isinstance(spec, dict):
            spec["act"] = "none"
            last = node
            nxt = walk.only_consumer(last, ("Add",))
            if nxt and len(walk.data_inputs(nxt[1])) == 2:
                group.append(nxt[0])
                last = nxt[1]
                spec["residual"] = True
            nxt = walk.only_consumer(last, ("Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid"))
            if nxt and _act_of(nxt[1]):
                group.append(nxt[0])
                spec["act"] = _act_of(nxt[1])
        return group, spec
    if node.op == "BatchNormalization" and node.in_shape and len(node.in_shape) == 4:
        nxt = walk.only_consumer(node, ("Relu",))
        return [j] + ([nxt[0]] if nxt else []), {"type": "bn", "h": node.in_shape[2], "c": node.in_shape[1]}
    if node.op == "Sigmoid":
        x = walk.data_inputs(node)[0]
        nxt = walk.only_consumer(node, ("Mul",))
        if nxt and sorted(walk.data_inputs(nxt[1])) == sorted([x, node.outputs[0]]):
            spec = _elementwise(node, walk)
            return [j, nxt[0]], {**spec, "type": "swish"}
    if node.kind == "linear":
        group, last = [j], node
        bias = walk.only_consumer(node, ("Add",)) if node.op == "MatMul" else None
        if bias and bias[1].kind == "bias":  # ORT fuses a MatMul and its bias Add into one Gemm
            group.append(bias[0])
            last = bias[1]
        nxt = walk.only_consumer(last, ("Relu",))
        return group + ([nxt[0]] if nxt else []), _spec(node, walk)
    if node.op == "Div":
        gelu = _gelu(j, node, walk)
        if gelu:
            return gelu
    if node.op == "Reshape":
        nxt = walk.only_consumer(node, ("Transpose",))
        after = nxt and walk.only_consumer(nxt[1], ("Reshape",))
        if after and node.in_shape and len(node.in_shape) == 4:
            i = node.in_shape
            return [j, nxt[0], after[0]], {"type": "transpose", "h": i[2], "c": i[1],
                                           "g": nxt[1].in_shape[1] if nxt[1].in_shape else 2}
    if node.op == "Slice" and node.in_shape and len(node.in_shape) == 4:
        x = walk.data_inputs(node)[0]
        group = [k for k in walk.consumers.get(x, []) if walk.nodes[k].op == "Slice" and k not in walk.used]
        i = node.in_shape
        return group, {"type": "split", "h": i[2], "c": i[1], "n": max(2, len(group))}
    return [j], _spec(node, walk)


def _blocked(spec: dict, in_shapes: list, block: int) -> str:
    """How a kernel meets the NCHWc layout: ``nchwc`` (runs blocked; a plain input is reordered), ``stem`` (a
    conv with fewer than ``block`` input channels: reads plain, writes blocked), ``either`` (element-wise: blocked
    when all its inputs are) or ``plain`` (also a conv whose input channels do not divide by 4:
    :func:`hwnas.kernels.sample.plain_layout`)."""
    t = spec["type"]
    if t in ("conv", "dwconv") and plain_layout(spec):
        return "plain"
    if t == "conv" and spec.get("groups", 1) == 1:
        return "stem" if spec["cin"] < block else "nchwc"
    if t == "dwconv":
        return "nchwc"
    if t in ("maxpool", "avgpool", "mean"):  # blocked only on a blocked input (after a plain Resize: plain)
        return "either" if spec["c"] % block == 0 and not spec.get("reduce") else "plain"
    if t == "resize":  # ORT's Upsample, like its pooling, only on a blocked input (LRASPP: a Resize after a Mul)
        return "plain" if spec.get("plain") else "either"
    if t == "concat":
        return "either" if all(s and len(s) == 4 and s[1] % block == 0 for s in in_shapes) else "plain"
    if t in ("bn", "relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "swish", "add") or \
            (t == "mul" and not spec.get("broadcast")):
        return "either"
    return "plain"


def detect_onnx(graph: Graph, block: int = BLOCK) -> Kernels:
    """The kernels of an ONNX ``graph`` as ORT runs them (fusion rules, layout changes) and the unpriced nodes, on
    a CPU whose NCHWc block is ``block`` channels (:func:`hwnas.kernels.sample.nchwc_block`; a kernel predictor
    detects with the block of the machine it was profiled on)."""
    walk = _Walk(graph)
    result = Kernels(total_flops=sum(onnx_node_flops(n) for n in graph.nodes))
    found: list[tuple[int, Kernel, list[str], list[str]]] = []  # last node, kernel, input and output tensors
    for j, node in enumerate(walk.nodes):
        if j in walk.used:
            continue
        ins = [t for t in node.inputs if t not in walk.static]
        if node.op == "Shape" or (node.inputs and not ins):
            walk.static.update(node.outputs)
            continue
        if node.op in FREE:
            walk.alias[node.outputs[0]] = node.inputs[0]
            continue
        if _folds_into_conv(node, walk):
            walk.alias[node.outputs[0]] = node.inputs[0]
            walk.unpadded[node.outputs[0]] = node.in_shape
            continue
        group, spec = _group(j, node, walk)
        walk.used.update(group)
        members = [walk.nodes[k] for k in group]
        if not isinstance(spec, dict):
            result.unpriced.append(Unpriced(node, spec, onnx_node_flops(node)))
            continue
        produced = {t for m in members for t in m.outputs}
        inputs = [t for m in members for t in walk.data_inputs(m) if t not in produced]
        outputs = [t for m in members for t in m.outputs if t not in {x for n in members for x in n.inputs}]
        found.append((max(group), Kernel(spec, members), list(dict.fromkeys(inputs)), outputs))
    found.sort(key=lambda f: f[0])  # a fused kernel runs when its last node can (a residual input comes first)
    blocked = {t: False for t in graph.inputs}
    reordered: set[str] = set()

    def reorder(kind: str, t: str, before: Kernel) -> None:
        shape = walk.shapes.get(t)
        if t in reordered or not shape or len(shape) != 4:
            return
        reordered.add(t)
        result.kernels.append(Kernel({"type": kind, "h": shape[2], "c": shape[1]}, before.nodes[:1]))

    for _, kernel, ins, outs in found:
        mode = _blocked(kernel.spec, [walk.shapes.get(t) for t in ins], block)
        if mode == "either":
            mode = "nchwc" if ins and all(blocked.get(t, False) for t in ins) else "plain"
            if mode == "plain" and kernel.spec["type"] == "resize":
                kernel.spec["plain"] = True  # a plain Resize, priced as one
        for t in ins:
            if mode == "nchwc" and not blocked.get(t, False):
                reorder("reorder_in", t, kernel)
            elif mode == "plain" and blocked.get(t, False):
                reorder("reorder_out", t, kernel)
        result.kernels.append(kernel)
        act = kernel.spec.get("act", "none") if kernel.spec["type"] in ("conv", "dwconv") else "none"
        if act not in FREE_ACTS:  # fused, yet still a pass over the output (benchmarks/onnx_fusion.py)
            o = kernel.nodes[0].out_shape
            result.kernels.append(Kernel({"type": act, "h": o[2], "c": o[1], "fused": True}, kernel.nodes[-1:]))
        for t in outs:
            blocked[t] = mode in ("nchwc", "stem")
    for t in graph.outputs:
        if blocked.get(walk.real(t), False) and found:
            reorder("reorder_out", walk.real(t), found[-1][1])
    return result
