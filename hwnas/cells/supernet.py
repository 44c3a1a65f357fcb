"""The cell supernet: every edge of every cell a mixed operation over all primitives.

Edges reuse :class:`hwnas.supernet.mixed_op.MixedOp` (modes darts, snas,
proxyless). All normal cells share one architecture vector per edge, all
reduction cells another (``alphas_normal`` / ``alphas_reduce``, rows in the
space's edge order, columns in ``PRIMITIVES`` order). As in DARTS, BN has no
affine parameters in the supernet and pooling paths get a BN of their own.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.blocks import BN_EPS, make_edge
from hwnas.supernet.mixed_op import MixedOp, make_mode
from hwnas.cells.genotype import Genotype
from hwnas.cells.network import Cell, CellNetwork, build_cell_network, edge_key
from hwnas.cells.ops import PRIMITIVES
from hwnas.cells.space import CellLayout, CellSpace


def _candidate(space: CellSpace, layout: CellLayout, inp: int, name: str) -> nn.Module:
    op = space.edge_op(layout, inp, name)
    module = make_edge(op, affine=False)
    if op.kind in ("max_pool", "avg_pool"):
        module = nn.Sequential(module, nn.BatchNorm2d(op.c_out, eps=BN_EPS, affine=False))
    return module


class CellSupernet(CellNetwork):
    """The cell network with a mixed op on every edge; ``mode`` is a mixed-op mode name."""

    def __init__(self, space: CellSpace, mode: str = "darts", **mode_kwargs):
        self.mode = make_mode(mode, **mode_kwargs)
        n_ops = len(PRIMITIVES)

        def make_cell(layout: CellLayout) -> Cell:
            edges = {edge_key(node, inp): MixedOp([_candidate(space, layout, inp, name) for name in PRIMITIVES],
                                                  list(PRIMITIVES), self.mode)
                     for node, inp in space.edges}
            return Cell(space, layout, edges, affine=False)

        super().__init__(space, make_cell)
        self.alphas_normal = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(n_ops)) for _ in space.edges)
        self.alphas_reduce = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(n_ops)) for _ in space.edges)
        for cell in self.cells:  # share one alpha per edge and cell type
            alphas = self.alphas_reduce if cell.layout.reduction else self.alphas_normal
            for key, e in cell.edge_index.items():
                cell.edges[key].alpha = alphas[e]

    # -- parameters -----------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas_normal) + list(self.alphas_reduce)

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def mixed_ops(self) -> list[MixedOp]:
        return [m for m in self.modules() if isinstance(m, MixedOp)]

    def alphas(self, reduction: bool) -> torch.Tensor:
        """(edges x primitives) architecture parameters of one cell type."""
        return torch.stack(list(self.alphas_reduce if reduction else self.alphas_normal))

    def probs(self, reduction: bool) -> torch.Tensor:
        return torch.softmax(self.alphas(reduction), dim=-1)

    # -- sampling and evaluation modes ------------------------------------------------
    def sample(self, phase: str = "weight", generator: torch.Generator | None = None) -> None:
        """Draw this step's paths in every mixed op (Gumbel noise for snas)."""
        for m in self.mixed_ops():
            m.sample(phase, generator)

    resample = sample  # the name hwnas.search.updates calls

    @property
    def mixed(self) -> list[MixedOp]:
        return self.mixed_ops()

    def set_temperature(self, tau: float) -> None:
        if hasattr(self.mode, "tau"):
            self.mode.tau = tau

    def fix(self, genotype: Genotype | None) -> None:
        """Pin every edge to the genotype's operation (dropped edges to zero): the child with
        shared weights. ``None`` returns to the supernet."""
        for cell in self.cells:
            chosen = {}
            if genotype is not None:
                for j, node_inputs in enumerate(genotype.cell(cell.layout.reduction)):
                    for name, inp in node_inputs:
                        chosen[edge_key(j + 2, inp)] = name
            for key, edge in cell.edges.items():
                edge.set_active(None if genotype is None else chosen.get(key, "zero"))

    # -- the supernet vocabulary (as Supernet and EntangledSupernet speak it): a child is a genotype --------
    def set_child(self, genotype: Genotype | None) -> None:
        """Run exactly the genotype's cells with shared weights (:meth:`fix`); ``None`` returns to the supernet."""
        self.fix(genotype)

    def sample_child(self, generator: torch.Generator | None = None) -> Genotype:
        """A genotype drawn edge by edge from the architecture distribution (zero drops the edge: the SNAS rule)."""
        from hwnas.cells.derive import derive_snas

        return Genotype(derive_snas(self.alphas(False), self.space.edges, sample=True, generator=generator),
                        derive_snas(self.alphas(True), self.space.edges, sample=True, generator=generator),
                        self.space.params)

    @staticmethod
    def child_cost(genotype: Genotype, kind: str = "flops", predictor=None) -> float:
        """The genotype's standalone network's cost: flops|mac|params, or latency from ``predictor``."""
        if kind == "latency":
            return float(predictor.predict_ops(genotype.ops()))
        return float(getattr(genotype.cost(), kind))

    @torch.no_grad()
    def extract(self, genotype: Genotype) -> nn.Module:
        """The genotype's standalone network (:func:`hwnas.cells.network.build_cell_network`) holding the
        supernet's weights; its affine BN starts as the identity, as the search's BN has none (pooling edges keep
        no BN: a standalone DARTS cell has none there)."""
        model = build_cell_network(genotype)
        chosen = {}
        for cell in self.cells:
            for j, node_inputs in enumerate(genotype.cell(cell.layout.reduction)):
                for name, inp in node_inputs:
                    chosen[(cell.layout.index, edge_key(j + 2, inp))] = PRIMITIVES.index(name)
        source, state = self.state_dict(), model.state_dict()
        for key in state:
            parts = key.split(".")
            if parts[0] == "cells" and parts[2] == "edges":
                parts[4:4] = ["candidates", str(chosen[(int(parts[1]), parts[3])])]
            src = ".".join(parts)
            if src in source and source[src].shape == state[key].shape:
                state[key] = source[src]
        model.load_state_dict(state)
        return model

    def eval_relaxed(self) -> None:
        """Evaluation mode for BN, but mixed ops keep combining paths as in training
        (the supernet's own accuracy: weighted sum for darts, a Gumbel sample for snas)."""
        self.eval()
        for m in self.mixed_ops():
            m.training = True
