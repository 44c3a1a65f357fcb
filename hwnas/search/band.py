"""Derive a child that uses its budget: the most probable child whose latency lies in a band.

``most_probable_in_band(table, op_logp, width_logp, low, high)`` (or
:class:`BandDecoder`, which refuses an unreachable band when it is made) maximises
``sum log p(width) + sum log p(candidate)`` over every child of the space whose
predicted latency (``table``, :mod:`hwnas.children`) lies in
``[low, high]`` ms. It is an exact dynamic programme over positions whose
state is (width of the current stage, latency so far) with latency counted in
small bins; every latency term is rounded to a bin, so the programme searches a
band narrowed by the largest possible rounding error and the answer's exact
latency is always inside ``[low, high]``. A band no child can reach is refused
with the latencies the space can reach.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hwnas.errors import HwnasError
from hwnas.children import Child, CostTable

NEG = -np.inf


@dataclass
class BandResult:
    child: Child
    latency_ms: float
    log_prob: float


def _shift_max(dest: np.ndarray, src: np.ndarray, shift: int, gain: float) -> np.ndarray:
    """dest[l] = max(dest[l], src[l - shift] + gain); returns where the new value won."""
    n = len(dest)
    won = np.zeros(n, dtype=bool)
    if shift < n:
        cand = src[:n - shift] + gain
        won[shift:] = cand > dest[shift:]
        dest[won] = cand[won[shift:]]
    return won


def most_probable_in_band(table: CostTable, op_logp: list[np.ndarray], width_logp: list[np.ndarray],
                          low: float, high: float, bins: int = 3000) -> BandResult:
    """The child with the highest log-probability and ``low <= latency <= high`` (see the module docstring)."""
    if not 0 <= low <= high:
        raise HwnasError(f"latency band [{low:g}, {high:g}] ms is not a band")
    lo_all, hi_all = table.min(), table.max()
    if high < lo_all or low > hi_all:
        raise HwnasError(f"no child of {table.space.name} has a predicted latency in [{low:.4f}, {high:.4f}] ms: "
                         f"the space reaches {lo_all:.4f}-{hi_all:.4f} ms; choose a budget whose band lies there")
    n_w, n_p = table.num_widths, len(table.table)
    res = max(high, 1e-9) / bins
    q = [np.rint(t.numpy() / res).astype(np.int64) for t in table.table]  # binned costs
    head_q = np.rint(table.head.numpy() / res).astype(np.int64)
    error = (n_p + 2) * res / 2  # largest total rounding error (positions, head, fixed)
    fixed_q = int(round(table.fixed / res))
    top = int(math.floor((high - error) / res)) - fixed_q - int(head_q.min())  # no state above this matters
    size = max(top + 1, 1)
    score = np.full((n_w, size), NEG)
    score[:, 0] = 0.0  # before the first position; stage 0's width is chosen at its first position
    pick_c, pick_a = [], []  # per position: winning candidate and previous-stage width by (width, bin)
    for i in range(n_p):
        stage = table.stage_of[i]
        new = np.full((n_w, size), NEG)
        arg_c = np.full((n_w, size), -1, dtype=np.int64)
        arg_a = np.full((n_w, size), -1, dtype=np.int64)
        for b in range(n_w):
            if table.first[i]:
                sources = [(a, score[a] if stage > 0 else score[0], width_logp[stage][b]) for a in
                           (range(n_w) if stage > 0 else [0])]
            else:
                sources = [(b, score[b], 0.0)]
            for a, src, gain in sources:
                ax = a if q[i].shape[1] > 1 else 0
                for c in range(q[i].shape[0]):
                    won = _shift_max(new[b], src, int(q[i][c, ax, b]), gain + op_logp[i][c])
                    arg_c[b][won] = c
                    arg_a[b][won] = a
        score = new
        pick_c.append(arg_c)
        pick_a.append(arg_a)
    # finish: add the head; choose the best end state inside the (narrowed) band
    lo_bin = int(math.ceil((low + error) / res)) - fixed_q
    best = None
    for b in range(n_w):
        ends = np.arange(size) + head_q[b]
        ok = (ends >= lo_bin) & (ends <= top + int(head_q.min())) & np.isfinite(score[b])
        if ok.any():
            idx = np.flatnonzero(ok)
            j = idx[np.argmax(score[b][idx])]
            if best is None or score[b][j] > best[0]:
                best = (score[b][j], b, int(j))
    if best is None:
        raise HwnasError(_no_child_message(table, score, head_q, res, fixed_q, low, high))
    log_prob, b, level = best
    widths, ops = [0] * table.num_stages, [0] * n_p
    widths[-1] = b
    for i in range(n_p - 1, -1, -1):
        c = int(pick_c[i][b, level])
        a = int(pick_a[i][b, level])
        ops[i] = c
        stage = table.stage_of[i]
        level -= int(q[i][c, a if q[i].shape[1] > 1 else 0, b])
        if table.first[i] and stage > 0:
            widths[stage - 1] = a
            b = a
    child = Child(tuple(widths), tuple(ops))
    return BandResult(child, table.cost(child), float(log_prob))


def _no_child_message(table, score, head_q, res, fixed_q, low, high) -> str:
    reached = sorted({(int(level) + int(head_q[b]) + fixed_q) * res for b in range(len(score))
                      for level in np.flatnonzero(np.isfinite(score[b]))})
    below = max((v for v in reached if v < low), default=None)
    near = f"; nearest reachable below: {below:.4f} ms" if below is not None else ""
    return (f"no child of {table.space.name} has a predicted latency in [{low:.4f}, {high:.4f}] ms "
            f"(the space reaches {table.min():.4f}-{table.max():.4f} ms{near}); widen the band")


class BandDecoder:
    """Derivation in one band ``[low, high]`` ms of one cost table; refuses a band no child reaches when made."""

    def __init__(self, table: CostTable, low: float, high: float):
        self.table, self.low, self.high = table, low, high
        self.decode([np.zeros(len(t)) for t in table.table])  # any child in band: raises when there is none

    def decode(self, op_logp: list[np.ndarray], width_logp: list[np.ndarray] | None = None) -> BandResult:
        """The most probable child in the band (``width_logp``: None when the widths are fixed)."""
        if width_logp is None:
            width_logp = [np.zeros(self.table.num_widths)] * self.table.num_stages
        return most_probable_in_band(self.table, op_logp, width_logp, self.low, self.high)


def sample_children_in_band(table: CostTable, low: float, high: float, n: int, seed,
                            max_draws: int = 2_000_000, op_probs=None, width_probs=None) -> list[Child]:
    """Up to ``n`` distinct children drawn from the whole space (stage widths included) among those whose
    latency (``table``) lies in ``[low, high]``, by rejection sampling (fewer when ``max_draws`` draws do not
    find ``n``). Every decision is uniform, or drawn from ``op_probs[i]`` / ``width_probs[s]`` (a prior, e.g.
    the search's architecture distribution) when given."""
    cells = [t.numpy() for t in table.table]
    head = table.head.numpy()
    n_w, stages = table.num_widths, table.num_stages
    rng = np.random.default_rng(seed)

    def draw(options: int, size, probs):
        return rng.integers(0, options, size=size) if probs is None else rng.choice(options, size=size, p=probs)

    found: dict = {}
    draws = 0
    while len(found) < n and draws < max_draws:
        size = 20000
        widths = (rng.integers(0, n_w, size=(size, stages)) if width_probs is None else
                  np.stack([draw(n_w, size, width_probs[s]) for s in range(stages)], 1))
        ops = np.stack([draw(len(c), size, None if op_probs is None else op_probs[i]) for i, c in enumerate(cells)], 1)
        cost = table.fixed + head[widths[:, -1]]
        for i, c in enumerate(cells):
            s = table.stage_of[i]
            w_in = widths[:, s - 1] if c.shape[1] > 1 else np.zeros(size, dtype=int)
            cost = cost + c[ops[:, i], w_in, widths[:, s]]
        for j in np.flatnonzero((cost >= low) & (cost <= high)):
            found.setdefault(Child(tuple(int(w) for w in widths[j]), tuple(int(o) for o in ops[j])), None)
            if len(found) == n:
                break
        draws += size
    return list(found)
