"""Progressive search (PNAS, Liu et al., 2018) over the stages of a space, with a surrogate.

PNAS grows cells block by block and ranks the expanded candidates with a
surrogate trained on everything evaluated so far, keeping the top K. Here a
network must always be complete, so "growing" happens over stages:

1. warm-up: ``warmup`` (default ``beam``) random architectures are evaluated;
2. level ``l`` (stage ``l``, cycling over the stages while evaluations remain):
   the ``beam`` best architectures evaluated so far are the beams; each is
   expanded by every combination of candidates at the positions of stage ``l``
   (at most ``max_candidates`` per level, sampled when there are more) while its
   other stages stay as they are; a scikit-learn regressor (``surrogate``:
   ``ridge`` on one-hot choices, or ``forest``) fitted on all (architecture,
   score) pairs ranks the expansions and the top ``beam`` unseen ones are
   evaluated next.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from hwnas.arch import Architecture
from hwnas.errors import HwnasError
from hwnas.strategies.base import Strategy

SURROGATES = ("ridge", "forest")


def one_hot(space, choices_list) -> np.ndarray:
    """One column per (position, candidate)."""
    offsets = np.cumsum([0] + [len(p.names) for p in space.positions])
    x = np.zeros((len(choices_list), offsets[-1]), dtype=np.float32)
    for row, choices in enumerate(choices_list):
        for i, (pos, c) in enumerate(zip(space.positions, choices)):
            x[row, offsets[i] + pos.names.index(c)] = 1.0
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
        stages = sorted({p.stage for p in space.positions})
        self.stage_positions = [[p.index for p in space.positions if p.stage == s] for s in stages]
        self.level = 0
        self.queue: list[list[str]] = []
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

    def _expand(self) -> list[list[str]]:
        """Candidates of the next level, ranked by the surrogate, top ``beam`` unseen."""
        for _ in range(len(self.stage_positions)):  # skip stages with nothing new to try
            positions = self.stage_positions[self.level]
            self.level = (self.level + 1) % len(self.stage_positions)
            candidates = self._candidates(positions)
            if candidates:
                break
        else:
            return []
        model = make_surrogate(self.surrogate_name, self.seed)
        keys = [k for k, _ in self.history]
        model.fit(one_hot(self.space, keys), np.array([s for _, s in self.history]))
        predicted = model.predict(one_hot(self.space, candidates))
        order = np.argsort(-predicted, kind="stable")
        return [candidates[i] for i in order[: self.beam]]

    def _candidates(self, positions: list[int]) -> list[list[str]]:
        beams = [list(k) for k, _ in sorted(self.history, key=lambda kv: -kv[1])[: self.beam]]
        names = [self.space.positions[i].names for i in positions]
        combos = math.prod(len(n) for n in names)
        per_beam = max(1, self.max_candidates // max(1, len(beams)))
        out, seen = [], set(self.seen)
        for parent in beams:
            if combos <= per_beam:
                options = itertools.product(*names)
            else:
                options = (tuple(self.rng.choice(n) for n in names) for _ in range(per_beam))
            for option in options:
                child = list(parent)
                for i, c in zip(positions, option):
                    child[i] = c
                if tuple(child) not in seen:
                    seen.add(tuple(child))
                    out.append(child)
        return out
