"""Genotypes: the derived normal and reduction cells, as readable JSON.

Format::

    {
      "space": "darts-cell",
      "space_params": {"layers": 8, "channels": 16, "nodes": 4, ...},
      "normal": [[["sep_conv_3x3", 0], ["skip", 1]],     # node 2: its inputs
                 [["sep_conv_3x3", 0], ["dil_conv_3x3", 2]],  # node 3
                 ...],
      "reduce": [...],
      "meta": {...}                                        # optional, free-form
    }

Entry ``j`` of ``normal``/``reduce`` lists the incoming edges of intermediate
node ``j + 2`` as ``[operation, input node]``; nodes 0 and 1 are the outputs of
the two previous cells. A node may have any number of inputs (SNAS), also none.
Loading validates everything and raises HwnasError naming the file and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from hwnas.costs import Cost, total_cost
from hwnas.errors import HwnasError
from hwnas.ops import OpSpec
from hwnas.jsonfile import read_json
from hwnas.cells.ops import PRIMITIVES
from hwnas.cells.space import CELL_SPACE, CellSpace, check_params

CellSpec = list[list[tuple[str, int]]]


@dataclass
class Genotype:
    normal: CellSpec
    reduce: CellSpec
    space_params: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.space_params = check_params(self.space_params)
        self.normal = _check_cell("normal", self.normal, self.space_params["nodes"])
        self.reduce = _check_cell("reduce", self.reduce, self.space_params["nodes"])

    @property
    def space(self) -> CellSpace:
        return CellSpace(self.space_params)

    @property
    def space_name(self) -> str:
        return CELL_SPACE

    def cell(self, reduction: bool) -> CellSpec:
        return self.reduce if reduction else self.normal

    def ops(self):
        """Every operator of the standalone network (:func:`network_ops`)."""
        return network_ops(self)

    def cost(self):
        """FLOPs, params and MAC of the standalone network (:func:`network_cost`)."""
        return network_cost(self)

    def to_dict(self) -> dict:
        data = {"space": CELL_SPACE, "space_params": dict(self.space_params),
                "normal": [[[op, inp] for op, inp in node] for node in self.normal],
                "reduce": [[[op, inp] for op, inp in node] for node in self.reduce]}
        if self.meta:
            data["meta"] = self.meta
        return data

    def to_json(self) -> str:
        """Indented JSON with one node per line."""
        data = self.to_dict()
        lines = ["{", f'  "space": {json.dumps(data["space"])},',
                 f'  "space_params": {json.dumps(data["space_params"])},']
        for name in ("normal", "reduce"):
            nodes = ",\n    ".join(json.dumps(node) for node in data[name])
            lines.append(f'  "{name}": [\n    {nodes}\n  ],')
        if "meta" in data:
            lines.append(f'  "meta": {json.dumps(data["meta"])},')
        lines[-1] = lines[-1].rstrip(",")
        return "\n".join(lines) + "\n}\n"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, data: object) -> "Genotype":
        if not isinstance(data, dict):
            raise HwnasError("genotype must be a JSON object")
        unknown = set(data) - {"space", "space_params", "normal", "reduce", "meta"}
        if unknown:
            raise HwnasError(f"unknown field(s): {', '.join(sorted(unknown))}")
        if data.get("space") != CELL_SPACE:
            raise HwnasError(f"field 'space' must be {CELL_SPACE!r}, got {data.get('space')!r}")
        for key in ("normal", "reduce"):
            if key not in data:
                raise HwnasError(f"missing field {key!r}")
        params = data.get("space_params", {})
        if not isinstance(params, dict):
            raise HwnasError("field 'space_params' must be an object")
        meta = data.get("meta", {})
        if not isinstance(meta, dict):
            raise HwnasError("field 'meta' must be an object")
        return cls(data["normal"], data["reduce"], dict(params), dict(meta))

    @classmethod
    def load(cls, path: str | Path) -> "Genotype":
        path = Path(path)
        data = read_json(path)
        try:
            return cls.from_dict(data)
        except HwnasError as exc:
            raise HwnasError(f"{path}: {exc}") from None


def _check_cell(name: str, cell: object, nodes: int) -> CellSpec:
    if not isinstance(cell, list):
        raise HwnasError(f"field {name!r} must be a list of nodes")
    if len(cell) != nodes:
        raise HwnasError(f"field {name!r} has {len(cell)} nodes, the space has {nodes}")
    checked = []
    for j, node in enumerate(cell):
        where = f"{name}[{j}]"
        if not isinstance(node, list):
            raise HwnasError(f"field {where!r} must be a list of [operation, input] pairs")
        inputs, seen = [], set()
        for k, edge in enumerate(node):
            at = f"{where}[{k}]"
            if not isinstance(edge, (list, tuple)) or len(edge) != 2:
                raise HwnasError(f"field {at!r} must be [operation, input node], got {edge!r}")
            op, inp = edge
            if op not in PRIMITIVES or op == "zero":
                raise HwnasError(f"field {at!r}: unknown operation {op!r}; expected one of "
                                 f"{', '.join(p for p in PRIMITIVES if p != 'zero')} (leave a zero edge out)")
            if not isinstance(inp, int) or isinstance(inp, bool) or not 0 <= inp < j + 2:
                raise HwnasError(f"field {at!r}: input {inp!r} must be a node before node {j + 2} (0 .. {j + 1})")
            if inp in seen:
                raise HwnasError(f"field {at!r}: node {j + 2} takes input {inp} twice")
            seen.add(inp)
            inputs.append((op, inp))
        checked.append(inputs)
    return checked


def network_ops(genotype: Genotype) -> list[OpSpec]:
    """Every operator of the standalone network, stem to classifier."""
    space = genotype.space
    ops = [space.stem()]
    for layout in space.layouts:
        ops += space.preprocess(layout)
        for node_inputs in genotype.cell(layout.reduction):
            ops += [space.edge_op(layout, inp, name) for name, inp in node_inputs]
    return ops + space.head()


def node_sum_mac(space: CellSpace, genotype: Genotype) -> int:
    """Memory access of the node sums: a node with n >= 2 inputs reads n tensors and writes one."""
    mac = 0
    for layout in space.layouts:
        size = layout.channels * layout.h * layout.h
        for node_inputs in genotype.cell(layout.reduction):
            if len(node_inputs) >= 2:
                mac += (len(node_inputs) + 1) * size
    return mac


def network_cost(genotype: Genotype) -> Cost:
    """FLOPs, params and MAC of the standalone network (:mod:`hwnas.costs` conventions)."""
    return total_cost(network_ops(genotype)) + Cost(0, 0, node_sum_mac(genotype.space, genotype))
