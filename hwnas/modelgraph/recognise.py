"""Recognise hwnas operators (:class:`hwnas.ops.OpSpec`) in a model graph.

Two passes over :class:`hwnas.modelgraph.Graph`:

1. *fuse* kernels into units: explicit padding into the convolution it feeds,
   batch norm and a separate activation into the convolution (or fully
   connected layer) before them, a bias add into the MatMul before it, a chain
   of reshapes and transposes into one layout unit (a *channel shuffle* when it
   ends in the shape it started from), a flatten into the pooling before it;
2. *match* blocks in execution order: an inverted residual ([1x1 expand
   conv [-> shuffle]] -> kxk depthwise -> 1x1 project without activation [->
   add of the block's input]), else a single convolution, a global average
   pooling or a fully connected layer.

A block lists every OpSpec that computes what it computes (a plain 1x1 conv is
also FBNet's projecting ``skip``; an inverted residual with expansion is both an
``mbconv`` and an ``ir``); :func:`choose_op` takes the first one a predictor
knows. Each node no block takes is returned with the reason.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from hwnas.errors import HwnasError
from hwnas.modelgraph import Graph, Node
from hwnas.ops import ACTIVATIONS, OpSpec

REASONS = {
    "add": "an addition outside an inverted residual block",
    "bias": "a constant addition outside a fully connected layer",
    "pad": "padding that does not feed a convolution",
    "act": "an activation that does not follow a convolution",
    "bn": "batch normalisation that does not follow a convolution",
    "reshape": "a layout change outside a block",
    "transpose": "a layout change outside a block",
    "shuffle": "a channel shuffle outside a grouped inverted residual block",
}


@dataclass
class Unit:
    """Kernels fused into one computation (e.g. pad + conv + relu6)."""

    kind: str
    nodes: list[Node]
    inputs: list[str]
    output: str
    in_shape: tuple | None
    out_shape: tuple | None
    attrs: dict

    def absorb(self, node: Node) -> None:
        self.nodes.append(node)
        self.output = node.outputs[0]
        self.out_shape = node.out_shape


@dataclass
class Block:
    """Kernels recognised as one hwnas operator; ``candidates`` compute the same, in order of preference."""

    candidates: list[OpSpec]
    nodes: list[Node]
    note: str = ""

    @property
    def span(self) -> str:
        first, last = min(n.index for n in self.nodes), max(n.index for n in self.nodes)
        return str(first) if first == last else f"{first}-{last}"


@dataclass
class Unrecognised:
    node: Node
    reason: str


@dataclass
class Recognition:
    blocks: list[Block] = field(default_factory=list)
    unrecognised: list[Unrecognised] = field(default_factory=list)


def recognise(graph: Graph) -> Recognition:
    """The hwnas operators of ``graph`` and the nodes that are none."""
    units, outputs = _fuse(graph)
    consumers: dict[str, list[Unit]] = defaultdict(list)
    for unit in units:
        for tensor in unit.inputs:
            consumers[tensor].append(unit)

    def only_consumer(unit: Unit) -> Unit | None:
        users = consumers[unit.output]
        return users[0] if len(users) == 1 and unit.output not in outputs else None

    result, used = Recognition(), set()
    for unit in units:
        if id(unit) in used:
            continue
        block, taken = None, [unit]
        if unit.kind == "conv":
            matched = _inverted_residual(unit, only_consumer)
            if matched is not None and not any(id(u) in used for u in matched[1]):
                block, taken = matched
            else:
                block = _single_conv(unit)
        elif unit.kind == "pool":
            block = _pool(unit)
        elif unit.kind == "linear":
            block = _linear(unit)
        else:
            block = REASONS.get(unit.kind, f"no hwnas operator for {unit.nodes[0].op}")
        if isinstance(block, Block):
            block = _check_output(block, taken[-1] if taken[-1].kind != "add" else taken[-2])
        if isinstance(block, Block):
            used.update(id(u) for u in taken)
            result.blocks.append(block)
        else:
            result.unrecognised.extend(Unrecognised(node, block) for node in unit.nodes)
            used.add(id(unit))
    result.unrecognised.sort(key=lambda u: u.node.index)
    return result


def choose_op(block: Block, known: set[str]) -> OpSpec:
    """The first candidate whose key is in ``known`` (e.g. a table's entries), else the first candidate."""
    return next((op for op in block.candidates if op.key() in known), block.candidates[0])


# -- pass 1: fuse -----------------------------------------------------------------------
def _fuse(graph: Graph) -> tuple[list[Unit], set[str]]:
    alias = {node.outputs[0]: node.inputs[0] for node in graph.nodes if node.kind == "identity"}

    def real(tensor: str) -> str:
        while tensor in alias:
            tensor = alias[tensor]
        return tensor

    outputs = {real(t) for t in graph.outputs}
    uses = Counter(real(t) for node in graph.nodes if node.kind != "identity" for t in node.inputs)
    uses.update(outputs)
    units: list[Unit] = []
    producer: dict[str, Unit] = {}
    for node in graph.nodes:
        if node.kind == "identity":
            continue
        inputs = [real(t) for t in node.inputs]
        prev = producer.get(inputs[0]) if inputs else None
        if prev is not None and uses[inputs[0]] == 1 and _fuses(prev, node):
            if prev.kind == "pad":  # the convolution takes the unpadded input
                prev.kind, prev.attrs = "conv", dict(node.attrs)
            elif node.kind == "act":
                prev.attrs["act"] = node.attrs["act"]
            elif prev.kind in ("reshape", "transpose", "shuffle"):
                has_transpose = any(n.kind == "transpose" for n in prev.nodes + [node])
                same = prev.in_shape is not None and len(prev.in_shape) == 4 and prev.in_shape == node.out_shape
                prev.kind = "shuffle" if has_transpose and same else "reshape"
            prev.absorb(node)
            unit = prev
        else:
            unit = Unit(node.kind, [node], inputs, node.outputs[0], node.in_shape, node.out_shape, dict(node.attrs))
            units.append(unit)
        for tensor in node.outputs:
            producer[tensor] = unit
    return units, outputs


def _fuses(prev: Unit, node: Node) -> bool:
    """True when ``node`` belongs to the unit ``prev`` whose only output it reads."""
    if prev.kind == "pad":
        return node.kind == "conv"
    if prev.kind == "conv":
        bn_done = any(n.kind == "bn" for n in prev.nodes)
        if node.kind == "bn":
            return not bn_done and prev.attrs.get("act") == "none"
        return node.kind == "act" and prev.attrs.get("act") == "none"
    if prev.kind == "linear":
        return (node.kind == "act" or node.kind == "bias") and prev.attrs.get("act") == "none"
    if prev.kind in ("reshape", "transpose", "shuffle"):
        return node.kind in ("reshape", "transpose")
    if prev.kind == "pool":
        return node.kind == "reshape" and prev.in_shape is not None and \
            math.prod(node.out_shape or ()) == prev.in_shape[1]
    return False


# -- pass 2: match ----------------------------------------------------------------------
def _conv_problem(unit: Unit) -> str | None:
    """Why a conv unit is no hwnas convolution (None when it is one)."""
    a = unit.attrs
    if unit.in_shape is None or unit.out_shape is None or len(unit.in_shape) != 4:
        return "a convolution of unknown shape"
    if a["kernel"][0] != a["kernel"][1]:
        return f"a {a['kernel'][0]}x{a['kernel'][1]} kernel (hwnas kernels are square)"
    if a["stride"][0] != a["stride"][1]:
        return f"strides {a['stride'][0]}x{a['stride'][1]} (hwnas strides are equal)"
    if tuple(a.get("dilation", (1, 1))) != (1, 1):
        return "a dilated convolution"
    if a["act"] not in ACTIVATIONS:
        return f"activation {a['act']} (hwnas has {', '.join(ACTIVATIONS)})"
    return None


def _is_depthwise(unit: Unit | None) -> bool:
    return unit is not None and unit.kind == "conv" and _conv_problem(unit) is None and \
        unit.attrs["groups"] == unit.in_shape[1] == unit.out_shape[1] > 1


def _is_pointwise(unit: Unit | None) -> bool:
    return unit is not None and unit.kind == "conv" and _conv_problem(unit) is None and \
        unit.attrs["kernel"][0] == 1 and unit.attrs["stride"][0] == 1 and not _is_depthwise(unit)


def _inverted_residual(first: Unit, only_consumer) -> tuple[Block, list[Unit]] | None:
    """[expand [-> shuffle]] -> depthwise -> project [-> add], starting at ``first``; None when it is not one."""
    expand = shuffle = None
    if _is_depthwise(first):
        depthwise = first
    elif _is_pointwise(first):
        expand, nxt = first, only_consumer(first)
        if nxt is not None and nxt.kind == "shuffle":
            shuffle, nxt = nxt, only_consumer(nxt)
        if not _is_depthwise(nxt) or nxt.in_shape[1] != expand.out_shape[1]:
            return None
        depthwise = nxt
    else:
        return None
    project = only_consumer(depthwise)
    if not _is_pointwise(project) or project.attrs["act"] != "none" or project.in_shape[1] != depthwise.out_shape[1]:
        return None
    groups = expand.attrs["groups"] if expand else 1
    if project.attrs["groups"] != groups or (groups > 1) != (shuffle is not None):
        return None
    if expand is not None and expand.attrs["act"] != depthwise.attrs["act"]:
        return None
    c_in, h, w = first.in_shape[1], first.in_shape[2], first.in_shape[3]
    mid = depthwise.in_shape[1]
    if mid % c_in:
        return None
    e, k, s, act = mid // c_in, depthwise.attrs["kernel"][0], depthwise.attrs["stride"][0], depthwise.attrs["act"]
    c_out = project.out_shape[1]
    units = [u for u in (expand, shuffle, depthwise, project) if u is not None]
    add = only_consumer(project)
    residual = add is not None and add.kind == "add" and sorted(add.inputs) == sorted([project.output, first.inputs[0]])
    if residual:
        units.append(add)
    if expand is None:
        candidates = [OpSpec("mbconv", c_in, c_out, h, w, k, s, 1, 1, act)]
    else:
        candidates = [OpSpec("mbconv", c_in, c_out, h, w, k, s, e, 1, act)] if groups == 1 and e > 1 else []
        candidates.append(OpSpec("ir", c_in, c_out, h, w, k, s, e, groups, act))
    note = ""
    if candidates[0].has_residual and not residual:
        note = "no residual add in the graph"
    return Block(candidates, sorted((n for u in units for n in u.nodes), key=lambda n: n.index), note), units


def _single_conv(unit: Unit) -> Block | str:
    problem = _conv_problem(unit)
    if problem:
        return problem
    a = unit.attrs
    c_in, c_out, h, w = unit.in_shape[1], unit.out_shape[1], unit.in_shape[2], unit.in_shape[3]
    k, s, g = a["kernel"][0], a["stride"][0], a["groups"]
    if c_in % g or c_out % g:
        return f"groups {g} do not divide the channels {c_in} -> {c_out}"
    candidates = [OpSpec("conv", c_in, c_out, h, w, k, s, 1, g, a["act"])]
    skip = OpSpec("skip", c_in, c_out, h, w, 1, s, 1, 1, a["act"])
    if k == 1 and g == 1 and not skip.is_identity:
        candidates.append(skip)
    return Block(candidates, list(unit.nodes))


def _pool(unit: Unit) -> Block | str:
    if unit.in_shape is None or len(unit.in_shape) != 4:
        return "a pooling of unknown shape"
    c, h, w = unit.in_shape[1:]
    return Block([OpSpec("pool", c, c, h, w, act="none")], list(unit.nodes))


def _linear(unit: Unit) -> Block | str:
    a = unit.attrs
    if a["act"] not in ACTIVATIONS:
        return f"activation {a['act']} (hwnas has {', '.join(ACTIVATIONS)})"
    if unit.in_shape is None or math.prod(unit.in_shape) != a["c_in"]:
        return "a matrix product over more than one vector"
    try:
        return Block([OpSpec("linear", a["c_in"], a["c_out"], 1, 1, act=a["act"])], list(unit.nodes))
    except HwnasError as exc:
        return str(exc)


def _check_output(block: Block, last: Unit) -> Block | str:
    """``block`` when its operator's output shape is what the graph computes, else why not."""
    op = block.candidates[0]
    got = last.out_shape
    if op.kind in ("pool", "linear"):
        return block if got is not None and math.prod(got) == op.c_out else f"output {got} is not {op.c_out} values"
    want = (1, op.c_out, op.out_h, op.out_w)
    if got != want:
        return f"output {got} differs from {want}, what {op.kind} with padding k//2 gives"
    return block
