"""Recognise this machine by timing: which committed table's relative costs fit it.

A CPU string names a model, not a machine: two 2-core "AMD EPYC" VMs ran one
table 1.5-1.9x apart, with k7 relatively cheaper on one of them. A scalar
(the session level) fixes the first, never the second. So before a committed
table is used, a fixed set of *anchor* models is timed here, now, and each
candidate table is judged by what a level cannot fix::

    ratio_i = measured_i / predicted_i        (anchor i, by the candidate's predictor)
    level   = median_i ratio_i
    error   = mean_i |ratio_i / level - 1|     (the anchors' mean error after levelling)

The candidate with the smallest error is this machine's table when its error
is within ``tolerance`` (3%); otherwise none is, and the caller profiles (or
adapts a table). The mean, not the worst anchor: a table's own error on one
extreme anchor (measured here: 7 anchors within 1% of their own machine's table,
the heaviest, 3.4 ms, 10.8% off) must not make its machine a stranger, while
another machine's relative costs move every anchor (8-17% on the other EPYC). The anchors are the same for every candidate: ``count``
children of the space drawn with a fixed seed and spread over its FLOPs range,
so their measured times are also this machine's timing *fingerprint*
(:func:`fingerprint`), recorded in the device description beside the CPU string.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np

from hwnas.arch import Architecture
from hwnas.costs import total_cost
from hwnas.errors import HwnasError

TOLERANCE = 0.03  # anchors' mean level-corrected error for a table to count as this machine's (measured on one
# 2-core EPYC: its own table 1.3%; the other EPYC's table 4.8% at stage width 1, 6.8% with every width)
ANCHORS = 8
ANCHOR_SEED = 20261206


def anchor_architectures(space, count: int = ANCHORS, seed: int = ANCHOR_SEED, pool: int = 400) -> list[Architecture]:
    """``count`` fixed children of ``space`` (stage widths included) at evenly spaced FLOPs quantiles of ``pool``
    uniform draws: the same anchors on every machine for the same space and seed."""
    from hwnas.children import Child, base_space, child_arch

    if count < 2:
        raise HwnasError(f"recognising the machine needs at least 2 anchor models, got {count}")
    rng = np.random.default_rng(seed)
    base = base_space(space)
    n_w = len(space.width_choices) if space.searches_width else 1
    drawn: dict[Child, float] = {}
    for _ in range(pool):
        child = Child(tuple(int(w) for w in rng.integers(0, n_w, size=space.num_stages)),
                      tuple(int(rng.integers(0, len(p.names))) for p in base.positions))
        if child not in drawn:
            drawn[child] = float(total_cost(child_arch(space, child).ops()).flops)
    ranked = sorted(drawn, key=drawn.get)
    picks = sorted({round(q * (len(ranked) - 1)) for q in np.linspace(0.0, 1.0, count)})
    return [child_arch(space, ranked[i]) for i in picks]


@dataclass
class TableFit:
    """How one candidate table fits the anchors timed here."""

    name: str
    level: float  # median measured / predicted
    error: float  # mean over anchors of |ratio / level - 1|
    worst: float = 0.0  # the largest of them
    ratios: list[float] = field(default_factory=list)


@dataclass
class DeviceMatch:
    """The anchors timed here and every candidate's fit, best (smallest error) first."""

    anchors: list[dict]  # choices, stage_widths, measured_ms
    fits: list[TableFit]
    tolerance: float = TOLERANCE

    @property
    def best(self) -> TableFit | None:
        """The best candidate when it is within the tolerance, else None."""
        return self.fits[0] if self.fits and self.fits[0].error <= self.tolerance else None

    def describe(self) -> str:
        """One line per candidate, then the verdict."""
        lines = [f"  {f.name}: level {f.level:.3f}x, anchors {f.error:.1%} off on average after levelling, "
                 f"worst {f.worst:.1%} (ratios {min(f.ratios):.3f}-{max(f.ratios):.3f})" for f in self.fits]
        if self.best:
            verdict = (f"this machine is {self.best.name}'s: its anchors are {self.best.error:.1%} off on average "
                       f"(tolerance {self.tolerance:.0%})")
        elif self.fits:
            verdict = (f"no table fits this machine: the nearest, {self.fits[0].name}, is {self.fits[0].error:.1%} "
                       f"off on average over the anchors (tolerance {self.tolerance:.0%})")
        else:
            verdict = "no candidate table"
        return "\n".join([f"{len(self.anchors)} anchor models timed here:", *lines, verdict])


def fit_tables(anchors: list[Architecture], measured_ms: list[float], candidates: dict,
               tolerance: float = TOLERANCE) -> DeviceMatch:
    """Judge every candidate predictor (``{name: LatencyPredictor}``) against the anchors' times measured here."""
    if len(anchors) != len(measured_ms):
        raise HwnasError(f"{len(anchors)} anchors but {len(measured_ms)} measured times")
    if any(not (m > 0 and np.isfinite(m)) for m in measured_ms):
        raise HwnasError(f"anchor times must be positive and finite, got {measured_ms}")
    fits = []
    for name, predictor in candidates.items():
        predicted = [float(predictor.predict_ops(a.ops())) for a in anchors]
        if any(not (p > 0 and np.isfinite(p)) for p in predicted):
            raise HwnasError(f"{name}: predicts a non-positive latency for an anchor model ({predicted})")
        ratios = [m / p for m, p in zip(measured_ms, predicted)]
        level = statistics.median(ratios)
        errors = [abs(r / level - 1) for r in ratios]
        fits.append(TableFit(name, round(level, 4), round(statistics.fmean(errors), 4),
                             worst=round(max(errors), 4), ratios=[round(r, 4) for r in ratios]))
    fits.sort(key=lambda f: f.error)
    timed = [{"choices": list(a.choices), "stage_widths": list(a.space.stage_widths), "measured_ms": round(m, 5)}
             for a, m in zip(anchors, measured_ms)]
    return DeviceMatch(timed, fits, tolerance)


def recognise(space, candidates: dict, runtime: str, dtype: str = "fp32", threads: int = 1,
              count: int = ANCHORS, rounds: int = 3, tolerance: float = TOLERANCE,
              progress: bool = True) -> DeviceMatch:
    """Time the anchors of ``space`` here and judge every candidate table against them."""
    from hwnas.runners import get_runner, latency_now
    from hwnas.timing_rounds import time_architectures

    anchors = anchor_architectures(space, count)
    per_round = time_architectures(anchors, get_runner(runtime, threads), dtype, rounds, progress=progress,
                                   what="recognise this machine")
    return fit_tables(anchors, [latency_now(r) for r in per_round], candidates, tolerance)


def fingerprint(match: DeviceMatch, space_name: str, runtime: str, dtype: str, threads: int) -> dict:
    """The timing fingerprint recorded in a device description: the anchors and their times here."""
    return {"space": space_name, "runtime": runtime, "dtype": dtype, "threads": threads,
            "anchor_seed": ANCHOR_SEED, "anchors": match.anchors}
