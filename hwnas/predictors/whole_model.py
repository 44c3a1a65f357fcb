"""Latency from whole-network measurements alone (type ``"whole_model"``).

When only whole models can be timed (a phone, public benchmark data), the
per-operator table is recovered by least squares over operator indicators:

    ms(arch) ~ overhead + sum_i lut[op_i] + correction(arch)

* ``lut``: one entry per distinct :class:`OpSpec` (positions with the same
  shapes share entries, as a measured LUT would). Only differences between
  the candidates of a position are identifiable; the gauge puts the cheapest
  candidate of every position at 0 ms and the rest into ``overhead_ms``, so
  every entry is non-negative. Fitted by ordinary or Huber (IRLS) least squares.
* ``correction``: what a sum misses, a ridge-regularized linear model on the
  residuals over features of the choices: ``position`` (per-position deviations
  from the shared entries), ``pairs`` (neighbouring-layer interactions) and
  ``stage`` (squares of each stage's additive latency, a per-stage non-linearity).

:func:`fit_whole_model` picks the loss, the features and the ridge strength by
validation on the most recent rows (the rows are in measurement order).
``predict_op`` gives the additive per-operator part (used by the supernet);
``predict_ops`` / ``predict_choices`` give the full prediction.

File: the common header plus ``overhead_ms``, ``entries`` (op key -> ms),
``correction`` ({"features": [...], "weights": {name: [...]}}) and ``meta``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import linalg, sparse
from scipy.stats import spearmanr
from threadpoolctl import threadpool_limits

from hwnas.arch import space_overrides
from hwnas.errors import HwnasError
from hwnas.ops import OpSpec
from hwnas.predictors import LatencyPredictor, register_type
from hwnas.predictors.common import header, number, target_fields, write_json
from hwnas.spaces import SearchSpace, get_space

FEATURES = ("position", "pairs", "stage")


# -- encoding ---------------------------------------------------------------------------
class Encoding:
    """Column layout of the design matrices for one space."""

    def __init__(self, space: SearchSpace):
        self.space = space
        self.positions = space.positions
        self.keys: list[str] = []  # additive columns: one per distinct operator (zero/identity included)
        self.col: list[list[int]] = []  # position -> candidate -> additive column
        index: dict[str, int] = {}
        for pos in self.positions:
            cols = []
            for op in pos.ops:
                key = op.key()
                if key not in index:
                    index[key] = len(self.keys)
                    self.keys.append(key)
                cols.append(index[key])
            self.col.append(cols)
        self.stages = sorted({pos.stage for pos in self.positions})

    def indices(self, choices_list) -> np.ndarray:
        """Candidate index per (row, position)."""
        out = np.empty((len(choices_list), len(self.positions)), dtype=np.int64)
        for r, choices in enumerate(choices_list):
            if len(choices) != len(self.positions):
                raise HwnasError(f"{len(choices)} choices for {len(self.positions)} positions of {self.space.name}")
            for p, (pos, name) in enumerate(zip(self.positions, choices)):
                if name not in pos.names:
                    raise HwnasError(f"choice {name!r} is not a candidate of position {p} of {self.space.name}")
                out[r, p] = pos.names.index(name)
        return out

    def additive(self, idx: np.ndarray) -> np.ndarray:
        """Counts of each distinct operator per row."""
        X = np.zeros((len(idx), len(self.keys)))
        rows = np.arange(len(idx))
        for p, cols in enumerate(self.col):
            np.add.at(X, (rows, np.asarray(cols)[idx[:, p]]), 1.0)
        return X

    def stage_sums(self, idx: np.ndarray, entries: np.ndarray) -> np.ndarray:
        """Additive ms of each stage per row."""
        out = np.zeros((len(idx), len(self.stages)))
        for p, (pos, cols) in enumerate(zip(self.positions, self.col)):
            out[:, self.stages.index(pos.stage)] += entries[np.asarray(cols)[idx[:, p]]]
        return out

    def correction(self, name: str, idx: np.ndarray, entries: np.ndarray) -> sparse.csr_matrix:
        """Feature block ``name`` (see the module docstring), one row per architecture."""
        n, P = idx.shape
        K = max(len(pos.names) for pos in self.positions)
        if name == "position":
            return _one_hot(np.arange(P) * K + idx, P * K)
        if name == "pairs":
            return _one_hot(np.arange(P - 1) * K * K + idx[:, :-1] * K + idx[:, 1:], max(P - 1, 0) * K * K)
        if name == "stage":
            return sparse.csr_matrix(self.stage_sums(idx, entries) ** 2)
        raise HwnasError(f"unknown correction feature {name!r}; known: {', '.join(FEATURES)}")


def _one_hot(cols: np.ndarray, width: int) -> sparse.csr_matrix:
    n, per_row = cols.shape
    data = np.ones(n * per_row)
    return sparse.csr_matrix((data, (np.repeat(np.arange(n), per_row), cols.ravel())), shape=(n, width))


# -- fitting ----------------------------------------------------------------------------
def _huber_weights(residual: np.ndarray, delta: float = 1.345) -> np.ndarray:
    scale = 1.4826 * np.median(np.abs(residual - np.median(residual))) + 1e-12
    u = np.abs(residual) / (delta * scale)
    return np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-12))


def _ridge(X: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float, free: int = 0) -> np.ndarray:
    """argmin sum w (y - X b)^2 + alpha |b[free:]|^2 (+ a 1e-8 pull on b[:free] for a unique answer)."""
    pen = np.full(X.shape[1], alpha)
    pen[:free] = 1e-8
    if free == X.shape[1]:  # (nearly) unregularized: the stable route
        sw = np.sqrt(w)
        A = np.vstack([X * sw[:, None], np.diag(np.sqrt(pen))])
        return np.linalg.lstsq(A, np.concatenate([y * sw, np.zeros(X.shape[1])]), rcond=None)[0]
    gram = (X * w[:, None]).T @ X + np.diag(pen)
    return np.linalg.solve(gram, (X * w[:, None]).T @ y)


def fit_additive(enc: Encoding, idx: np.ndarray, y: np.ndarray, robust: bool = False, drift_block: int = 0,
                 iters: int = 20) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """``(overhead, entries, weights, offsets)`` by least squares over operator counts.

    ``robust``: Huber loss by iteratively reweighted least squares (``weights``
    are the final row weights). ``drift_block`` > 0: the constant is one level
    per block of that many consecutive rows (the measurement drifts over the
    campaign), so the operator entries are not confounded with the drift; the
    overhead used for new predictions is the level of the last block.
    ``offsets`` is the fitted constant of every training row.
    """
    n = len(y)
    if drift_block > 0 and n > drift_block:
        blocks = np.arange(n) // drift_block
        blocks[blocks == blocks.max()] = max(blocks.max() - 1, 0) if n % drift_block else blocks.max()
        D = np.zeros((n, blocks.max() + 1))
        D[np.arange(n), blocks] = 1.0
    else:
        blocks, D = np.zeros(n, dtype=int), np.ones((n, 1))
    X = np.hstack([D, enc.additive(idx)])
    w = np.ones(n)
    for _ in range(iters if robust else 1):
        beta = _ridge(X, y, w, 0.0, free=X.shape[1])
        if robust:
            w = _huber_weights(y - X @ beta)
    levels = beta[:D.shape[1]]
    overhead, entries = gauge(enc, float(levels[-1]), beta[D.shape[1]:].copy())
    offsets = levels[blocks] + (overhead - levels[-1])
    return overhead, entries, w, offsets


def gauge(enc: Encoding, overhead: float, entries: np.ndarray) -> tuple[float, np.ndarray]:
    """Shift so the cheapest candidate of every position costs 0 (predictions unchanged).

    Positions with the same candidate operators share their entries and shift
    together; a set of operators also used elsewhere with other alternatives is
    left as fitted.
    """
    groups: dict[tuple, int] = {}
    for cols in enc.col:
        groups[tuple(sorted(set(cols)))] = groups.get(tuple(sorted(set(cols))), 0) + 1
    for cols, count in groups.items():
        if any(set(cols) & set(other) for other in groups if other != cols):
            continue
        low = entries[list(cols)].min()
        entries[list(cols)] -= low
        overhead += low * count
    return overhead, entries


def fit_correction(enc: Encoding, idx: np.ndarray, residual: np.ndarray, w: np.ndarray, entries: np.ndarray,
                   features: tuple[str, ...], alphas: list[float]) -> list[dict[str, np.ndarray]]:
    """Ridge fits of the residuals on the standardized feature blocks, one weight set per alpha."""
    if not features:
        return [{} for _ in alphas]
    blocks = [enc.correction(f, idx, entries) for f in features]
    X = sparse.hstack(blocks + [sparse.csr_matrix(np.ones((len(idx), 1)))]).tocsr()
    mean = np.asarray(X.mean(axis=0)).ravel()
    sq = np.asarray(X.multiply(X).mean(axis=0)).ravel()
    scale = np.sqrt(np.maximum(sq - mean**2, 0.0))
    scale = np.where(scale > 1e-6, scale, 1.0)  # constant columns (the bias) stay unscaled
    gram = np.asarray((X.T @ X.multiply(w[:, None])).todense()) / np.outer(scale, scale)
    rhs = (X.T @ (w * residual)) / scale
    out = []
    for alpha in alphas:
        beta = linalg.solve(gram + alpha * np.eye(len(rhs)), rhs, assume_a="pos") / scale
        weights, start = {}, 0
        for f, block in zip(features, blocks):
            weights[f] = beta[start:start + block.shape[1]]
            start += block.shape[1]
        weights["bias"] = beta[-1:]
        out.append(weights)
    return out


def correction_values(enc: Encoding, idx: np.ndarray, entries: np.ndarray, weights: dict) -> np.ndarray:
    total = np.zeros(len(idx))
    for f, coef in weights.items():
        if f == "bias":
            total += coef[0]
        else:
            total += enc.correction(f, idx, entries) @ coef
    return total


def metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    """RMSE (ms), shares within +-5% / +-10%, Spearman rank correlation."""
    rel = np.abs(pred - y) / y
    rho = spearmanr(pred, y)[0] if np.ptp(pred) > 0 and np.ptp(y) > 0 else 0.0
    return {"rmse_ms": float(np.sqrt(np.mean((pred - y) ** 2))), "within_5": float(np.mean(rel <= 0.05)),
            "within_10": float(np.mean(rel <= 0.10)), "spearman": float(rho), "max_abs_ms": float(np.max(np.abs(pred - y))),
            "rows": int(len(y))}


CANDIDATE_FEATURES = [(), ("stage",), ("position",), ("pairs",), ("position", "stage"), ("position", "pairs")]
CANDIDATE_ALPHAS = [1.0, 10.0, 100.0, 1000.0]


def _score(m: dict) -> float:
    """What validation maximizes: the share within +-10% plus the Spearman rank correlation."""
    return m["within_10"] + m["spearman"]


DRIFT_BLOCKS = [0, 250]
TIE = 0.002  # validation scores this close count as equal


def _forward(enc, idx, y, edges, feature_sets, scores, progress) -> None:
    """Fill ``scores[(robust, drift, features, alpha)]`` with one metrics dict per validation block."""
    for k in range(1, len(edges) - 1):
        tr, va = slice(0, edges[k]), slice(edges[k], edges[k + 1])
        for drift in DRIFT_BLOCKS:
            for robust in (False, True):
                overhead, entries, w, offsets = fit_additive(enc, idx[tr], y[tr], robust, drift)
                base_tr = offsets + enc.additive(idx[tr]) @ entries
                base_va = overhead + enc.additive(idx[va]) @ entries
                for features in feature_sets:
                    alphas = CANDIDATE_ALPHAS if features else [0.0]
                    fits = fit_correction(enc, idx[tr], y[tr] - base_tr, w, entries, features, alphas)
                    for alpha, weights in zip(alphas, fits):
                        pred = base_va + correction_values(enc, idx[va], entries, weights)
                        scores.setdefault((robust, drift, features, alpha), []).append(metrics(y[va], pred))
                if progress:
                    progress.update(1)


def select(enc: Encoding, idx: np.ndarray, y: np.ndarray, folds: int = 5, progress=None,
           feature_sets: list[tuple[str, ...]] | None = None) -> tuple[dict, list]:
    """Pick loss, drift model, correction features and ridge strength by forward validation.

    The rows (in measurement order) are cut into ``folds`` contiguous blocks;
    every block after the first is predicted by a fit on all the rows before it,
    as a deployed predictor predicts later measurements. The mean over those
    blocks of (share within +-10% + Spearman) decides; simpler settings come
    first and win ties.
    """
    n = len(y)
    if n < 100 * folds:
        return {"robust": False, "drift_block": 0, "features": (), "alpha": 0.0}, []
    edges = np.linspace(0, n, folds + 1).astype(int)
    scores: dict[tuple, list[dict]] = {}
    with threadpool_limits(1):  # small dense solves: one thread is fastest, and kind to a shared machine
        _forward(enc, idx, y, edges, feature_sets or CANDIDATE_FEATURES, scores, progress)
    trials = []
    for (robust, drift, features, alpha), ms in scores.items():
        mean = {key: float(np.mean([m[key] for m in ms])) for key in ("rmse_ms", "within_10", "spearman")}
        trials.append({"robust": robust, "drift_block": drift, "features": list(features), "alpha": alpha, **mean})
    top = max(_score(t) for t in trials)
    best = next(t for t in trials if _score(t) >= top - TIE)  # the simplest of the (nearly) best
    return {key: best[key] for key in ("robust", "drift_block", "features", "alpha")}, trials


# -- the predictor ----------------------------------------------------------------------
class WholeModelPredictor(LatencyPredictor):
    """Per-operator table recovered from whole-model latencies, plus a learned correction."""

    type_name = "whole_model"

    def __init__(self, device: dict, space: str, space_params: dict, overhead_ms: float,
                 entries: dict[str, float], correction: dict | None = None, meta: dict | None = None,
                 runtime: str = "tflite", dtype: str = "fp32", threads: int = 1, path: Path | None = None):
        self.device, self.space, self.space_params = device, space, dict(space_params or {})
        self.overhead_ms = float(overhead_ms)
        self.entries = dict(entries)
        self.correction = correction or {"features": [], "weights": {}}
        self.meta = meta or {}
        self.runtime, self.dtype, self.threads = runtime, dtype, threads
        self.path = path
        self._enc: Encoding | None = None

    @property
    def encoding(self) -> Encoding:
        if self._enc is None:
            self._enc = Encoding(get_space(self.space, self.space_params))
        return self._enc

    def predict_op(self, op: OpSpec) -> float:
        """The additive per-operator part (fixed stem / head ops are in ``overhead_ms``: 0 here)."""
        key = op.key()
        if key in self.entries:
            return self.entries[key]
        space = self.encoding.space
        # the stem and head (and a head with another class count) are fixed: their time is in overhead_ms
        if op.kind in ("zero", "conv", "pool", "linear") or op in space.stem or op in space.head:
            return 0.0
        where = f" ({self.path})" if self.path else ""
        raise HwnasError(f"operator {key} is not a candidate of space {self.space}{where}")

    def _entry_vector(self) -> np.ndarray:
        return np.array([self.entries.get(k, 0.0) for k in self.encoding.keys])

    def predict_many_choices(self, choices_list) -> np.ndarray:
        enc = self.encoding
        idx = enc.indices(choices_list)
        entries = self._entry_vector()
        weights = {f: np.asarray(v, dtype=np.float64) for f, v in self.correction["weights"].items()}
        return self.overhead_ms + enc.additive(idx) @ entries + correction_values(enc, idx, entries, weights)

    def predict_choices(self, choices) -> float:
        """Full prediction (additive part + correction) for one architecture's choices."""
        return float(self.predict_many_choices([list(choices)])[0])

    def predict_ops(self, ops: list[OpSpec]) -> float:
        choices = self._choices_of(ops)
        if choices is None:  # not a plain architecture of the space: additive part only
            return super().predict_ops(ops)
        return self.predict_choices(choices)

    def _choices_of(self, ops: list[OpSpec]) -> list[str] | None:
        """The choices of a network of the space (its head may differ, e.g. another class count), else None."""
        space = self.encoding.space
        body = [op for op in ops if op.kind != "zero"]
        if body[:len(space.stem)] != list(space.stem):
            return None
        choices, i = [], len(space.stem)
        for pos in space.positions:
            if i < len(body) and body[i] in pos.ops:
                choices.append(pos.names[pos.ops.index(body[i])])
                i += 1
            elif "zero" in pos.names:
                choices.append("zero")
            else:
                return None
        return choices if all(op.kind in ("conv", "pool", "linear") for op in body[i:]) else None

    def to_dict(self) -> dict:
        data = header(self.type_name, self.device, self.space, self.runtime, self.dtype, self.threads)
        data.update(space_params=self.space_params, overhead_ms=self.overhead_ms,
                    entries={k: v for k, v in self.entries.items()},
                    correction={"features": list(self.correction["features"]),
                                "alpha": self.correction.get("alpha", 0.0),
                                "weights": {f: [float(x) for x in v] for f, v in self.correction["weights"].items()}},
                    meta=self.meta)
        return data

    def save(self, path: str | Path) -> None:
        write_json(Path(path), self.to_dict())


@register_type("whole_model")
def _load(data: dict, path: Path) -> WholeModelPredictor:
    runtime, dtype, threads = target_fields(data, path)
    space = data.get("space")
    if not isinstance(space, str):
        raise HwnasError(f"{path}: field 'space' must name the space the predictor was fitted for")
    entries = data.get("entries")
    if not isinstance(entries, dict) or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in entries.values()):
        raise HwnasError(f"{path}: field 'entries' must map operator keys to finite numbers")
    corr = data.get("correction", {"features": [], "weights": {}})
    if not isinstance(corr, dict) or not isinstance(corr.get("weights"), dict):
        raise HwnasError(f"{path}: field 'correction' must be an object with 'features' and 'weights'")
    pred = WholeModelPredictor(data["device"], space, data.get("space_params") or {}, number(data, "overhead_ms", path),
                               {str(k): float(v) for k, v in entries.items()}, corr, data.get("meta") or {},
                               runtime, dtype, threads, path)
    enc = pred.encoding
    unknown = set(pred.entries) - set(enc.keys)
    if unknown:
        raise HwnasError(f"{path}: entries for operators not in space {space}: {sorted(unknown)[0]} ...")
    P, K = len(enc.positions), max(len(p.names) for p in enc.positions)
    sizes = {"position": P * K, "pairs": max(P - 1, 0) * K * K, "stage": len(enc.stages), "bias": 1}
    for f, v in corr["weights"].items():
        if f not in sizes or not isinstance(v, list) or len(v) != sizes[f]:
            raise HwnasError(f"{path}: correction weights {f!r} must be a list of {sizes.get(f, '?')} numbers")
    return pred


def fit_whole_model(space: SearchSpace, choices_list, y, device: dict, folds: int = 5,
                    settings: dict | None = None, progress=None, runtime: str = "tflite",
                    feature_sets: list[tuple[str, ...]] | None = None) -> WholeModelPredictor:
    """Fit on rows in measurement order; ``settings`` (robust, features, alpha) skips the validation search."""
    enc = Encoding(space)
    idx = enc.indices(choices_list)
    y = np.asarray(y, dtype=np.float64)
    trials = []
    if settings is None:
        settings, trials = select(enc, idx, y, folds, progress, feature_sets)
    overhead, entries, w, offsets = fit_additive(enc, idx, y, settings["robust"], settings.get("drift_block", 0))
    base = offsets + enc.additive(idx) @ entries
    weights = fit_correction(enc, idx, y - base, w, entries, tuple(settings["features"]), [settings["alpha"]])[0]
    meta = {"fitted_on_rows": int(len(y)), "settings": {**settings, "features": list(settings["features"])},
            "validation": {"forward_blocks": folds, "trials": trials},
            "train_fit": metrics(y, base + correction_values(enc, idx, entries, weights)),
            "gauge": "the cheapest candidate of every position is 0 ms; the rest is overhead_ms"}
    return WholeModelPredictor(device, space.name, space_overrides(space), overhead,
                               dict(zip(enc.keys, map(float, entries))),
                               {"features": list(settings["features"]), "alpha": settings["alpha"], "weights": weights},
                               meta, runtime=runtime)
