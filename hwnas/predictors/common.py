"""Pieces shared by the predictor types: file headers, checked fields, atomic writes."""

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


def overhead_field(data: dict, path: Path) -> float:
    """The ``overhead_ms`` field (0 when absent): a finite number >= 0 (a network never costs less than its parts'
    sum because of it; see :mod:`hwnas.predictors.calibration`)."""
    value = number(data, "overhead_ms", path, 0.0)
    if value < 0:
        raise HwnasError(f"{path}: field 'overhead_ms' must not be negative, got {value!r}; refit the predictor "
                         "(hwnas fit)")
    return value


def _non_finite(data, where: str = "") -> str:
    """The dotted path of the first NaN or infinite number in ``data`` ('' when none)."""
    if isinstance(data, float) and not np.isfinite(data):
        return where or "the top level"
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, (list, tuple)) else ()
    for key, value in items:
        found = _non_finite(value, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return ""


MIN_PER_OP_MS = -0.1  # fits give a few microseconds either way; below this operators would cost less than nothing


def per_op_field(data: dict, path: Path) -> float:
    """The ``per_op_ms`` field (0 when absent): a finite number >= :data:`MIN_PER_OP_MS`. It is a small
    per-operator correction; a large negative one would make networks cost negative milliseconds."""
    value = number(data, "per_op_ms", path, 0.0)
    if value < MIN_PER_OP_MS:
        raise HwnasError(f"{path}: field 'per_op_ms' must be at least {MIN_PER_OP_MS:g} ms, got {value!r}; refit "
                         "the predictor (hwnas fit)")
    return value


def write_json(path: Path, data: dict, indent: int | None = 1) -> None:
    """Write JSON atomically (a crash leaves the old file or the new one, never half of one).

    A NaN or infinite number is refused before anything is written (JSON has none). ``indent=None``: one line,
    for large result files.
    """
    try:
        text = json.dumps(data, indent=indent, allow_nan=False) + "\n"
    except ValueError:
        raise HwnasError(f"{path}: not written: a value is NaN or infinite (in {_non_finite(data)})") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
