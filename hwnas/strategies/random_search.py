"""Random search: uniform samples of the space (stage widths included), without repeats while unseen ones are
easy to find."""

from __future__ import annotations

from hwnas.arch import Architecture
from hwnas.children import Child
from hwnas.strategies.base import Strategy


class RandomSearch(Strategy):
    name = "random"

    def __init__(self, space, seed: int = 0):
        super().__init__(space, seed)
        self._proposed: set[Child] = set()

    def propose(self) -> Architecture:
        child = self.random_unseen(self.seen | self._proposed)
        self._proposed.add(child)
        return self.arch(child)
