"""The ask/tell interface every sample-based strategy implements.

``propose()`` returns the next architecture to evaluate; ``observe(arch, score)``
reports its score (higher is better). A strategy must accept an observation of
*any* architecture of its space, not only the one it just proposed: resuming
replays the logged (architecture, score) pairs through ``propose``/``observe``,
and because every random decision comes from the strategy's own seeded
generators, the replay restores its state exactly.
"""

from __future__ import annotations

import random

from hwnas.arch import Architecture, architecture_of
from hwnas.spaces import SearchSpace


class Strategy:
    """Base class: keeps the seeded generator and the history of observations."""

    name = "base"

    def __init__(self, space: SearchSpace, seed: int = 0):
        self.space = space
        self.seed = seed
        self.rng = random.Random(seed)
        self.history: list[tuple[tuple[str, ...], float]] = []
        self.seen: set[tuple[str, ...]] = set()

    # -- the interface ----------------------------------------------------------
    def propose(self) -> Architecture:
        raise NotImplementedError

    def observe(self, arch: Architecture, score: float) -> None:
        key = tuple(arch.choices)
        self.history.append((key, float(score)))
        self.seen.add(key)
        self._observe(arch, float(score))

    def _observe(self, arch: Architecture, score: float) -> None:
        """Strategy-specific update (override)."""

    # -- helpers --------------------------------------------------------------------
    def arch(self, choices) -> Architecture:
        return architecture_of(self.space, list(choices))

    def random_choices(self) -> list[str]:
        return [self.rng.choice(pos.names) for pos in self.space.positions]

    def random_unseen(self, exclude: set | None = None, tries: int = 200) -> list[str]:
        """A uniformly random architecture not evaluated yet (a repeat if none is found in ``tries``)."""
        exclude = self.seen if exclude is None else exclude
        choices = self.random_choices()
        for _ in range(tries - 1):
            if tuple(choices) not in exclude:
                break
            choices = self.random_choices()
        return choices

    def best(self) -> tuple[tuple[str, ...], float] | None:
        return max(self.history, key=lambda kv: kv[1]) if self.history else None
