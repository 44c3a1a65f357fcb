"""A predictor for a new device from a few measured architectures, transferred from known devices.

Given n (5-20) architectures measured on the new device (choices ``a_i``,
latencies ``y_i``) and S source devices with additive ``whole_model`` tables
(overhead ``o_s``, per-operator entries ``e_s[k]``; their corrections are not
used), the new device's table is modelled as

    entry[k]  = ybar * ( sum_s w_s e_s[k] / m_s  +  sum_j d_j b_j[k] )
    overhead  = ybar * ( c + sum_s w_s o_s / m_s )

* ``m_s`` is source s's mean prediction over the n samples and ``ybar`` the
  samples' mean latency, so every source is on the same scale and equal
  shares ``w_s = 1/S`` mean "the consensus of the sources at the new level".
* **Mix**: the shares ``w_s >= 0`` (a non-negative mix of the source tables)
  are pulled toward equal shares by a ridge penalty ``alpha_w |w - 1/S|^2``;
  ``c`` is a free level.
* **Deviations** for a device that behaves unlike every mix of the sources:
  ``b_j[k]`` are structural bases over the operators, each scaled to mean 1
  over the samples, with coefficients ``d_j`` pulled toward 0 by
  ``alpha_d |d|^2``. ``stage``: the consensus entry of k when k lies in stage j,
  else 0 (one relative scale per stage, 7 groups). ``struct``: analytic counts
  of k (1x1-conv and depthwise multiply-adds, depthwise work at kernel 5, the
  expanded activation, the input and output sizes, 1 per non-identity layer,
  1 per grouped layer, 1 per projection shortcut; 9 groups).

Each candidate is a bounded least-squares problem on the relative latencies
``y_i / ybar``, the penalties entered as extra rows (``scipy.optimize.lsq_linear``).
Samples more than 10% and 3 robust deviations off the fit are down-weighted
(Huber weights, a few reweighting passes), since whole-network phone
measurements contain disturbed runs.

**Selection by leave-one-out on the samples.** For each family (mix, mix+stage,
mix+struct, mix+struct+stage), taken only when ``n >= 1 + its deviation
groups`` (the level plus one sample per group; the shares are held by their
prior), the penalties come from a small grid by the mean absolute relative
leave-one-out error. A richer family replaces the current one only when its
error is below ``RATIO`` (0.6) times the current one's: a noisy device (a phone
measured in whole milliseconds) rarely earns that, an exact per-layer sum does.
The result is an ordinary ``whole_model`` predictor file (no correction), with
``meta.few_shot`` recording the samples, the sources, the shares, the chosen
family and every leave-one-out trial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import lsq_linear

from hwnas.arch import _overrides
from hwnas.errors import HwnasError
from hwnas.predictors.features import FEATURE_NAMES, op_features
from hwnas.predictors.whole_model import Encoding, WholeModelPredictor, _gauge, metrics
from hwnas.spaces import SearchSpace

MIN_SAMPLES = 5
FAMILIES = (("mix", ()), ("mix+stage", ("stage",)), ("mix+struct", ("struct",)),
            ("mix+struct+stage", ("struct", "stage")))
MIX_ALPHAS = (0.01, 0.1, 1.0, 10.0)
DEVIATION_ALPHAS = (0.1, 1.0, 10.0)
RATIO = 0.6  # a richer family must cut the leave-one-out error to below this share of the current one's
OUTLIER = 0.10  # relative residuals below this are never down-weighted
STRUCT = ("pw_flops", "dw_flops", "dw_k5", "mid_elems", "in_elems", "out_elems")


@dataclass
class Sources:
    """The source tables on one encoding: ``E`` (operators x sources), ``O`` (overheads), names."""

    names: list[str]
    E: np.ndarray
    O: np.ndarray

    @classmethod
    def of(cls, enc: Encoding, predictors: dict[str, WholeModelPredictor]) -> "Sources":
        if not predictors:
            raise HwnasError("few-shot adaptation needs at least one source device's whole_model predictor")
        for name, p in predictors.items():
            if not isinstance(p, WholeModelPredictor):
                raise HwnasError(f"source {name}: a whole_model predictor is needed, got type {p.type_name!r}")
            if p.space != enc.space.name:
                raise HwnasError(f"source {name}: fitted for space {p.space!r}, not {enc.space.name!r}")
        E = np.stack([[p.entries.get(k, 0.0) for k in enc.keys] for p in predictors.values()], axis=1)
        return cls(list(predictors), E, np.array([p.overhead_ms for p in predictors.values()]))


def deviation_bases(enc: Encoding, consensus: np.ndarray, name: str) -> np.ndarray:
    """Operators x groups matrix of one deviation family (see the module docstring)."""
    if name == "stage":
        B = np.zeros((len(enc.keys), len(enc.stages)))
        for pos, cols in zip(enc.positions, enc.col):
            B[cols, enc.stages.index(pos.stage)] = consensus[cols]
        return B
    if name == "struct":
        B = np.zeros((len(enc.keys), len(STRUCT) + 3))
        for pos, cols in zip(enc.positions, enc.col):
            for op, k in zip(pos.ops, cols):
                f = op_features(op)
                B[k] = [f[FEATURE_NAMES.index(s)] for s in STRUCT] + [
                    0.0 if op.is_identity else 1.0, float(op.groups > 1), float(op.kind == "skip" and not op.is_identity)]
        return B
    raise HwnasError(f"unknown deviation family {name!r}")


def _huber_weights(rel: np.ndarray) -> np.ndarray:
    scale = max(1.4826 * np.median(np.abs(rel - np.median(rel))), OUTLIER / 3)
    u = np.abs(rel) / (3 * scale)
    return np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-12))


def _solve(X: np.ndarray, y: np.ndarray, src: Sources, bases: np.ndarray, alpha_w: float, alpha_d: float,
           passes: int = 4) -> tuple[float, np.ndarray, np.ndarray]:
    """``(overhead, entries, shares)`` of one candidate fitted on the rows ``X`` (operator counts), ``y`` (ms)."""
    S = len(src.names)
    P = src.O + X @ src.E  # n x S source predictions
    m = P.mean(axis=0)
    D = X @ bases
    dm = np.where(np.abs(D).mean(axis=0) > 1e-12, np.abs(D).mean(axis=0), 1.0)
    ybar = float(y.mean())
    A = np.hstack([np.ones((len(y), 1)), P / m, D / dm])
    t = y / ybar
    pen = np.concatenate([[1e-3], np.full(S, alpha_w), np.full(D.shape[1], alpha_d)])
    prior = np.concatenate([[0.0], np.full(S, 1.0 / S), np.zeros(D.shape[1])])
    lower = np.concatenate([[-np.inf], np.zeros(S), np.full(D.shape[1], -np.inf)])
    w = np.ones(len(y))
    for _ in range(passes):
        sw = np.sqrt(w)
        sol = lsq_linear(np.vstack([A * sw[:, None], np.diag(np.sqrt(pen))]),
                         np.concatenate([t * sw, np.sqrt(pen) * prior]), bounds=(lower, np.inf), method="bvls").x
        new = _huber_weights(A @ sol / t - 1.0)
        if np.allclose(new, w):
            break
        w = new
    c, shares, d = sol[0], sol[1:1 + S], sol[1 + S:]
    entries = (src.E / m) @ shares + bases @ (d / dm)
    overhead = c + (src.O / m) @ shares
    return ybar * float(overhead), ybar * entries, shares


def _loo_error(X, y, src, bases, alpha_w, alpha_d) -> float:
    """Mean absolute relative error of each sample predicted by a fit on the others."""
    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        overhead, entries, _ = _solve(X[keep], y[keep], src, bases, alpha_w, alpha_d)
        errors.append(abs((overhead + X[i] @ entries) / y[i] - 1.0))
    return float(np.mean(errors))


def check_samples(n: int, where: str = "samples") -> None:
    if n < MIN_SAMPLES:
        raise HwnasError(f"{where}: {n} measured architectures; few-shot adaptation needs at least {MIN_SAMPLES} "
                         f"(a level plus the source shares, chosen by leave-one-out)")


def adapt(space: SearchSpace, sources: dict[str, WholeModelPredictor], choices, y, device: dict,
          where: str = "samples") -> WholeModelPredictor:
    """Fit the new device's ``whole_model`` predictor from measured ``choices`` / ``y`` (ms) and source tables."""
    y = np.asarray(y, dtype=np.float64)
    check_samples(len(y), where)
    enc = Encoding(space)
    X = enc.additive(enc.indices(choices))
    src = Sources.of(enc, sources)
    consensus = (src.E / (src.O + X @ src.E).mean(axis=0)).mean(axis=1)
    trials, picked = [], None
    for family, parts in FAMILIES:
        bases = np.hstack([deviation_bases(enc, consensus, p) for p in parts] or [np.zeros((len(enc.keys), 0))])
        if len(y) < 1 + bases.shape[1]:
            trials.append({"family": family, "groups": bases.shape[1], "skipped": f"needs {1 + bases.shape[1]} samples"})
            continue
        best = None
        for alpha_w in MIX_ALPHAS:
            for alpha_d in (DEVIATION_ALPHAS if parts else (0.0,)):
                err = _loo_error(X, y, src, bases, alpha_w, alpha_d)
                trials.append({"family": family, "groups": bases.shape[1], "alpha_w": alpha_w, "alpha_d": alpha_d,
                               "loo_mean_abs_rel_error": err})
                if best is None or err < best["loo_mean_abs_rel_error"]:
                    best = trials[-1]
        if picked is None or best["loo_mean_abs_rel_error"] < RATIO * picked["loo_mean_abs_rel_error"]:
            picked = {**best, "bases": bases}
    bases = picked.pop("bases")
    overhead, entries, shares = _solve(X, y, src, bases, picked["alpha_w"], picked["alpha_d"])
    overhead, entries = _gauge(enc, overhead, entries.copy())
    entries = np.maximum(entries, 0.0)  # a deviation may push an entry of a shared operator set below 0
    pred = WholeModelPredictor(device, space.name, _overrides(space), overhead, dict(zip(enc.keys, map(float, entries))))
    pred.meta = {"fitted_on_rows": int(len(y)), "settings": {"robust": True, "drift_block": 0, "features": [],
                                                             "alpha": 0.0},
                 "few_shot": {"samples": int(len(y)), "sources": src.names,
                              "shares": {n: round(float(v), 4) for n, v in zip(src.names, shares)},
                              "family": picked["family"], "alpha_w": picked["alpha_w"],
                              "alpha_d": picked["alpha_d"], "loo_mean_abs_rel_error": picked["loo_mean_abs_rel_error"],
                              "trials": trials, "method": "hwnas.predictors.few_shot (see its docstring)"},
                 "train_fit": metrics(y, pred.predict_many_choices(choices)),
                 "gauge": "the cheapest candidate of every position is 0 ms; the rest is overhead_ms"}
    return pred
