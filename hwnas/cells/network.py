"""Cell networks: the standalone network of a genotype, and the shared cell skeleton.

:class:`Cell` wires the DAG: it preprocesses its two inputs, feeds each node the
sum of its incoming edges, and concatenates the intermediate nodes. Its edges
are any modules: fixed operations in a standalone network, mixed operations in
the supernet (which pass one weight vector per edge).
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.blocks import make_block, make_cell_block, make_edge
from hwnas.cells.genotype import Genotype
from hwnas.cells.space import CellLayout, CellSpace


def edge_key(node: int, inp: int) -> str:
    return f"{inp}->{node}"


class Cell(nn.Module):
    """One cell; ``edges`` maps ``edge_key(node, input)`` to the edge's module."""

    def __init__(self, space: CellSpace, layout: CellLayout, edges: dict[str, nn.Module], affine: bool = True):
        super().__init__()
        self.layout = layout
        self.nodes = space.nodes
        pre0, pre1 = space.preprocess(layout)
        self.preprocess0 = make_cell_block(pre0, affine)
        self.preprocess1 = make_cell_block(pre1, affine)
        self.edges = nn.ModuleDict(edges)
        # position of each edge in the space's edge order (rows of the architecture weights)
        self.edge_index = {edge_key(n, i): e for e, (n, i) in enumerate(space.edges)}

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        c, h = self.layout.channels, self.layout.h
        for node in range(2, self.nodes + 2):
            total = None
            for inp in range(node):
                key = edge_key(node, inp)
                if key not in self.edges:
                    continue
                edge = self.edges[key]
                out = edge(states[inp]) if weights is None else edge(states[inp], weights[self.edge_index[key]])
                total = out if total is None else total + out
            if total is None:  # every incoming edge dropped (SNAS)
                total = s1.new_zeros(s1.shape[0], c, h, h)
            states.append(total)
        return torch.cat(states[2:], dim=1)


class CellNetwork(nn.Module):
    """Stem, cells, global pooling and classifier; ``make_cell(layout) -> Cell``."""

    def __init__(self, space: CellSpace, make_cell):
        super().__init__()
        self.space = space
        self.stem = make_block(space.stem())
        self.cells = nn.ModuleList(make_cell(layout) for layout in space.layouts)
        pool, linear = space.head()
        self.pool = make_block(pool)
        self.classifier = make_block(linear)

    def forward(self, x: torch.Tensor, weights_normal: torch.Tensor | None = None,
                weights_reduce: torch.Tensor | None = None) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            weights = weights_reduce if cell.layout.reduction else weights_normal
            s0, s1 = s1, cell(s0, s1, weights)
        return self.classifier(self.pool(s1))


def build_cell_network(genotype: Genotype) -> CellNetwork:
    """The standalone network of a genotype (affine BN, only the chosen edges)."""
    space = genotype.space

    def make_cell(layout: CellLayout) -> Cell:
        edges = {}
        for j, node_inputs in enumerate(genotype.cell(layout.reduction)):
            for name, inp in node_inputs:
                edges[edge_key(j + 2, inp)] = make_edge(space.edge_op(layout, inp, name))
        return Cell(space, layout, edges)

    return CellNetwork(space, make_cell)


def cell_plan(genotype: Genotype) -> dict:
    """The standalone network as plain JSON data for the Keras builder (:mod:`hwnas.export.keras_cells`).

    Every operator is an OpSpec dict with the state-dict prefix of its PyTorch
    module in :func:`build_cell_network`; ``nodes[j]`` lists node ``j + 2``'s
    incoming edges as ``{"input", "op", "prefix"}`` (an empty list: a zero node).
    """
    space = genotype.space
    cells = []
    for layout in space.layouts:
        pre0, pre1 = space.preprocess(layout)
        at = f"cells.{layout.index}"
        nodes = [[{"input": inp, "op": space.edge_op(layout, inp, name).to_dict(),
                   "prefix": f"{at}.edges.{edge_key(j + 2, inp)}"} for name, inp in node_inputs]
                 for j, node_inputs in enumerate(genotype.cell(layout.reduction))]
        cells.append({"pre0": pre0.to_dict(), "pre0_prefix": f"{at}.preprocess0", "pre1": pre1.to_dict(),
                      "pre1_prefix": f"{at}.preprocess1", "channels": layout.channels, "h": layout.h,
                      "nodes": nodes})
    pool, linear = space.head()
    return {"stem": space.stem().to_dict(), "cells": cells, "pool": pool.to_dict(), "linear": linear.to_dict()}
