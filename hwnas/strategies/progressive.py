"""Progressive search (PNAS, Liu et al., 2018) over the stages of a space, with a surrogate.

PNAS grows cells block by block and ranks the expanded candidates with a
surrogate trained on everything evaluated so far, keeping the top K. Here a
network must always be complete, so "growing" happens over stages:

1. warm-up: ``warmup`` (default ``beam``) random architectures are evaluated;
2. level ``l`` (stage ``l``, cycling over the stages while evaluations remain):
   the ``beam`` best architectures evaluated so far are the beams; each is
   expanded by every combination of stage ``l``'s width (when the space
   searches widths) and candidates at its positions (at most
   ``max_candidates`` per level, sampled when there are more) while its other
   stages stay as they are; a scikit-learn regressor (``surrogate``: ``ridge``
   on one-hot decisions -- stage widths and candidates --, or ``forest``)
   fitted on all (architecture, score) pairs ranks the expansions and the top
   ``beam`` unseen ones are evaluated next.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from hwnas.arch import Architecture
from hwnas.errors import HwnasError
from hwnas.children import Child
from hwnas.strategies.base import Strategy

SURROGATES = ("ridge", "forest")


def one_hot(sizes: list[int], genes_list) -> np.ndarray:
    """One column per (decision, option): ``sizes[d]`` options of decision ``d``, rows of decision values."""
    offsets = np.cumsum([0] + list(sizes))
    x = np.zeros((len(genes_list), offsets[-1]), dtype=np.float32)
    for row, genes in enumerate(genes_list):
        x[row, offsets[:-1] + np.asarray(genes)] = 1.0
    return x


def make_surrogate(name: str, seed: int):
    if name == "ridge":
        from sklearn.linear_model import Ridge
        return Ridge(alpha=1.0)
    if name == "forest":
        from sklearn.ensemble import RandomForestRegressor
        return RandomForestRegressor(n_estimators=100, min_samples_leaf=1, random_state=seed, n_jobs=1)
    raise HwnasError(f"unknown surrogate {name!r}; known: {', '.join(SURROGATES)}")


class ProgressiveSearch(Strategy):
    name = "progressive"

    def __init__(self, space, seed: int = 0, beam: int = 8, warmup: int | None = None,
                 max_candidates: int = 2000, surrogate: str = "ridge"):
        super().__init__(space, seed)
        if beam < 1:
            raise HwnasError(f"progressive: beam (top K) must be positive, got {beam}")
        make_surrogate(surrogate, seed)  # validates the name
        self.beam, self.max_candidates, self.surrogate_name = beam, max_candidates, surrogate
        self.warmup = beam if warmup is None else warmup
        self.levels = [self.stage_decisions(s) for s in range(space.num_stages)]
        self.level = 0
        self.queue: list[Child] = []
        self.proposed = 0

    def propose(self) -> Architecture:
        self.proposed += 1
        if self.proposed <= self.warmup or len(self.history) < 2:
            return self.arch(self.random_unseen())
        if not self.queue:
            self.queue = self._expand()
        if not self.queue:  # everything reachable was evaluated
            return self.arch(self.random_unseen())
        return self.arch(self.queue.pop(0))

    def features(self, children: list[Child]) -> np.ndarray:
        """The surrogate's inputs: one-hot stage widths and candidates."""
        return one_hot(self.sizes, [self.genes(c) for c in children])

    def _expand(self) -> list[Child]:
        """Candidates of the next level, ranked by the surrogate, top ``beam`` unseen."""
        for _ in range(len(self.levels)):  # skip stages with nothing new to try
            decisions = self.levels[self.level]
            self.level = (self.level + 1) % len(self.levels)
            candidates = self._candidates(decisions)
            if candidates:
                break
        else:
            return []
        model = make_surrogate(self.surrogate_name, self.seed)
        model.fit(self.features([c for c, _ in self.history]), np.array([s for _, s in self.history]))
        predicted = model.predict(self.features(candidates))
        order = np.argsort(-predicted, kind="stable")
        return [candidates[i] for i in order[: self.beam]]

    def _candidates(self, decisions: list[int]) -> list[Child]:
        """Every beam with the values of ``decisions`` (one stage's width and candidates) replaced."""
        beams = [c for c, _ in sorted(self.history, key=lambda kv: -kv[1])[: self.beam]]
        ranges = [range(self.sizes[d]) for d in decisions]
        combos = math.prod(len(r) for r in ranges)
        per_beam = max(1, self.max_candidates // max(1, len(beams)))
        out, seen = [], set(self.seen)
        for parent in beams:
            if combos <= per_beam:
                options = itertools.product(*ranges)
            else:
                options = (tuple(self.rng.choice(r) for r in ranges) for _ in range(per_beam))
            for option in options:
                genes = self.genes(parent)
                for d, v in zip(decisions, option):
                    genes[d] = v
                child = self.child(genes)
                if child not in seen:
                    seen.add(child)
                    out.append(child)
        return out
