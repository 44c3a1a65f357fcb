"""Latency lookup table (type ``"lut"``): operator key -> measured ms on one device/runtime/dtype.

File (JSON, nothing in it can run code)::

    {<common header>, "type": "lut", "runtime": "tflite", "dtype": "fp32", "threads": 1,
     "overhead_ms": 0.041, "scale": 1.1, "per_op_ms": -0.002, "group_scales": {"mbconv:k7": 1.3, ...},
     "overhead": {"source": "...", "form": "...", "cv": {...}, "models": [...]},
     "fallback": "cpu-tflite-fp32-regressor.json" | null,
     "entries": {"mbconv:16x32x32->24:k3:s2:e3:g1:relu6": 0.0123, ...}}

A whole network's latency is the sum of its operators plus the fitted constant
``overhead_ms``. Each operator's latency inside a network is ``scale * entry +
per_op_ms``, where ``scale`` is its group's entry in ``group_scales`` (kind and
kernel, e.g. ``mbconv:k7``) when there is one (all fitted on whole models;
1, 0 and none when not; see :func:`hwnas.predictors.calibration.fit_calibration`),
so sums over operators, e.g. a supernet's latency tensors, stay exact. Files
without ``group_scales`` (older ones) load with none. An operator missing from the table raises
:class:`HwnasError` naming it, unless the fallback regressor was enabled with
:meth:`LookupTable.enable_fallback`.
"""

from __future__ import annotations

import math
from pathlib import Path

from hwnas.errors import HwnasError
from hwnas.ops import OpSpec
from hwnas.predictors import LatencyPredictor, load_predictor, register_type
from hwnas.predictors.calibration import group_scales_field, scale_field, scale_of
from hwnas.predictors.common import header, overhead_field, per_op_field, target_fields, write_json


class LookupTable(LatencyPredictor):
    """Measured per-operator latencies plus a constant whole-model overhead."""

    type_name = "lut"

    def __init__(self, device: dict, space: str | None, runtime: str, dtype: str, threads: int,
                 entries: dict[str, float], overhead_ms: float = 0.0, overhead: dict | None = None,
                 fallback: str | None = None, path: Path | None = None, per_op_ms: float = 0.0,
                 scale: float = 1.0, group_scales: dict[str, float] | None = None):
        self.device, self.space = device, space
        self.runtime, self.dtype, self.threads = runtime, dtype, threads
        self.entries = dict(entries)
        self.overhead_ms = float(overhead_ms)
        self.per_op_ms = float(per_op_ms)
        self.scale = float(scale)
        self.group_scales = dict(group_scales or {})
        self.overhead = overhead or {"source": "none: no whole-model rows; overhead set to 0", "models": []}
        self.fallback_name = fallback
        self.path = path
        self.fallback: LatencyPredictor | None = None

    def enable_fallback(self, predictor: LatencyPredictor | None = None) -> "LookupTable":
        """Predict operators missing from the table with ``predictor`` (default: the file's named fallback)."""
        if predictor is None:
            if not self.fallback_name:
                raise HwnasError(f"{self.path or 'lookup table'}: names no fallback regressor")
            base = self.path.parent if self.path else Path(".")
            predictor = load_predictor(base / self.fallback_name, space=self.space)
        self.fallback = predictor
        return self

    def predict_op(self, op: OpSpec) -> float:
        key = op.key()
        if key in self.entries:
            return scale_of(self, op) * self.entries[key] + self.per_op_ms
        if op.is_identity:
            return 0.0
        if self.fallback is not None:
            return self.fallback.predict_op(op)
        where = f" in {self.path}" if self.path else ""
        raise HwnasError(f"no latency entry for operator {key}{where} "
                         f"({self.runtime} {self.dtype} {self.threads} thread(s)); profile it or enable the "
                         f"fallback regressor")

    def covers(self, ops) -> bool:
        """True when every operator of ``ops`` has an entry (or computes nothing)."""
        return all(op.key() in self.entries or op.is_identity for op in ops)

    def fallback_for(self, ops) -> int:
        """How many of ``ops`` have no entry; when some do and the file names a fallback regressor, it is
        enabled for them (without one, predicting them raises the missing-entry error)."""
        missing = sum(1 for op in ops if not self.covers([op]))
        if missing and self.fallback_name and self.fallback is None:
            self.enable_fallback()
        return missing

    def to_dict(self) -> dict:
        data = header(self.type_name, self.device, self.space, self.runtime, self.dtype, self.threads)
        data.update(overhead_ms=self.overhead_ms, scale=self.scale, per_op_ms=self.per_op_ms,
                    group_scales=dict(sorted(self.group_scales.items())),
                    overhead=self.overhead, fallback=self.fallback_name,
                    entries=dict(sorted(self.entries.items())))
        return data

    def save(self, path: str | Path) -> None:
        path = Path(path)
        write_json(path, self.to_dict())
        self.path = path


@register_type("lut")
def _load(data: dict, path: Path) -> LookupTable:
    runtime, dtype, threads = target_fields(data, path)
    entries = data.get("entries")
    if not isinstance(entries, dict):
        raise HwnasError(f"{path}: field 'entries' must be an object of operator key -> ms")
    clean = {}
    for key, ms in entries.items():
        try:
            OpSpec.from_key(key)
        except HwnasError as exc:
            raise HwnasError(f"{path}: field 'entries': {exc}") from None
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0 <= ms < math.inf:
            raise HwnasError(f"{path}: entry {key!r} must be a finite non-negative number of ms, got {ms!r}")
        clean[key] = float(ms)
    fallback = data.get("fallback")
    if fallback is not None and (not isinstance(fallback, str) or "/" in fallback or "\\" in fallback):
        raise HwnasError(f"{path}: field 'fallback' must be a file name beside the table, got {fallback!r}")
    overhead = data.get("overhead")
    if overhead is not None and not isinstance(overhead, dict):
        raise HwnasError(f"{path}: field 'overhead' must be an object")
    return LookupTable(data["device"], data.get("space"), runtime, dtype, threads, clean,
                       overhead_field(data, path), overhead, fallback, path,
                       per_op_field(data, path), scale_field(data, path),
                       group_scales_field(data, path))
