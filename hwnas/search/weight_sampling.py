"""Which child a sandwich weight step trains beside the largest one (``SearchConfig.weight_sampling``).

* ``alpha`` (default): drawn from the search's (tilted) architecture distribution, as ProxylessNAS does; the
  children alpha favours get the most trained weights, so the supernet's accuracy follows alpha.
* ``uniform``: every decision (stage widths and candidates) uniform, as single-path one-shot NAS and BigNAS
  train their supernets, so every child gets a comparable share of training.
* ``band``: uniform over the children whose predicted latency lies in ``[BAND_LOW, 1] x budget`` (a pool of
  distinct children drawn once per search seed), the children a derivation in the budget chooses between.

Draws are seeded from (seed, epoch), so a resumed search samples the same children.
"""

from __future__ import annotations

import random

from hwnas.children import Child, CostTable
from hwnas.errors import HwnasError
from hwnas.search.band import sample_children_in_band

WEIGHT_SAMPLINGS = ("alpha", "uniform", "band")
BAND_LOW = 0.85  # band sampling: children predicted in [BAND_LOW, 1] x budget
POOL = 4096  # band sampling: distinct children drawn once, then sampled uniformly


class WeightSampler:
    """``sample(epoch_rng)``: the child one weight step trains (``alpha`` asks ``sample_alpha``)."""

    def __init__(self, kind: str, table: CostTable, budget_ms: float | None, seed: int, sample_alpha):
        if kind not in WEIGHT_SAMPLINGS:
            raise HwnasError(f"weight sampling must be one of {', '.join(WEIGHT_SAMPLINGS)}, got {kind!r}")
        self.kind, self.table, self.sample_alpha = kind, table, sample_alpha
        self.pool: list[Child] = []
        if kind == "band":
            if budget_ms is None:
                raise HwnasError("weight sampling 'band' needs a latency budget")
            self.pool = sample_children_in_band(table, BAND_LOW * budget_ms, budget_ms, POOL, seed)
            if not self.pool:
                raise HwnasError(f"weight sampling 'band': no child of the space is predicted in "
                                 f"[{BAND_LOW * budget_ms:.3f}, {budget_ms:.3f}] ms")

    def sample(self, rng: random.Random) -> Child:
        if self.kind == "alpha":
            return self.sample_alpha()
        if self.kind == "band":
            return self.pool[rng.randrange(len(self.pool))]
        widths = tuple(rng.randrange(self.table.num_widths) for _ in range(self.table.num_stages))
        return Child(widths, tuple(rng.randrange(len(names)) for names in self.table.names))
