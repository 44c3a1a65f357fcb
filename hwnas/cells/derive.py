"""Deriving a genotype from architecture weights.

``darts``: for each intermediate node keep the two incoming edges whose strongest
non-zero operation has the largest weight, each with that operation (zero can
never be chosen, every node gets exactly two inputs).

``snas``: each edge takes the argmax of its distribution *including zero* (or a
one-hot sample of it); zero drops the edge, so a node can have any number of
inputs, none included.
"""

from __future__ import annotations

import torch

from hwnas.errors import HwnasError
from hwnas.cells.genotype import CellSpec
from hwnas.cells.ops import PRIMITIVES

RULES = ("darts", "snas")
ZERO = PRIMITIVES.index("zero")


def _by_node(edges: list[tuple[int, int]]) -> dict[int, list[tuple[int, int]]]:
    """node -> [(edge row, input node)]"""
    nodes: dict[int, list[tuple[int, int]]] = {}
    for e, (node, inp) in enumerate(edges):
        nodes.setdefault(node, []).append((e, inp))
    return nodes


def derive_darts(weights: torch.Tensor, edges: list[tuple[int, int]], keep: int = 2) -> CellSpec:
    """DARTS rule on an (edges x primitives) weight matrix (probabilities or alphas)."""
    weights = weights.detach().clone()
    weights[:, ZERO] = float("-inf")
    cell = []
    for node, incoming in sorted(_by_node(edges).items()):
        strength = [(float(weights[e].max()), inp, int(weights[e].argmax())) for e, inp in incoming]
        top = sorted(strength, key=lambda s: -s[0])[:keep]
        cell.append([(PRIMITIVES[op], inp) for _, inp, op in sorted(top, key=lambda s: s[1])])
    return cell


def derive_snas(weights: torch.Tensor, edges: list[tuple[int, int]], sample: bool = False,
                generator: torch.Generator | None = None) -> CellSpec:
    """SNAS rule: per edge the argmax (or, with ``sample``, a draw from softmax(weights) read as
    logits) over all primitives; zero edges are dropped."""
    weights = weights.detach()
    if sample:
        choice = torch.multinomial(torch.softmax(weights, -1), 1, generator=generator).squeeze(1)
    else:
        choice = weights.argmax(-1)
    cell = []
    for node, incoming in sorted(_by_node(edges).items()):
        cell.append([(PRIMITIVES[int(choice[e])], inp) for e, inp in incoming if int(choice[e]) != ZERO])
    return cell


def derive(weights: torch.Tensor, edges: list[tuple[int, int]], rule: str) -> CellSpec:
    if rule == "darts":
        return derive_darts(weights, edges)
    if rule == "snas":
        return derive_snas(weights, edges)
    raise HwnasError(f"unknown derivation rule {rule!r}; expected one of {', '.join(RULES)}")


def edge_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each edge's distribution; ``probs`` is (edges x primitives)."""
    p = probs.clamp_min(1e-12)
    return -(probs * p.log()).sum(-1)
