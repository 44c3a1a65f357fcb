"""Whole-model calibration: what a sum of operators timed alone misses in a network.

measured ~ overhead_ms + sum over operators of (scale(op) x op alone + per_op_ms), in one of
four forms (:data:`FORMS`) fitted as median lines in relative error and chosen by repeated
cross-validation on the whole models given (:func:`fit_calibration`).

The overhead is what a network pays once (invoke, allocation): it is never
negative, in a fit or in a file. When the whole models are faster than their
operators timed alone, the fit keeps it at 0 and says so (``Calibration.note``);
the per-operator term and the scales take up the difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnas.errors import HwnasError
from hwnas.predictors.common import MIN_PER_OP_MS


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
    note: str = ""  # set when the overhead was held at its lower bound 0


def _lad(X: np.ndarray, y: np.ndarray, scale_cols: list[int], tie: bool, per_op: bool = False) -> np.ndarray:
    """Coefficients minimising sum |y - X b| / y (least relative absolute deviation), by linear programming.

    Columns ``scale_cols`` are bounded to SCALE_BOUNDS, the last one (with ``per_op``) below by
    MIN_PER_OP_MS (what a predictor file may hold); with ``tie``, each pays
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
    bounds[0] = (0.0, None)  # column 0 is the constant overhead: never negative
    for col in scale_cols:
        bounds[col] = SCALE_BOUNDS
    if per_op:
        bounds[p - 1] = (MIN_PER_OP_MS, None)
    result = linprog(cost, A_eq=a_eq, b_eq=np.concatenate([y, np.zeros(k)]), bounds=bounds, method="highs")
    if not result.success:
        raise HwnasError(f"whole-model calibration fit failed: {result.message}")
    return result.x[:p + 1]


def _fit_form(form: str, groups: list[str], G: np.ndarray, counts: np.ndarray, y: np.ndarray) -> Calibration:
    """One calibration form fitted on group sums ``G`` (models x groups), operator counts and measured ms."""
    total = G.sum(axis=1)
    if form == "constant":
        median = float(np.median(y - total))
        note = f"overhead held at 0 ms (the median of measured - sum is {median:.4f} ms)" if median < 0 else ""
        return Calibration(max(0.0, median), form=form, note=note)
    per_op = form.endswith("+per-op") and len(set(counts.tolist())) > 1
    sums = G if form.startswith("group") else total[:, None]
    X = np.column_stack([np.ones(len(y)), sums] + ([counts] if per_op else []))
    scale_cols = list(range(1, 1 + sums.shape[1]))
    b = _lad(X, y, scale_cols, tie=form.startswith("group"), per_op=per_op)
    per_op_ms = float(b[-2]) if per_op else 0.0
    overhead = max(0.0, float(b[0]))  # the solver may return -0.0 or -1e-12 at the bound
    note = "overhead held at its lower bound 0 ms" if overhead <= 1e-9 else ""
    if form.startswith("group"):
        return Calibration(overhead, float(b[-1]), per_op_ms,
                           {g: float(s) for g, s in zip(groups, b[1:1 + len(groups)])}, form, note=note)
    return Calibration(overhead, float(b[1]), per_op_ms, form=form, note=note)


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


def _scale(value, where: str, path: Path) -> float:
    low, high = SCALE_BOUNDS
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise HwnasError(f"{path}: {where} must be a number in [{low:g}, {high:g}] (the bounds of the fit), "
                         f"got {value!r}")
    return float(value)


def scale_field(data: dict, path: Path) -> float:
    """The ``scale`` field of a predictor file (1 when absent), within the fit's bounds."""
    return _scale(data.get("scale", 1.0), "field 'scale'", path)


def group_scales_field(data: dict, path: Path) -> dict[str, float]:
    """The optional ``group_scales`` field of a predictor file (absent in older files: no group scales).

    Keys are :func:`scale_group` names (``<kind>:k<kernel>``); values within the fit's bounds.
    """
    from hwnas.ops import KINDS

    value = data.get("group_scales", {})
    if not isinstance(value, dict):
        raise HwnasError(f"{path}: field 'group_scales' must be an object of operator group -> scale")
    for key in value:
        kind, _, kernel = str(key).partition(":k")
        if kind not in KINDS or not kernel.isdigit():
            raise HwnasError(f"{path}: field 'group_scales' has an unknown operator group {key!r}; expected "
                             "<kind>:k<kernel>, e.g. 'mbconv:k3'")
    return {str(k): _scale(v, f"field 'group_scales.{k}'", path) for k, v in value.items()}
