"""Children of a chain space (:class:`Child`) and their cost tables: the cost of every choice, laid out by the decisions it depends on.

A child of a chain space is one width per stage (an index into
``space.width_choices``) and one candidate per position (an index into
``position.names``): a :class:`Child`. Any additive cost (predicted latency,
FLOPs, params, MAC) of a child is a sum of small terms::

    cost = fixed + head[w_last] + sum_i table[i][c_i, w_in(i), w_stage(i)]

``w_in(i)`` is the previous stage's width for the first position of a stage
after the first (its input channels depend on it) and 0 otherwise (the table's
second axis then has length 1). Spaces without width search have one width,
so the tables are the familiar per-position cost vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from hwnas.arch import Architecture, architecture_of
from hwnas.errors import HwnasError
from hwnas.ops import OpSpec
from hwnas.spaces import SearchSpace


@dataclass(frozen=True)
class Child:
    """One child of a chain space: width index per stage, candidate index per position."""

    widths: tuple[int, ...]
    ops: tuple[int, ...]


def base_space(space: SearchSpace) -> SearchSpace:
    """The space at the first width choice everywhere (the layout shared by all widths)."""
    return space.at_widths([space.width_choices[0]] * space.num_stages) if space.searches_width else space


def child_arch(space: SearchSpace, child: Child) -> Architecture:
    """The architecture of ``child`` (its stage widths go into the file's ``space_params``)."""
    if space.searches_width:
        space = space.at_widths([space.width_choices[w] for w in child.widths])
    return architecture_of(space, [pos.names[c] for pos, c in zip(space.positions, child.ops)])


def child_of(space: SearchSpace, arch: Architecture) -> Child:
    """The :class:`Child` of an architecture of ``space`` (its stage widths must be width choices)."""
    choices = space.width_choices
    widths = arch.space.stage_widths if space.searches_width else (choices[0],) * space.num_stages
    missing = [w for w in widths if w not in choices]
    if missing:
        raise HwnasError(f"stage widths {list(widths)} are not all width choices of {space.name} ({list(choices)})")
    return Child(tuple(choices.index(w) for w in widths),
                 tuple(pos.names.index(c) for pos, c in zip(space.positions, arch.choices)))


class CostTable:
    """Cost of every choice of ``space`` from ``cost_of(op) -> float`` (identity operators cost 0).

    ``fixed`` covers the stem (and ``extra``, e.g. a predictor's constant overhead); ``head[w]`` the head at
    last-stage width ``w``; ``table[i]`` has shape ``[candidates, 1 or widths, widths]``.
    """

    def __init__(self, space: SearchSpace, cost_of: Callable[[list[OpSpec]], list[float]], extra: float = 0.0):
        self.space = space
        n_w, n_s = len(space.width_choices), space.num_stages
        base = base_space(space)
        self.stage_of = [pos.stage for pos in base.positions]
        self.first = [i == 0 or self.stage_of[i - 1] != self.stage_of[i] for i in range(len(self.stage_of))]
        self.names = [list(pos.names) for pos in base.positions]
        # ops of every variant, priced in one batch (regressors predict many operators at once)
        variants: dict[tuple[int, ...], SearchSpace] = {}

        def variant(widths: tuple[int, ...]) -> SearchSpace:
            if widths not in variants:
                variants[widths] = space.at_widths([space.width_choices[w] for w in widths]) \
                    if space.searches_width else space
            return variants[widths]

        def widths_for(stage: int, a: int, b: int) -> tuple[int, ...]:
            w = [0] * n_s
            if stage > 0:
                w[stage - 1] = a
            w[stage] = b
            return tuple(w)

        wanted: list[tuple[str, int, int, int, int, OpSpec]] = []  # (what, i, c, a, b, op)
        for i, stage in enumerate(self.stage_of):
            ins = range(n_w) if self.first[i] and stage > 0 else range(1)
            for a in ins:
                for b in range(n_w):
                    pos = variant(widths_for(stage, a, b)).positions[i]
                    wanted += [("op", i, c, a, b, op) for c, op in enumerate(pos.ops)]
        for b in range(n_w):
            wanted += [("head", 0, 0, 0, b, op) for op in variant(widths_for(n_s - 1, 0, b)).head]
        wanted += [("stem", 0, 0, 0, 0, op) for op in base.stem]
        real = list(dict.fromkeys(op for *_, op in wanted if not op.is_identity))
        prices = dict(zip(real, (float(v) for v in cost_of(real))))

        self.table = [torch.zeros(len(self.names[i]), n_w if self.first[i] and self.stage_of[i] > 0 else 1, n_w,
                                  dtype=torch.float64) for i in range(len(self.names))]
        self.head = torch.zeros(n_w, dtype=torch.float64)
        self.fixed = float(extra)
        for what, i, c, a, b, op in wanted:
            value = 0.0 if op.is_identity else prices[op]
            if what == "op":
                self.table[i][c, a, b] = value
            elif what == "head":
                self.head[b] += value
            else:
                self.fixed += value

    # -- layout ----------------------------------------------------------------------
    @property
    def num_widths(self) -> int:
        return len(self.space.width_choices)

    @property
    def num_stages(self) -> int:
        return self.space.num_stages

    def stage_positions(self, stage: int) -> list[int]:
        return [i for i, s in enumerate(self.stage_of) if s == stage]

    def input_width(self, i: int, widths) -> int:
        """Index along ``table[i]``'s second axis for a child with stage widths ``widths``."""
        return widths[self.stage_of[i] - 1] if self.table[i].shape[1] > 1 else 0

    # -- costs of children ---------------------------------------------------------------
    def cost(self, child: Child) -> float:
        total = self.fixed + float(self.head[child.widths[-1]])
        for i, c in enumerate(child.ops):
            total += float(self.table[i][c, self.input_width(i, child.widths), child.widths[self.stage_of[i]]])
        return total

    def _extreme(self, pick) -> float:
        """min or max (``pick``) cost over all children: a pass over stages with the stage width as state."""
        best = None  # per width of the previous stage
        for s in range(self.num_stages):
            here = []
            for b in range(self.num_widths):
                options = []
                for a in (range(self.num_widths) if s > 0 else [0]):
                    total = 0.0 if s == 0 else best[a]
                    for i in self.stage_positions(s):
                        total += float(pick(self.table[i][:, a if self.table[i].shape[1] > 1 else 0, b]))
                    options.append(total)
                here.append(pick(torch.tensor(options)).item())
            best = here
        return self.fixed + float(pick(torch.tensor(best, dtype=torch.float64) + self.head))

    def min(self) -> float:
        """The cheapest child's cost."""
        if not hasattr(self, "_min"):
            self._min = self._extreme(torch.min)
        return self._min

    def max(self) -> float:
        """The most expensive child's cost."""
        if not hasattr(self, "_max"):
            self._max = self._extreme(torch.max)
        return self._max

    @property
    def span(self) -> float:
        return max(self.max() - self.min(), 1e-12)

    def largest_child(self) -> Child:
        """Widest stages and the most expensive candidate at every position (the sandwich rule's largest)."""
        n_w = self.num_widths
        widths = tuple(max(range(n_w), key=lambda w: self.space.width_choices[w]) for _ in range(self.num_stages))
        ops = tuple(int(self.table[i][:, self.input_width(i, widths), widths[self.stage_of[i]]].argmax())
                    for i in range(len(self.names)))
        return Child(widths, ops)


def latency_table(space: SearchSpace, predictor) -> CostTable:
    """Predicted ms of every choice (the predictor's constant overhead in ``fixed``)."""
    many = getattr(predictor, "predict_many", None)
    price = (lambda ops: many(ops)) if many else (lambda ops: [predictor.predict_op(op) for op in ops])
    return CostTable(space, price, extra=float(getattr(predictor, "overhead_ms", 0.0)))


def analytic_table(space: SearchSpace, kind: str) -> CostTable:
    """FLOPs, params or MAC (``kind``) of every choice, from :mod:`hwnas.costs`."""
    from hwnas.costs import op_cost

    return CostTable(space, lambda ops: [getattr(op_cost(op), kind) for op in ops])
