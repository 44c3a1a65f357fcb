"""Regularized (aging) evolution (Real et al., 2019, "AmoebaNet").

The first ``population`` proposals are random. After that each proposal is a
mutation of a tournament winner: ``sample_size`` members are drawn from the
population, the best-scoring one is copied, and one decision (chosen at random
among those with more than one option: a stage's width or a position's
candidate) gets a different value. Every
observation joins the population and the *oldest* member leaves, so an
architecture survives only while its descendants keep scoring well.
"""

from __future__ import annotations

from collections import deque

from hwnas.arch import Architecture
from hwnas.errors import HwnasError
from hwnas.children import Child
from hwnas.strategies.base import Strategy


class RegularizedEvolution(Strategy):
    name = "evolution"

    def __init__(self, space, seed: int = 0, population: int = 16, sample_size: int = 4, mutations: int = 1):
        super().__init__(space, seed)
        if population < 2:
            raise HwnasError(f"evolution: population must be at least 2, got {population}")
        if not 1 <= sample_size <= population:
            raise HwnasError(f"evolution: sample size must be between 1 and the population ({population}), "
                             f"got {sample_size}")
        self.population_size, self.sample_size, self.mutations = population, sample_size, mutations
        self.population: deque[tuple[Child, float]] = deque()
        self.proposed = 0
        self._mutable = [d for d, n in enumerate(self.sizes) if n > 1]

    def propose(self) -> Architecture:
        self.proposed += 1
        if self.proposed <= self.population_size or len(self.population) < 2:
            return self.arch(self.random_unseen())
        contenders = self.rng.sample(list(self.population), min(self.sample_size, len(self.population)))
        parent = max(contenders, key=lambda kv: kv[1])[0]
        child = self.mutate(parent)
        for _ in range(20):  # prefer a child not evaluated yet
            if child not in self.seen:
                break
            child = self.mutate(parent)
        return self.arch(child)

    def mutate(self, parent: Child) -> Child:
        """``parent`` with ``mutations`` random decisions (stage width or candidate) changed to another option."""
        genes = self.genes(parent)
        for _ in range(self.mutations):
            if not self._mutable:
                break
            d = self.rng.choice(self._mutable)
            genes[d] = self.rng.choice([v for v in range(self.sizes[d]) if v != genes[d]])
        return self.child(genes)

    def _observe(self, child: Child, score: float) -> None:
        self.population.append((child, score))
        while len(self.population) > self.population_size:
            self.population.popleft()
