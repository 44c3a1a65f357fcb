"""A TFLite graph as the kernels LiteRT/XNNPACK runs: fusion rules, then one kernel spec per node or fused group.

Fusion rules (:data:`FUSION_RULES`) are data: each says which nodes the runtime
executes as one kernel, and what was measured to decide it (docs/predictors.md,
"Kernel predictors"). Activations (relu, relu6) and batch norm are already
fused into convolutions by the TFLite converter, so they never appear as nodes
of their own after a convolution. Every other node becomes a kernel whose spec
(:mod:`hwnas.kernels.sample`) is read from its shapes, or an :class:`Unpriced`
node with the reason and its FLOPs (never silently zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hwnas.kernels.sample import fc_spec
from hwnas.modelgraph import Graph, Node

# Which nodes LiteRT/XNNPACK executes as one kernel (first matching rule wins).
FUSION_RULES = [
    {"name": "pad+conv", "nodes": ("PAD", "CONV_2D|DEPTHWISE_CONV_2D"), "fused": True,
     "why": "XNNPACK folds a constant spatial PAD into the following convolution's padding"},
    {"name": "dynamic reshape", "nodes": ("SHAPE", "STRIDED_SLICE", "PACK", "RESHAPE"), "fused": True,
     "kernel": "dynreshape",
     "why": "a Keras Reshape with a free batch size: shape arithmetic then a reshape; profiled as one group"},
]
UNARY = {"RELU": "relu", "RELU6": "relu6", "HARD_SWISH": "hardswish", "LOGISTIC": "sigmoid"}
BINARY = {"ADD": "add", "MUL": "mul", "SUB": "add"}
RESHAPES = ("RESHAPE", "SQUEEZE", "EXPAND_DIMS")


@dataclass
class Kernel:
    spec: dict
    nodes: list[Node]

    @property
    def span(self) -> str:
        first, last = self.nodes[0].index, self.nodes[-1].index
        return str(first) if first == last else f"{first}-{last}"


@dataclass
class Unpriced:
    node: Node
    reason: str
    flops: float


@dataclass
class Kernels:
    kernels: list[Kernel] = field(default_factory=list)
    unpriced: list[Unpriced] = field(default_factory=list)
    total_flops: float = 0.0


def _elems(shape) -> int:
    return math.prod(shape) if shape else 0


def node_flops(node: Node) -> float:
    """Floating-point operations of a node: 2 x multiply-adds for convolutions and matrix products, else one
    per output element (a fair weight for a node nobody prices)."""
    a, out = node.attrs, node.out_shape
    if node.op in ("CONV_2D", "DEPTHWISE_CONV_2D") and "kernel" in a and out and node.in_shape:
        per_out = a["kernel"][0] * a["kernel"][1] * node.in_shape[1] // max(1, a.get("groups", 1))
        return 2.0 * _elems(out) * per_out
    if node.op == "FULLY_CONNECTED" and "c_in" in a:
        return 2.0 * a["c_in"] * a["c_out"] * max(1, _elems(out) // a["c_out"])
    return float(_elems(out))


def _square(pair) -> int:
    return pair[0] if pair[0] == pair[1] else round(math.sqrt(pair[0] * pair[1]))


def node_spec(node: Node, shapes: dict) -> dict | str:
    """The kernel spec of one node, or why it has none."""
    op, a, i, o = node.op, node.attrs, node.in_shape, node.out_shape
    four = i is not None and len(i) == 4 and o is not None and len(o) == 4
    if op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        if not four or "kernel" not in a:
            return "a convolution of unknown shape"
        k, s = _square(a["kernel"]), _square(a["stride"])
        if op == "DEPTHWISE_CONV_2D" or (a["groups"] == i[1] == o[1] and a["groups"] > 1):
            spec = {"type": "dwconv", "h": i[2], "c": o[1], "k": k, "s": s}
        else:
            spec = {"type": "conv", "h": i[2], "cin": i[1], "cout": o[1], "k": k, "s": s, "groups": a["groups"]}
        d = _square(a.get("dilation", (1, 1)))
        if d > 1:  # priced as the undilated conv, and flagged (KernelPredictor.price): measured alone, XNNPACK runs
            spec["dilation"] = d  # dilation 2 at 0.95-1.00x the time of dilation 1
        return spec
    if op == "FULLY_CONNECTED" and "c_in" in a:
        rows = max(1, _elems(node.out_shape) // a["c_out"]) if node.out_shape else 1  # a Dense over every pixel
        return fc_spec(a["c_in"], a["c_out"], rows)
    if op in ("MAX_POOL_2D", "AVERAGE_POOL_2D") and four:
        if node.kind == "pool":  # a window over the whole input: global average pooling
            return {"type": "mean", "h": i[2], "c": i[1]}
        return {"type": "maxpool" if op == "MAX_POOL_2D" else "avgpool", "h": i[2], "c": i[1],
                "k": _square(a["kernel"]), "s": _square(a["stride"])}
    if op == "MEAN" and i is not None and len(i) == 4:
        return {"type": "mean", "h": i[2], "c": i[1]}
    if op in UNARY and i:
        return {"type": UNARY[op], "h": 1, "c": _elems(o)}
    if op in BINARY and o:
        others = [shapes.get(t) for t in node.inputs]
        full = [s for s in others if s is not None and _elems(s) == _elems(o)]
        if len(node.inputs) == 2 and len(full) == 2:
            return {"type": BINARY[op], "h": 1, "c": _elems(o), "broadcast": False}
        # one input is a constant or a per-channel vector (squeeze-excite, unfolded batch norm)
        return {"type": "mul", "h": 1, "c": _elems(o), "broadcast": True}
    if op == "CONCATENATION" and o:
        n = max(1, len(node.inputs))
        return {"type": "concat", "h": 1, "c": max(1, _elems(o) // n), "n": n}
    if op in ("PAD", "PADV2") and four:
        return {"type": "pad", "h": i[2], "c": i[1], "p": max(1, (o[2] - i[2]) // 2)}
    if op.startswith("RESIZE_") and four:
        return {"type": "resize", "h": i[2], "c": i[1], "scale": max(1, o[2] // max(1, i[2]))}
    if op in RESHAPES and i:
        return {"type": "reshape", "h": 1, "c": _elems(i)}
    if op == "SOFTMAX" and o:
        return {"type": "softmax", "n": _elems(o)}
    return f"no kernel predictor for {op}"


def _matches(pattern: str, node: Node) -> bool:
    return node.op in pattern.split("|")


def detect(graph: Graph) -> Kernels:
    """The kernels of ``graph`` (fusion rules applied) and the nodes no kernel predictor prices."""
    shapes = {}
    for node in graph.nodes:
        for t in node.outputs:
            shapes[t] = node.out_shape
    result = Kernels(total_flops=sum(node_flops(n) for n in graph.nodes))
    nodes, i = graph.nodes, 0
    while i < len(nodes):
        rule = next((r for r in FUSION_RULES if r["fused"] and i + len(r["nodes"]) <= len(nodes)
                     and all(_matches(p, nodes[i + j]) for j, p in enumerate(r["nodes"]))
                     and all(nodes[i + j].outputs[0] in nodes[i + j + 1].inputs or r.get("kernel")
                             for j in range(len(r["nodes"]) - 1))), None)
        if rule is not None:
            group = nodes[i:i + len(rule["nodes"])]
            if rule.get("kernel") == "dynreshape":
                spec = {"type": "dynreshape", "h": 1, "c": _elems(group[-1].in_shape)}
            else:  # the convolution, on the unpadded input
                spec = node_spec(group[-1], shapes)
                if isinstance(spec, dict):
                    spec["h"] = group[0].in_shape[2] if group[0].in_shape else spec["h"]
            if isinstance(spec, dict):
                result.kernels.append(Kernel(spec, group))
                i += len(group)
                continue
        node = nodes[i]
        spec = node_spec(node, shapes)
        if isinstance(spec, dict):
            result.kernels.append(Kernel(spec, [node]))
        else:
            result.unpriced.append(Unpriced(node, spec, node_flops(node)))
        i += 1
    return result
