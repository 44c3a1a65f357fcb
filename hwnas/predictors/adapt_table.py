"""Adapt a committed CPU table to this machine from N timed whole models (``hwnas fit --adapt TABLE --models N``).

A lookup table predicts a child m as ``overhead + sum over its operators of
p(op)`` (``p``: the table's calibrated per-operator latency). Another machine
with the same CPU string can differ by more than one factor: on one 2-core EPYC
k7 depthwise work is relatively cheaper than on the other. So each operator
group g (kind x kernel x expansion x width group: output channels <= 40 or
more) gets its own scale, and ``fixed`` (the overhead plus the stem and head,
which every child has) another:

    measured(m) ~ sum_g s_g P_g(m),   P_g(m) = sum of p(op) over the operators of m in group g

The scales ``s_g >= 0`` minimize, in relative error,

    sum_m ((measured_m - sum_g s_g P_g(m)) / measured_m)^2 + lam * sum_g (s_g - L)^2

where ``L = median(measured / predicted)`` is the session level (one scalar for
the whole table). This is non-negative least squares on rows augmented by the
penalty (``scipy.optimize.nnls``); ``lam`` comes from {1e-4, 1e-3, ..., 10} by
the leave-one-out error over the N models. A group none of the N models
contains keeps ``L``. The adapted file is a plain ``lut`` table: each entry
becomes ``s_g x p(op)``, the overhead ``s_fixed x overhead``; ``overhead.adapt``
records the source table, the N models, their timings, the scales and the
leave-one-out trials.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from hwnas.errors import HwnasError
from hwnas.ops import OpSpec
from hwnas.predictors.lut import LookupTable

MIN_MODELS = 5
LAMBDAS = (1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0)
WIDE = 40  # output channels above this: the "wide" width group
FIXED = "fixed"


def group_of(op: OpSpec) -> str:
    """The operator's scale group: kind, kernel, expansion and width group (``mbconv:k7:e6:wide``)."""
    if op.kind in ("conv", "pool", "linear") or op.expand == 1:
        return FIXED  # the stem, the head and the first fixed block: in every child
    return f"{op.kind}:k{op.kernel}:e{op.expand}:{'wide' if op.c_out > WIDE else 'narrow'}"


def design(table: LookupTable, archs) -> tuple[list[str], np.ndarray]:
    """``(group names, P)``: P[m, g] is the table's ms of child m's operators in group g (overhead in ``fixed``)."""
    per_child = []
    for arch in archs:
        row = {FIXED: table.overhead_ms}
        for op in arch.ops():
            if op.kind != "zero":
                g = group_of(op)
                row[g] = row.get(g, 0.0) + table.predict_op(op)
        per_child.append(row)
    names = [FIXED] + sorted({g for row in per_child for g in row} - {FIXED})
    return names, np.array([[row.get(g, 0.0) for g in names] for row in per_child])


def fit_scales(P: np.ndarray, y: np.ndarray, level: float, lam: float) -> np.ndarray:
    """Non-negative scales minimizing the relative squared error plus ``lam`` x their distance to ``level``."""
    A = np.vstack([P / y[:, None], np.sqrt(lam) * np.eye(P.shape[1])])
    b = np.concatenate([np.ones(len(y)), np.full(P.shape[1], np.sqrt(lam) * level)])
    return nnls(A, b)[0]


def loo_error(P: np.ndarray, y: np.ndarray, lam: float) -> float:
    """Mean absolute relative error of each model predicted from the others (level re-measured without it)."""
    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        level = float(np.median(y[keep] / P[keep].sum(axis=1)))
        s = fit_scales(P[keep], y[keep], level, lam)
        errors.append(abs(P[i] @ s / y[i] - 1.0))
    return float(np.mean(errors))


def adapt_table(table: LookupTable, archs, measured_ms, device: dict, source: str = "") -> LookupTable:
    """The table rescaled per group to ``measured_ms`` of ``archs`` (see the module docstring)."""
    y = np.asarray(measured_ms, dtype=np.float64)
    if len(y) < MIN_MODELS:
        raise HwnasError(f"adapting a table needs at least {MIN_MODELS} timed models, got {len(y)} (the scales' "
                         "penalty is chosen by leave-one-out over them)")
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise HwnasError("adapting a table needs positive finite measured latencies")
    names, P = design(table, archs)
    predicted = P.sum(axis=1)
    level = float(np.median(y / predicted))
    trials = [{"lambda": lam, "loo_mean_abs_rel_error": loo_error(P, y, lam)} for lam in LAMBDAS]
    best = min(trials, key=lambda t: t["loo_mean_abs_rel_error"])
    scales = dict(zip(names, map(float, fit_scales(P, y, level, best["lambda"]))))
    entries = {}
    for key in table.entries:
        op = OpSpec.from_key(key)
        entries[key] = scales.get(group_of(op), level) * table.predict_op(op)
    adapted = LookupTable(device, table.space, table.runtime, table.dtype, table.threads, entries,
                          scales[FIXED] * table.overhead_ms)
    adapted.overhead = {
        "source": f"adapted from {source or table.device.get('name', '?')} with {len(y)} children timed here",
        "form": "group scales (kind x kernel x expansion x width), NNLS with a pull toward the session level",
        "models": [], "adapt": {
            "from": source, "from_device": table.device.get("name"), "models": len(y), "session_level": level,
            "lambda": best["lambda"], "scales": scales, "trials": trials,
            "children": [{"choices": list(a.choices), "predicted_by_source_ms": float(p), "measured_ms": float(m)}
                         for a, p, m in zip(archs, predicted, y)]}}
    return adapted


def random_children(space, count: int, seed: int) -> list:
    """``count`` distinct children of ``space`` at its own widths, uniform choices (deterministic for a seed)."""
    import random

    from hwnas.arch import Architecture

    rng, out, seen = random.Random(seed), [], set()
    for _ in range(count * 50):
        if len(out) == count:
            break
        choices = tuple(rng.choice(p.names) for p in space.positions)
        if choices not in seen:
            seen.add(choices)
            out.append(Architecture(space.name, list(choices)))
    return out


def time_children(archs, runtime: str, dtype: str, threads: int, rounds: int, seed: int = 0,
                  progress: bool = True) -> list[float]:
    """Each child exported whole and timed here in ``rounds`` interleaved rounds (pinned, the runner's clock:
    CPU time for one thread); per child, its fastest round (:func:`hwnas.runners.latency_now`)."""
    from hwnas.runners import get_runner, latency_now
    from hwnas.timing_rounds import time_architectures

    per_arch = time_architectures(archs, get_runner(runtime, threads), dtype, rounds, seed, progress=progress,
                                  what="adapt")
    return [latency_now(v) for v in per_arch]
