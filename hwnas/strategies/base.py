"""The ask/tell interface every sample-based strategy implements, over the whole space (stage widths included).

``propose()`` returns the next architecture to evaluate; ``observe(arch, score)``
reports its score (higher is better). A strategy must accept an observation of
*any* architecture of its space, not only the one it just proposed: resuming
replays the logged (architecture, score) pairs through ``propose``/``observe``,
and because every random decision comes from the strategy's own seeded
generators, the replay restores its state exactly.

Inside a strategy an architecture is a :class:`~hwnas.children.Child`
(a width index per stage, a candidate index per position): the same children
the gradient search decides between. Its *decisions* are the stage widths (when
the space searches them) followed by the positions; :meth:`Strategy.genes` and
:meth:`Strategy.child` convert between a child and its list of decision values.
"""

from __future__ import annotations

import random

from hwnas.arch import Architecture
from hwnas.children import Child, child_arch, child_of
from hwnas.spaces import SearchSpace


def random_child(space: SearchSpace, rng: random.Random) -> Child:
    """A uniformly random child: stage widths (when the space searches them), then one candidate per position."""
    n = space.num_stages
    widths = tuple(rng.randrange(len(space.width_choices)) for _ in range(n)) if space.searches_width else (0,) * n
    return Child(widths, tuple(rng.randrange(len(p.names)) for p in space.positions))


class Strategy:
    """Base class: the seeded generator, the decisions of the space and the history of observations."""

    name = "base"

    def __init__(self, space: SearchSpace, seed: int = 0):
        self.space = space
        self.seed = seed
        self.rng = random.Random(seed)
        self.width_decisions = space.num_stages if space.searches_width else 0
        # options per decision: stage widths (when searched), then candidates per position
        self.sizes = [len(space.width_choices)] * self.width_decisions + [len(p.names) for p in space.positions]
        self.history: list[tuple[Child, float]] = []
        self.seen: set[Child] = set()

    # -- the interface ----------------------------------------------------------
    def propose(self) -> Architecture:
        raise NotImplementedError

    def observe(self, arch: Architecture, score: float) -> None:
        child = self.child_of(arch)
        self.history.append((child, float(score)))
        self.seen.add(child)
        self._observe(child, float(score))

    def _observe(self, child: Child, score: float) -> None:
        """Strategy-specific update (override)."""

    # -- children, decisions, architectures ---------------------------------------------
    def arch(self, child: Child) -> Architecture:
        return child_arch(self.space, child)

    def child_of(self, arch: Architecture) -> Child:
        return child_of(self.space, arch)

    def genes(self, child: Child) -> list[int]:
        """The value of every decision: stage widths (when searched), then positions."""
        return list(child.widths[:self.width_decisions]) + list(child.ops)

    def child(self, genes) -> Child:
        """The child whose decision values are ``genes`` (inverse of :meth:`genes`)."""
        genes = [int(g) for g in genes]
        k = self.width_decisions
        widths = tuple(genes[:k]) if k else (0,) * self.space.num_stages
        return Child(widths, tuple(genes[k:]))

    def stage_decisions(self, stage: int) -> list[int]:
        """Indices of the decisions of one stage: its width (when searched), then its positions."""
        width = [stage] if self.width_decisions else []
        return width + [self.width_decisions + p.index for p in self.space.positions if p.stage == stage]

    def random_child(self) -> Child:
        return random_child(self.space, self.rng)

    def random_unseen(self, exclude: set | None = None, tries: int = 200) -> Child:
        """A uniformly random child not evaluated yet (a repeat if none is found in ``tries``)."""
        exclude = self.seen if exclude is None else exclude
        child = self.random_child()
        for _ in range(tries - 1):
            if child not in exclude:
                break
            child = self.random_child()
        return child

    def best(self) -> tuple[Child, float] | None:
        return max(self.history, key=lambda kv: kv[1]) if self.history else None
