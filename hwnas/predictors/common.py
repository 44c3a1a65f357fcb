"""Pieces shared by the predictor types: file headers, the overhead fit, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from hwnas.errors import HwnasError
from hwnas.predictors import FORMAT, VERSION


def header(kind: str, device: dict, space: str | None, runtime: str, dtype: str, threads: int) -> dict:
    """The common fields every predictor file starts with."""
    return {"format": FORMAT, "version": VERSION, "type": kind, "device": device, "space": space,
            "runtime": runtime, "dtype": dtype, "threads": threads}


def target_fields(data: dict, path: Path) -> tuple[str, str, int]:
    """``(runtime, dtype, threads)`` of a predictor file, checked."""
    runtime, dtype, threads = data.get("runtime"), data.get("dtype"), data.get("threads")
    if not isinstance(runtime, str) or not isinstance(dtype, str):
        raise HwnasError(f"{path}: fields 'runtime' and 'dtype' must be strings")
    if not isinstance(threads, int) or threads < 1:
        raise HwnasError(f"{path}: field 'threads' must be a positive integer, got {threads!r}")
    if not isinstance(data.get("device"), dict):
        raise HwnasError(f"{path}: field 'device' must be an object")
    return runtime, dtype, threads


def number(data: dict, field: str, path: Path, default: float | None = None) -> float:
    """A finite number field of a predictor file."""
    value = data.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise HwnasError(f"{path}: field {field!r} must be a finite number, got {value!r}")
    return float(value)


def fit_overhead(op_sums: list[float], measured: list[float], n_ops: list[int] | None = None
                 ) -> tuple[float, float, float]:
    """``(overhead_ms, scale, per_op_ms)`` with measured ~ overhead_ms + scale * sum + per_op_ms * n_ops.

    Operators timed alone differ from the same operators inside a network: each
    paid the runtime's invoke cost once (``per_op_ms``), and caches and kernels
    behave differently in a longer graph (``scale``). All three are fitted by
    least absolute deviation (a median line), so the few whole-model
    measurements disturbed by a busy machine (always too slow) do not move them.
    Without ``n_ops``, or with fewer than 10 models, only the constant is
    fitted (the median residual; scale 1, per_op 0); a scale outside 0.5..2 is
    not trusted and also falls back to the constant.
    """
    if not op_sums:
        return 0.0, 1.0, 0.0
    sums, measured = np.asarray(op_sums, float), np.asarray(measured, float)
    constant = (float(np.median(measured - sums)), 1.0, 0.0)
    if n_ops is None or len(sums) < 10:
        return constant
    from sklearn.linear_model import QuantileRegressor

    counts = np.asarray(n_ops, float)
    X = np.stack([sums, counts], axis=1) if len(set(n_ops)) > 1 else sums[:, None]
    line = QuantileRegressor(quantile=0.5, alpha=0.0, solver="highs").fit(X, measured)
    scale = float(line.coef_[0])
    if not 0.5 <= scale <= 2.0:
        return constant
    return float(line.intercept_), scale, float(line.coef_[1]) if X.shape[1] == 2 else 0.0


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (a crash leaves the old file or the new one, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
