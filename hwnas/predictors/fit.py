"""Fit the lookup table and the regressor of one device/runtime/dtype from ``latency_data/``.

Whole-model rows are split once, deterministically by a hash of their
``arch_file``: a share (``holdout``, default half) is never used in fitting and is
left for :mod:`hwnas.predictors.evaluate`; the rest fits the calibration
(constant overhead, scales and per-operator correction, chosen by
cross-validation on those models only, see
:func:`hwnas.predictors.calibration.fit_calibration`).
The files record which models they were fitted on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnas.arch import Architecture
from hwnas.errors import HwnasError
from hwnas.latency_data import ModelRow, OpRow, read_device, read_model_rows, read_op_rows
from hwnas.ops import OpSpec
from hwnas.predictors.calibration import fit_calibration, scale_group
from hwnas.predictors.lut import LookupTable
from hwnas.predictors.regressor import (
    METHODS, RegressorPredictor, best_method, cross_validate, fit_method,
)


@dataclass
class FitResult:
    lut: LookupTable
    regressor: RegressorPredictor
    cv: dict[str, dict]
    n_op_rows: int
    fit_models: list[str] = field(default_factory=list)
    held_out_models: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)


def select_ops(rows: list[OpRow], runtime: str, dtype: str, threads: int) -> tuple[list[OpSpec], np.ndarray]:
    """Operators measured with this runtime/dtype/threads and their latency.

    A table holds one row per operator (:func:`hwnas.latency_data.read_op_rows` refuses conflicting
    repeats, and the re-timing tool writes the median of its rounds as that one row)."""
    picked = [row for row in rows if (row.runtime, row.dtype, row.threads) == (runtime, dtype, threads)]
    return [row.op for row in picked], np.array([row.median_ms for row in picked], dtype=float)


def select_models(rows: list[ModelRow], runtime: str, dtype: str, threads: int,
                  space: str | None = None) -> list[ModelRow]:
    return [r for r in rows if (r.runtime, r.dtype, r.threads) == (runtime, dtype, threads)
            and (space is None or r.space == space)]


def is_held_out(arch_file: str, holdout: float) -> bool:
    """Deterministic split of whole models: the same file is always on the same side."""
    digest = int(hashlib.sha256(arch_file.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < holdout


def model_ops(row: ModelRow, root: Path | None = None) -> list[OpSpec]:
    """The operators of a measured model (from its architecture file when found, else space + choices)."""
    for base in ([root] if root else []) + [Path(".")]:
        path = base / row.arch_file
        if path.is_file():
            return Architecture.load(path).ops()
    arch = Architecture(row.space, list(row.choices))
    try:
        arch.validate()
    except HwnasError as exc:
        raise HwnasError(f"model row {row.arch_file}: {exc}") from None
    return arch.ops()


def fit_device(data_dir: Path, device: str, runtime: str, dtype: str, threads: int = 1,
               space: str | None = None, holdout: float = 0.5, methods: list[str] | None = None,
               per_op: bool = True, progress: bool = False) -> FitResult:
    """Read ``data_dir/<device>.csv`` (+ ``-models.csv``, ``.device.json``) and fit both predictors."""
    data_dir = Path(data_dir)
    op_path = data_dir / f"{device}.csv"
    ops, ms = select_ops(read_op_rows(op_path), runtime, dtype, threads)
    if len(ops) < 5:
        raise HwnasError(f"{op_path}: only {len(ops)} operator rows for {runtime} {dtype} {threads} thread(s); "
                         "profile more operators first (hwnas profile)")
    dev_path = data_dir / f"{device}.device.json"
    desc = read_device(dev_path) if dev_path.exists() else {"name": device}
    models_path = data_dir / f"{device}-models.csv"
    models = select_models(read_model_rows(models_path), runtime, dtype, threads, space) \
        if models_path.exists() else []
    fit_rows = [m for m in models if not is_held_out(m.arch_file, holdout)]
    held = [m.arch_file for m in models if is_held_out(m.arch_file, holdout)]

    lut = LookupTable(desc, space, runtime, dtype, threads, {op.key(): float(t) for op, t in zip(ops, ms)})
    cv = cross_validate(ops, ms, methods or list(METHODS), progress=progress)
    best = best_method(cv)
    fitted = fit_method(METHODS[best], ops, ms)
    reg = RegressorPredictor(desc, space, runtime, dtype, threads, fitted, cv=cv, n_rows=len(ops))

    root = data_dir.parent
    fit_ops = [model_ops(m, root) for m in fit_rows]
    measured = [m.median_ms for m in fit_rows]
    usable = [i for i, o in enumerate(fit_ops) if lut.covers(o)]
    for predictor, idx in ((lut, usable), (reg, range(len(fit_rows)))):
        calibrate(predictor, [fit_ops[i] for i in idx], [measured[i] for i in idx],
                  [fit_rows[i].arch_file for i in idx], models_path.name, per_op)
        predictor.overhead["held_out"] = held
    return FitResult(lut, reg, cv, len(ops), [m.arch_file for m in fit_rows], held)


def calibrate(predictor, model_ops_list: list[list[OpSpec]], measured: list[float], names: list[str],
              source: str, per_op: bool = True) -> None:
    """Fit a predictor's whole-model calibration (``overhead_ms``, ``scale``, ``per_op_ms``, ``group_scales``).

    Without ``per_op`` only the constant overhead is fitted. The overhead is never negative (see
    :mod:`hwnas.predictors.calibration`); when it is held at 0 the source text says so.
    """
    predictor.overhead_ms, predictor.scale, predictor.per_op_ms, predictor.group_scales = 0.0, 1.0, 0.0, {}
    group_sums, counts = [], []
    for ops in model_ops_list:
        sums: dict[str, float] = {}
        real = [op for op in ops if op.kind != "zero" and not op.is_identity]
        for op in real:
            sums[scale_group(op)] = sums.get(scale_group(op), 0.0) + predictor.predict_op(op)
        group_sums.append(sums)
        counts.append(len(real))
    cal = fit_calibration(group_sums, counts, measured, per_op)
    predictor.overhead_ms, predictor.scale, predictor.per_op_ms = cal.overhead_ms, cal.scale, cal.per_op_ms
    predictor.group_scales = dict(cal.group_scales)
    if names:
        how = {"constant": "median of (measured - sum of operators)",
               "scale": "median relative line of measured against the sum of operators",
               "scale+per-op": "median relative line of measured against (sum of operators, operator count)",
               "group-scales+per-op": "median relative line of measured against (sums of operators by kind and "
                                      "kernel, operator count)"}[cal.form]
        text = f"{how} over {len(names)} whole models of {source}"
        if cal.cv:
            text += f"; form {cal.form!r} kept by repeated 5-fold cross-validation on them (lowest MAPE)"
        if cal.note:
            text += f"; {cal.note}"
    else:
        text = "none: no whole-model rows to fit on; overhead set to 0"
    predictor.overhead = {"source": text, "form": cal.form, "cv": cal.cv, "models": list(names)}


def output_stem(device: str, runtime: str, dtype: str, threads: int, space: str | None,
                default_space: str) -> str:
    """``<device>-<runtime>-<dtype>`` (+ ``-<space>`` for a non-default space, ``-t<n>`` for threads > 1)."""
    stem = f"{device}-{runtime}-{dtype}"
    if space and space != default_space:
        stem += f"-{space}"
    if threads != 1:
        stem += f"-t{threads}"
    return stem


def save(result: FitResult, out_dir: Path, stem: str) -> list[Path]:
    """Write the table (``<stem>.json``, naming its fallback) and the regressor (``<stem>-regressor.*``)."""
    out_dir = Path(out_dir)
    reg_path = out_dir / f"{stem}-regressor.json"
    result.regressor.save(reg_path)
    result.lut.fallback_name = reg_path.name
    lut_path = out_dir / f"{stem}.json"
    result.lut.save(lut_path)
    result.paths = [lut_path, reg_path, reg_path.with_suffix(".skops")]
    return result.paths
