"""The DARTS cell search space ``darts-cell``.

A network is a 3x3 conv stem, ``layers`` cells, global pooling and a linear
classifier. Every cell is a DAG: nodes 0 and 1 are the outputs of the two
previous cells (brought to the cell's channel count by a 1x1 ReLU-Conv-BN, or
by a factorized reduce when the previous cell halved the resolution), nodes
``2 .. nodes + 1`` each sum their transformed predecessors, and the cell output
concatenates the intermediate nodes. Each edge ``(input -> node)`` picks one of
:data:`hwnas.cells.ops.PRIMITIVES`. Reduction cells (at 1/3 and 2/3 of the
depth) apply stride 2 on the edges leaving nodes 0 and 1 and double the
channel count; all normal cells share one genotype, all reduction cells another.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.errors import HwnasError
from hwnas.ops import OpSpec
from hwnas.cells.ops import PRIMITIVES, edge_op

CELL_SPACE = "darts-cell"
DEFAULTS = {"layers": 8, "channels": 16, "nodes": 4, "stem_multiplier": 3, "resolution": 32, "num_classes": 10}
MAXIMA = {"layers": 64, "channels": 1024, "nodes": 8, "stem_multiplier": 16, "resolution": 1024, "num_classes": 100_000}


@dataclass(frozen=True)
class CellLayout:
    """Shapes of one cell of the network."""

    index: int
    reduction: bool
    reduction_prev: bool
    c_pp: int  # channels of the input from two cells back
    c_prev: int  # channels of the input from the previous cell
    channels: int  # channels of every node of this cell
    h_pp: int  # resolution of the input from two cells back
    h_prev: int  # resolution of the previous cell's output (= edge input resolution)

    @property
    def h(self) -> int:
        """Resolution of the intermediate nodes."""
        return self.h_prev // 2 if self.reduction else self.h_prev


def check_params(params: dict) -> dict:
    """Defaults filled in and every field checked; raises HwnasError naming the field."""
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise HwnasError(f"unknown darts-cell field(s): {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(DEFAULTS)}")
    full = {**DEFAULTS, **params}
    for key, value in full.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAXIMA[key]:
            raise HwnasError(f"darts-cell field {key!r} must be a positive integer <= {MAXIMA[key]}, got {value!r}")
    if full["channels"] % 2:
        raise HwnasError(f"darts-cell field 'channels' must be even (factorized reduce), got {full['channels']}")
    if full["resolution"] % 4:
        raise HwnasError(f"darts-cell field 'resolution' must be a multiple of 4 (two reductions), "
                         f"got {full['resolution']}")
    return full


class CellSpace:
    """Shapes, edges and candidate operators of the cell space for given parameters."""

    name = CELL_SPACE

    def __init__(self, params: dict | None = None):
        self.params = check_params(dict(params or {}))
        p = self.params
        self.nodes = p["nodes"]
        self.reduction_layers = sorted({p["layers"] // 3, 2 * p["layers"] // 3})
        # edges in a fixed order: for node 2, 3, ...: inputs 0 .. node - 1
        self.edges = [(node, inp) for node in range(2, self.nodes + 2) for inp in range(node)]
        self.layouts = self._layouts()

    def _layouts(self) -> list[CellLayout]:
        p = self.params
        c = p["channels"]
        c_pp = c_prev = p["stem_multiplier"] * c
        h_pp = h_prev = p["resolution"]
        layouts, reduction_prev = [], False
        for i in range(p["layers"]):
            reduction = i in self.reduction_layers
            if reduction:
                c *= 2
            layout = CellLayout(i, reduction, reduction_prev, c_pp, c_prev, c, h_pp, h_prev)
            layouts.append(layout)
            c_pp, c_prev = c_prev, self.nodes * c
            h_pp, h_prev = h_prev, layout.h
            reduction_prev = reduction
        return layouts

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def size(self) -> int:
        """Number of genotypes: every edge of the normal and of the reduction cell picks any
        candidate, ``zero`` included (SNAS genotypes; DARTS derivation keeps a subset)."""
        return len(PRIMITIVES) ** (2 * self.num_edges)

    # -- operators --------------------------------------------------------------
    def stem(self) -> OpSpec:
        p = self.params
        return OpSpec("conv", 3, p["stem_multiplier"] * p["channels"], p["resolution"], p["resolution"],
                      kernel=3, act="none")

    def head(self) -> list[OpSpec]:
        last = self.layouts[-1]
        c = self.nodes * last.channels
        return [OpSpec("pool", c, c, last.h, last.h, act="none"),
                OpSpec("linear", c, self.params["num_classes"], 1, 1, act="none")]

    def preprocess(self, layout: CellLayout) -> tuple[OpSpec, OpSpec]:
        """The operators bringing the two cell inputs to ``layout.channels`` channels."""
        c = layout.channels
        if layout.reduction_prev:
            pre0 = OpSpec("fact_reduce", layout.c_pp, c, layout.h_pp, layout.h_pp, stride=2, act="relu")
        else:
            pre0 = OpSpec("rcb", layout.c_pp, c, layout.h_pp, layout.h_pp, act="relu")
        pre1 = OpSpec("rcb", layout.c_prev, c, layout.h_prev, layout.h_prev, act="relu")
        return pre0, pre1

    def edge_stride(self, layout: CellLayout, inp: int) -> int:
        return 2 if layout.reduction and inp < 2 else 1

    def edge_op(self, layout: CellLayout, inp: int, name: str) -> OpSpec:
        """OpSpec of candidate ``name`` on an edge leaving node ``inp`` of a cell."""
        return edge_op(name, layout.channels, layout.h_prev if inp < 2 else layout.h,
                       layout.h_prev if inp < 2 else layout.h, self.edge_stride(layout, inp))

    def unique_ops(self) -> list[OpSpec]:
        """Every distinct operator of the space (what a profiler needs to time); zero and
        identity skips, which compute nothing, are left out."""
        seen: dict[OpSpec, None] = {self.stem(): None}
        for layout in self.layouts:
            for op in self.preprocess(layout):
                seen[op] = None
            for _, inp in self.edges:
                for name in PRIMITIVES:
                    op = self.edge_op(layout, inp, name)
                    if not op.is_identity:
                        seen[op] = None
        for op in self.head():
            seen[op] = None
        return list(seen)

    def describe(self) -> str:
        p = self.params
        lines = [f"{self.name}: {p['layers']} cells (reduction at {self.reduction_layers}), {self.nodes} nodes, "
                 f"{self.num_edges} edges x {len(PRIMITIVES)} candidates per cell type, "
                 f"{p['channels']} channels, {p['resolution']}px, {p['num_classes']} classes"]
        for layout in self.layouts:
            kind = "reduce" if layout.reduction else "normal"
            lines.append(f"  cell {layout.index}: {kind:6s} in {layout.c_pp}x{layout.h_pp}, "
                         f"{layout.c_prev}x{layout.h_prev} -> {self.nodes}x{layout.channels}x{layout.h}")
        lines.append(f"  edge candidates: {', '.join(PRIMITIVES)}")
        lines.append(f"{self.num_edges} edges per cell type, {self.size:.3e} architectures (normal x reduction cell)")
        return "\n".join(lines)
