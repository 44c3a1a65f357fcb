"""Whole-model calibration: what a sum of operators timed alone misses in a network.

measured ~ overhead_ms + sum over operators of (scale(op) x op alone + per_op_ms), in one of
four forms (:data:`FORMS`) fitted as median lines in relative error and chosen by repeated
cross-validation on the whole models given (:func:`fit_calibration`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnas.errors import HwnasError
from hwnas.predictors.common import number


def scale_group(op) -> str:
    """The calibration group of an operator: its kind and kernel (``mbconv:k7``)."""
    return f"{op.kind}:k{op.kernel}"


# Calibration forms, simplest first (what `fit_calibration` chooses between).
FORMS = ("constant", "scale", "scale+per-op", "group-scales+per-op")
SCALE_BOUNDS = (0.25, 4.0)   # a fitted scale outside this range is not trusted (bounds of the fit)
MIN_MODELS = 10              # fewer whole models: constant overhead only
CV_FOLDS, CV_REPEATS = 5, 10
CV_TIE = 0.0005              # forms within 0.05 percentage points of the best CV MAPE count as tied; simplest wins


@dataclass
class Calibration:
    """measured ~ overhead_ms + sum over operators of (scale_of(op) x op + per_op_ms).

    ``group_scales`` maps a :func:`scale_group` to its own scale; other groups use ``scale``.
    ``cv`` holds each form's cross-validated score on the fit models (mape, within5, within10, in %).
    """

    overhead_ms: float = 0.0
    scale: float = 1.0
    per_op_ms: float = 0.0
    group_scales: dict[str, float] = field(default_factory=dict)
    form: str = "constant"
    cv: dict[str, dict] = field(default_factory=dict)


def _lad(X: np.ndarray, y: np.ndarray, scale_cols: list[int], tie: bool) -> np.ndarray:
    """Coefficients minimising sum |y - X b| / y (least relative absolute deviation), by linear programming.

    Columns ``scale_cols`` are bounded to SCALE_BOUNDS; with ``tie``, each pays
    a small L1 penalty for leaving a common scale, so a group the data cannot
    tell apart (e.g. an operator every model has) keeps the common scale.
    """
    from scipy.optimize import linprog

    n, p = X.shape
    k = len(scale_cols) if tie else 0
    n_var = p + 1 + 2 * k + 2 * n  # b, common scale, deviations +/-, residuals +/-
    cost = np.zeros(n_var)
    cost[p + 1:p + 1 + 2 * k] = 0.01 * n
    cost[p + 1 + 2 * k:] = np.tile(1.0 / y, 2)
    a_eq = np.zeros((n + k, n_var))
    a_eq[:n, :p] = X
    a_eq[:n, p + 1 + 2 * k:p + 1 + 2 * k + n] = np.eye(n)
    a_eq[:n, p + 1 + 2 * k + n:] = -np.eye(n)
    for j, col in enumerate(scale_cols[:k]):
        a_eq[n + j, [col, p, p + 1 + j, p + 1 + k + j]] = [1.0, -1.0, -1.0, 1.0]
    bounds = [(None, None)] * p + [SCALE_BOUNDS if tie else (0.0, 0.0)] + [(0, None)] * (2 * k + 2 * n)
    for col in scale_cols:
        bounds[col] = SCALE_BOUNDS
    result = linprog(cost, A_eq=a_eq, b_eq=np.concatenate([y, np.zeros(k)]), bounds=bounds, method="highs")
    if not result.success:
        raise HwnasError(f"whole-model calibration fit failed: {result.message}")
    return result.x[:p + 1]


def _fit_form(form: str, groups: list[str], G: np.ndarray, counts: np.ndarray, y: np.ndarray) -> Calibration:
    """One calibration form fitted on group sums ``G`` (models x groups), operator counts and measured ms."""
    total = G.sum(axis=1)
    if form == "constant":
        return Calibration(float(np.median(y - total)), form=form)
    per_op = form.endswith("+per-op") and len(set(counts.tolist())) > 1
    sums = G if form.startswith("group") else total[:, None]
    X = np.column_stack([np.ones(len(y)), sums] + ([counts] if per_op else []))
    scale_cols = list(range(1, 1 + sums.shape[1]))
    b = _lad(X, y, scale_cols, tie=form.startswith("group"))
    per_op_ms = float(b[-2]) if per_op else 0.0
    if form.startswith("group"):
        return Calibration(float(b[0]), float(b[-1]), per_op_ms,
                           {g: float(s) for g, s in zip(groups, b[1:1 + len(groups)])}, form)
    return Calibration(float(b[0]), float(b[1]), per_op_ms, form=form)


def _predict(cal: Calibration, groups: list[str], G: np.ndarray, counts: np.ndarray) -> np.ndarray:
    scales = np.array([cal.group_scales.get(g, cal.scale) for g in groups])
    return cal.overhead_ms + G @ scales + cal.per_op_ms * counts


def _cv_score(form, groups, G, counts, y) -> dict:
    """Repeated k-fold cross-validation of one form on the fit models (fixed seeds: deterministic)."""
    errors = []
    folds = min(CV_FOLDS, len(y))
    for repeat in range(CV_REPEATS):
        order = np.random.default_rng(repeat).permutation(len(y))
        predicted = np.zeros(len(y))
        for f in range(folds):
            test = order[f::folds]
            train = np.setdiff1d(order, test)
            cal = _fit_form(form, groups, G[train], counts[train], y[train])
            predicted[test] = _predict(cal, groups, G[test], counts[test])
        errors.append(np.abs(predicted / y - 1))
    err = np.concatenate(errors)
    return {"mape": float(100 * err.mean()), "within5": float(100 * np.mean(err <= 0.05)),
            "within10": float(100 * np.mean(err <= 0.10))}


def fit_calibration(group_sums: list[dict[str, float]], counts: list[int], measured: list[float],
                    per_op: bool = True) -> Calibration:
    """Fit and choose the whole-model calibration of a predictor.

    ``group_sums[i]`` maps each :func:`scale_group` to the sum of model ``i``'s
    operators (as predicted alone) in that group; ``counts[i]`` is its number of
    operators. Operators timed alone differ from the same operators inside a
    network (each alone run paid the runtime's invoke cost once; caches and
    kernels behave differently in a longer graph), so four forms are fitted,
    all minimising the relative absolute error (a median line in relative terms,
    which the few disturbed, always too slow, measurements do not move):

    * ``constant``: overhead only (the median of measured - sum);
    * ``scale``: overhead + scale x sum;
    * ``scale+per-op``: ... + per_op_ms x number of operators;
    * ``group-scales+per-op``: one scale per operator kind and kernel.

    Each is scored by repeated 5-fold cross-validation on these models only and
    the lowest MAPE is kept (the simplest among ties). Without ``per_op``, or
    with fewer than MIN_MODELS models, only the constant is fitted.
    """
    y = np.asarray(measured, float)
    if len(y) == 0:
        return Calibration(form="none")
    groups = sorted({g for sums in group_sums for g in sums})
    G = np.array([[sums.get(g, 0.0) for g in groups] for sums in group_sums], float).reshape(len(y), len(groups))
    n = np.asarray(counts, float)
    forms = FORMS if per_op and len(y) >= MIN_MODELS else FORMS[:1]
    if len(forms) == 1:
        return _fit_form(forms[0], groups, G, n, y)
    cv = {form: _cv_score(form, groups, G, n, y) for form in forms}
    best = min(s["mape"] for s in cv.values())
    chosen = next(form for form in forms if cv[form]["mape"] <= best + 100 * CV_TIE)
    cal = _fit_form(chosen, groups, G, n, y)
    cal.cv = cv
    return cal


def scale_of(predictor, op) -> float:
    """The calibration scale of one operator in a predictor (its group's, else the common one)."""
    return predictor.group_scales.get(scale_group(op), predictor.scale) if predictor.group_scales else predictor.scale


def group_scales_field(data: dict, path: Path) -> dict[str, float]:
    """The optional ``group_scales`` field of a predictor file (absent in older files: no group scales)."""
    value = data.get("group_scales", {})
    if not isinstance(value, dict):
        raise HwnasError(f"{path}: field 'group_scales' must be an object of operator group -> scale")
    return {str(k): number(value, k, path) for k in value}
