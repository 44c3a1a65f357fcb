"""Learned latency predictor (type ``"regressor"``): scikit-learn models over operator features.

Several methods are compared by grouped cross-validation (operators of one
shape are held out together, so the score is the error on shapes never seen in
fitting) and the best is kept:

* ``flops-linear``: ms = a * FLOPs + b over all kinds, the naive baseline;
* ``per-kind-linear``: one linear model per kind over work terms (1x1 / depthwise
  multiply-adds, depthwise work at kernel 7, memory access, activation sizes);
  linear models extrapolate to widths and resolutions outside the profiled range;
* ``rf``, ``gbr``: random forest / gradient boosting over all features;
* ``*-log``: the same fitted on log(ms), which weighs small and large operators alike;
* ``per-kind-gbr-log``: one boosted model per kind, as nn-Meter fits one per kernel type;
* ``per-kind-loglinear`` (+``gbr``): a power law per kind, log(ms) linear in the
  logs of the work terms with kernel indicators (what XNNPACK's slow 7x7
  depthwise needs), alone or times a boosted correction;
* ``per-kind-linear+gbr``: the per-kind linear model times a boosted correction
  (fitted on log(measured / linear) over all features): the linear part
  extrapolates, the trees learn what it misses.

Per-kind methods fall back to a model over all kinds for kinds with few rows.

File: JSON (common header, method, features, cross-validation scores, overhead)
plus a skops file beside it, named in the JSON with its SHA-256. Loading checks
the hash and loads with an explicit list of trusted types, refusing anything else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from hwnas.errors import HwnasError
from hwnas.ops import OpSpec
from hwnas.predictors import LatencyPredictor, register_type
from hwnas.predictors.calibration import group_scales_field, scale_field, scale_of
from hwnas.predictors.common import header, overhead_field, per_op_field, target_fields, write_json
from hwnas.predictors.features import FEATURE_NAMES, feature_matrix

# Work terms the linear per-kind model uses (latency ~ a sum of work done).
LINEAR_COLUMNS = ["pw_flops", "dw_flops", "dw_k7", "mac", "in_elems", "out_elems", "mid_elems", "residual"]
# Power law: log(ms) linear in the logs of the work terms, with kernel indicators.
LOGLINEAR_COLUMNS = ["log_pw_flops", "log_dw_flops", "log_dw_k7", "log_mid_elems", "log_in_elems", "log_out_elems",
                     "k5", "k7", "stride", "residual"]
MIN_ROWS_PER_KIND = 12
ALL_KINDS = "*"
RESIDUAL = "~residual"
MAX_LOG_CORRECTION = 2.0  # the boosted correction multiplies by at most e^2 (or divides by e^2)

# The only types a regressor file may contain beyond skops' built-in safe ones.
TRUSTED_TYPES = [
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
]


@dataclass(frozen=True)
class Method:
    """How to fit a regressor: the estimator, on which columns, per kind or not, log target or not."""

    name: str
    make: Callable[[], object]
    columns: tuple[str, ...] = tuple(FEATURE_NAMES)
    per_kind: bool = False
    log_target: bool = False
    residual: bool = False  # multiply by a boosted correction learned on log(measured / prediction)


def _linear():
    from sklearn.linear_model import LinearRegression
    return LinearRegression()


def _rf():
    from sklearn.ensemble import RandomForestRegressor
    return RandomForestRegressor(n_estimators=200, min_samples_leaf=1, max_features=0.5, random_state=0, n_jobs=1)


def _gbr():
    from sklearn.ensemble import GradientBoostingRegressor
    return GradientBoostingRegressor(n_estimators=300, max_depth=3, learning_rate=0.05, subsample=0.9,
                                     random_state=0)


def _gbr_correction():
    from sklearn.ensemble import GradientBoostingRegressor
    return GradientBoostingRegressor(n_estimators=100, max_depth=2, learning_rate=0.05, random_state=0)


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("flops-linear", _linear, columns=("flops",)),
    Method("per-kind-linear", _linear, columns=tuple(LINEAR_COLUMNS), per_kind=True),
    Method("rf", _rf),
    Method("gbr", _gbr),
    Method("rf-log", _rf, log_target=True),
    Method("gbr-log", _gbr, log_target=True),
    Method("per-kind-gbr-log", _gbr, per_kind=True, log_target=True),
    Method("per-kind-linear+gbr", _linear, columns=tuple(LINEAR_COLUMNS), per_kind=True, residual=True),
    Method("per-kind-loglinear", _linear, columns=tuple(LOGLINEAR_COLUMNS), per_kind=True, log_target=True),
    Method("per-kind-loglinear+gbr", _linear, columns=tuple(LOGLINEAR_COLUMNS), per_kind=True, log_target=True,
           residual=True),
]}


@dataclass
class FittedModels:
    """Estimators by kind (``"*"`` covers every kind without its own) for one method."""

    method: Method
    models: dict[str, object]

    def predict(self, ops: list[OpSpec], X: np.ndarray | None = None) -> np.ndarray:
        X = feature_matrix(ops) if X is None else X
        cols = [FEATURE_NAMES.index(c) for c in self.method.columns]
        out = np.zeros(len(ops))
        kinds = np.array([op.kind if op.kind in self.models else ALL_KINDS for op in ops])
        for kind in set(kinds.tolist()):
            rows = np.flatnonzero(kinds == kind)
            out[rows] = self.models[kind].predict(X[np.ix_(rows, cols)])
        if self.method.log_target:
            out = np.exp(out)
        out = np.maximum(out, 1e-4)
        if RESIDUAL in self.models:
            out = out * np.exp(np.clip(self.models[RESIDUAL].predict(X), -MAX_LOG_CORRECTION, MAX_LOG_CORRECTION))
        return out


def fit_method(method: Method, ops: list[OpSpec], ms: np.ndarray, X: np.ndarray | None = None) -> FittedModels:
    """Fit one method on operators and their measured latencies."""
    X = feature_matrix(ops) if X is None else X
    y = np.log(np.maximum(ms, 1e-6)) if method.log_target else np.asarray(ms, dtype=float)
    cols = [FEATURE_NAMES.index(c) for c in method.columns]
    models = {ALL_KINDS: method.make().fit(X[:, cols], y)}
    if method.per_kind:
        kinds = np.array([op.kind for op in ops])
        for kind in sorted(set(kinds.tolist())):
            rows = np.flatnonzero(kinds == kind)
            if len(rows) >= MIN_ROWS_PER_KIND:
                models[kind] = method.make().fit(X[np.ix_(rows, cols)], y[rows])
    if method.residual:
        first = FittedModels(method, models).predict(ops, X)
        ratio = np.clip(np.log(np.maximum(ms, 1e-6) / first), -MAX_LOG_CORRECTION, MAX_LOG_CORRECTION)
        models[RESIDUAL] = _gbr_correction().fit(X, ratio)
    return FittedModels(method, models)


def scores(measured: np.ndarray, predicted: np.ndarray) -> dict:
    """RMSE (ms), MAPE (%) and WAPE (sum |error| / sum measured, %) of operator predictions."""
    measured, predicted = np.asarray(measured, float), np.asarray(predicted, float)
    err = predicted - measured
    return {
        "rmse_ms": float(np.sqrt(np.mean(err ** 2))),
        "mape": float(100 * np.mean(np.abs(err) / measured)),
        "wape": float(100 * np.abs(err).sum() / measured.sum()),
    }


def shape_groups(ops: list[OpSpec]) -> np.ndarray:
    """Cross-validation groups: operators with the same input/output shape and stride go together."""
    keys = [(op.c_in, op.c_out, op.h, op.w, op.stride) for op in ops]
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    return np.array([index[k] for k in keys])


def cross_validate(ops: list[OpSpec], ms: np.ndarray, methods: list[str] | None = None,
                   folds: int = 5, progress: bool = False) -> dict[str, dict]:
    """Grouped k-fold scores of each method (held-out folds contain unseen shapes only)."""
    from sklearn.model_selection import GroupKFold
    from hwnas.progress import progress_bar

    ms = np.asarray(ms, float)
    X = feature_matrix(ops)
    groups = shape_groups(ops)
    folds = max(2, min(folds, len(set(groups.tolist()))))
    results = {}
    for name in progress_bar(methods or list(METHODS), desc="cross-validation", unit="method",
                             enabled=progress):
        predicted = np.zeros(len(ops))
        for train, test in GroupKFold(n_splits=folds).split(X, ms, groups):
            fitted = fit_method(METHODS[name], [ops[i] for i in train], ms[train], X[train])
            predicted[test] = fitted.predict([ops[i] for i in test], X[test])
        results[name] = scores(ms, predicted)
    return results


def best_method(cv: dict[str, dict]) -> str:
    """The method with the lowest WAPE (what decides the error of a whole network's sum)."""
    return min(cv, key=lambda name: cv[name]["wape"])


class RegressorPredictor(LatencyPredictor):
    """A fitted :class:`FittedModels` with device metadata, overhead and a per-operator cache."""

    type_name = "regressor"

    def __init__(self, device: dict, space: str | None, runtime: str, dtype: str, threads: int,
                 fitted: FittedModels, overhead_ms: float = 0.0, overhead: dict | None = None,
                 cv: dict | None = None, n_rows: int = 0, path: Path | None = None, per_op_ms: float = 0.0,
                 scale: float = 1.0, group_scales: dict[str, float] | None = None):
        self.device, self.space = device, space
        self.runtime, self.dtype, self.threads = runtime, dtype, threads
        self.fitted = fitted
        self.overhead_ms = float(overhead_ms)
        self.per_op_ms = float(per_op_ms)
        self.scale = float(scale)
        self.group_scales = dict(group_scales or {})
        self.overhead = overhead or {"source": "none: no whole-model rows; overhead set to 0", "models": []}
        self.cv = cv or {}
        self.n_rows = n_rows
        self.path = path
        self._cache: dict[OpSpec, float] = {}

    @property
    def method(self) -> str:
        return self.fitted.method.name

    def predict_many(self, ops: list[OpSpec]) -> np.ndarray:
        """Latency (ms) of each operator in a network (its scale * prediction + ``per_op_ms``); identity ops cost 0."""
        todo = [op for op in dict.fromkeys(ops) if op not in self._cache and not op.is_identity]
        if todo:
            for op, ms in zip(todo, self.fitted.predict(todo)):
                self._cache[op] = float(ms)
        return np.array([0.0 if op.is_identity else scale_of(self, op) * self._cache[op] + self.per_op_ms
                         for op in ops])

    def predict_op(self, op: OpSpec) -> float:
        return float(self.predict_many([op])[0])

    def predict_ops(self, ops: list[OpSpec]) -> float:
        ops = [op for op in ops if op.kind != "zero"]
        return self.overhead_ms + float(self.predict_many(ops).sum())

    def save(self, path: str | Path) -> None:
        """Write ``path`` (JSON) and the skops file beside it."""
        import skops.io as sio

        path = Path(path)
        model_path = path.with_suffix(".skops")
        path.parent.mkdir(parents=True, exist_ok=True)
        sio.dump(self.fitted.models, model_path)
        data = header(self.type_name, self.device, self.space, self.runtime, self.dtype, self.threads)
        data.update(method=self.method, features=list(FEATURE_NAMES), n_rows=self.n_rows,
                    overhead_ms=self.overhead_ms, scale=self.scale, per_op_ms=self.per_op_ms,
                    group_scales=dict(sorted(self.group_scales.items())), overhead=self.overhead, cv=self.cv,
                    model_file=model_path.name, sha256=_sha256(model_path))
        write_json(path, data)
        self.path = path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checked_blob(model_path: Path, digest: str, json_path: Path) -> tuple[bytes, list[str]]:
    """The model file's bytes and the types it holds, when its SHA-256 matches and every type is trusted.

    Nothing in the file is run: skops only lists the types it names.
    """
    import skops.io as sio

    try:
        blob = model_path.read_bytes()
    except FileNotFoundError:
        raise HwnasError(f"{json_path}: its model file {model_path} is missing") from None
    except OSError as exc:
        raise HwnasError(f"{model_path}: cannot read ({exc.strerror or exc})") from None
    if hashlib.sha256(blob).hexdigest() != digest:
        raise HwnasError(f"{model_path}: SHA-256 does not match {json_path}; the model file was changed, "
                         "truncated or belongs to another predictor (refit with `hwnas fit`)")
    try:
        untrusted = sorted(set(sio.get_untrusted_types(data=blob)))
    except Exception as exc:  # noqa: BLE001 - any failure to parse is a broken file
        raise HwnasError(f"{model_path}: cannot load model ({type(exc).__name__}: {exc})") from None
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise HwnasError(f"{model_path}: refusing to load untrusted types: {', '.join(refused)}")
    return blob, untrusted


def _model_file(data: dict, path: Path) -> tuple[Path, str]:
    """The model file a regressor JSON names beside it, and its SHA-256."""
    model_file, digest = data.get("model_file"), data.get("sha256")
    if not isinstance(model_file, str) or "/" in model_file or "\\" in model_file or not isinstance(digest, str):
        raise HwnasError(f"{path}: fields 'model_file' (a file name beside it) and 'sha256' are required")
    return path.parent / model_file, digest


def check_model_file(data: dict, path: Path) -> None:
    """Raise HwnasError when the regressor file ``path`` would be refused at load (its model file is missing,
    changed or holds untrusted types), without loading it."""
    _checked_blob(*_model_file(data, path), path)


def _load_models(model_path: Path, digest: str, json_path: Path) -> dict:
    import skops.io as sio

    blob, untrusted = _checked_blob(model_path, digest, json_path)
    try:
        models = sio.loads(blob, trusted=untrusted)
    except Exception as exc:  # noqa: BLE001 - any failure to parse is a broken file
        raise HwnasError(f"{model_path}: cannot load model ({type(exc).__name__}: {exc})") from None
    if not isinstance(models, dict) or ALL_KINDS not in models:
        raise HwnasError(f"{model_path}: not an hwnas regressor model (expected a dict with key {ALL_KINDS!r})")
    return models


@register_type("regressor")
def _load(data: dict, path: Path) -> RegressorPredictor:
    runtime, dtype, threads = target_fields(data, path)
    name = data.get("method")
    if name not in METHODS:
        raise HwnasError(f"{path}: unknown regressor method {name!r}; known: {', '.join(METHODS)}")
    method = METHODS[name]
    if data.get("features") != list(FEATURE_NAMES):
        raise HwnasError(f"{path}: field 'features' does not match this version of hwnas's operator features; "
                         "refit with `hwnas fit`")
    models = _load_models(*_model_file(data, path), path)
    overhead = data.get("overhead")
    return RegressorPredictor(data["device"], data.get("space"), runtime, dtype, threads,
                              FittedModels(method, models), overhead_field(data, path),
                              overhead if isinstance(overhead, dict) else None, data.get("cv") or {},
                              int(data.get("n_rows", 0)), path, per_op_field(data, path),
                              scale_field(data, path), group_scales_field(data, path))


__all__ = ["METHODS", "FittedModels", "RegressorPredictor", "cross_validate", "best_method", "fit_method",
           "scores"]
