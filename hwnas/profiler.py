"""Profiling: time every unique operator of a space, and whole sampled architectures.

``profile_ops`` exports each unique operator of a space (ONNX in this process,
TFLite through one conversion worker subprocess), times it with a runner and
appends one row per operator to ``latency_data/<device>.csv``. Rows are
flushed and fsynced one by one; rows already there for the same
(operator, runtime, dtype, threads) are skipped, so a run killed at any moment
resumes without losing or duplicating rows. Identity operators (``zero``,
shape-keeping ``skip``) compute nothing and are not measured: predictors
give them 0 ms.

``measure_archs`` samples N architectures (seeded), saves each as JSON under
``latency_data/models/<space>/``, exports the whole network (random weights),
times it and appends one row per model to ``latency_data/<device>-models.csv``,
resumable the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from hwnas.progress import progress_bar

from hwnas.arch import Architecture, sample_architecture
from hwnas.errors import HwnasError
from hwnas.latency_data import (
    DTYPES, ModelRow, OpRow, append_model_row, append_op_row, check_same_device, device_file,
    read_device, read_model_rows, read_op_rows, write_device,
)
from hwnas.ops import OpSpec
from hwnas.runners import Runner
from hwnas.spaces import SearchSpace


@dataclass
class ProfileResult:
    measured: int
    skipped: int
    total: int
    path: Path


def profiled_ops(space: SearchSpace) -> list[OpSpec]:
    """The operators of a space that take time (unique, identity ops left out)."""
    return [op for op in space.unique_ops() if not op.is_identity]


def prepare_output(path: Path, device: dict, runtime: str, read_rows: Callable) -> list:
    """Check ``path`` is writable, its rows readable and its device description the same; returns its rows."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as exc:
        raise HwnasError(f"{path}: cannot write the latency table ({exc.strerror or exc})") from None
    rows = read_rows(path) if path.stat().st_size else []
    desc_path = device_file(path)
    if desc_path.exists():
        stored = read_device(desc_path)
        check_same_device(stored, device, runtime, desc_path)
        _check_same_settings(stored, device, runtime, desc_path)
        merged = {**stored, "runtimes": {**stored.get("runtimes", {}), **device.get("runtimes", {})},
                  "runners": {**stored.get("runners", {}), **device.get("runners", {})}}
        if merged != stored:
            write_device(desc_path, merged)
    elif rows:
        raise HwnasError(f"{path} has rows but no device description {desc_path.name}; restore it or use a new "
                         "--out file")
    else:
        write_device(desc_path, device)
    return rows


def _check_same_settings(stored: dict, device: dict, runtime: str, where: Path) -> None:
    """Rows of one file share the runner settings (XNNPACK on/off, taskset ...); threads may differ."""
    before = {k: v for k, v in stored.get("runners", {}).get(runtime, {}).items() if k != "threads"}
    now = {k: v for k, v in device.get("runners", {}).get(runtime, {}).items() if k != "threads"}
    if before and now and before != now:
        raise HwnasError(f"{where}: runner settings mismatch for {runtime}: stored {before}, now {now}; "
                         "use another --device name or --out file")


class Exporter:
    """Exports operator lists to the runner's format; TFLite through one long-lived worker."""

    def __init__(self, runner: Runner, dtype: str, work_dir: Path, per_op: bool):
        if dtype not in DTYPES:
            raise HwnasError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
        if runner.suffix == ".onnx" and dtype != "fp32":
            raise HwnasError("onnxruntime profiling supports --dtype fp32 only")
        self.runner, self.dtype, self.work_dir, self.per_op = runner, dtype, work_dir, per_op
        self._converter = None

    def export(self, ops: list[OpSpec], name: str) -> Path:
        path = self.work_dir / f"{name}{self.runner.suffix}"
        if self.runner.suffix == ".onnx":
            from hwnas.export.onnx_export import export_onnx

            return export_onnx(ops, None, path)
        if self._converter is None:
            from hwnas.export.tflite import TFLiteConverter

            self._converter = TFLiteConverter(self.work_dir / "converter.log").start()
        quant = "int8" if self.dtype == "int8" else "fp32"
        # Single operators keep int8 tensors at their edges (as inside a network); whole models take floats.
        return self._converter.convert(ops, path, quant, int8_io=self.per_op and quant == "int8")

    def close(self) -> None:
        if self._converter is not None:
            self._converter.close()


@contextlib.contextmanager
def _exporter(runner: Runner, dtype: str, per_op: bool) -> Iterator[Exporter]:
    with tempfile.TemporaryDirectory(prefix="hwnas-profile-") as tmp:
        exporter = Exporter(runner, dtype, Path(tmp), per_op)
        try:
            yield exporter
        finally:
            exporter.close()


def profile_ops(space: SearchSpace, runner: Runner, out: str | Path, device: dict, dtype: str = "fp32",
                limit: int | None = None, progress: bool = True) -> ProfileResult:
    """Profile the space's operators into ``out`` (see the module docstring)."""
    out = Path(out)
    ops = profiled_ops(space)[:limit]
    existing = prepare_output(out, device, runner.name, read_op_rows)
    done = {row.key for row in existing}
    todo = [op for op in ops if (op.key(), runner.name, dtype, runner.threads) not in done]
    if todo:
        with _exporter(runner, dtype, per_op=True) as exporter:
            bar = progress_bar(todo, desc=f"profile {space.name} {runner.name} {dtype}", unit="op",
                               enabled=progress)
            for i, op in enumerate(bar):
                model = exporter.export([op], f"op{i}")
                timing = runner.time(model)
                model.unlink(missing_ok=True)
                append_op_row(out, OpRow(op, runner.name, dtype, runner.threads, timing.median_ms,
                                         timing.spread_ms, timing.repeats, timing.iters))
                bar.set_postfix_str(f"{op.kind} {timing.median_ms:.3f} ms")
    return ProfileResult(len(todo), len(ops) - len(todo), len(ops), out)


def arch_file_name(arch: Architecture) -> str:
    """A stable file name from the architecture's content."""
    digest = hashlib.sha1(repr((arch.space_name, sorted(arch.to_dict().get("space_params", {}).items()),
                                arch.choices)).encode()).hexdigest()[:12]
    return f"{digest}.json"


def sample_archs(space: SearchSpace, count: int, seed: int) -> list[Architecture]:
    """``count`` distinct architectures sampled uniformly with ``seed`` (deterministic)."""
    rng = random.Random(seed)
    archs, seen = [], set()
    for _ in range(count * 20):
        if len(archs) == count:
            break
        arch = sample_architecture(space, rng)
        if tuple(arch.choices) not in seen:
            seen.add(tuple(arch.choices))
            archs.append(arch)
    return archs


def measure_archs(space: SearchSpace, runner: Runner, count: int, out: str | Path, device: dict,
                  models_dir: str | Path, dtype: str = "fp32", seed: int = 0, progress: bool = True) -> ProfileResult:
    """Export, time and record ``count`` sampled architectures (see the module docstring)."""
    out, models_dir = Path(out), Path(models_dir)
    archs = sample_archs(space, count, seed)
    existing = prepare_output(out, device, runner.name, read_model_rows)
    done = {row.key for row in existing}
    todo = []
    for arch in archs:
        path = models_dir / arch_file_name(arch)
        rel = os.path.relpath(path)
        if (rel, runner.name, dtype, runner.threads) not in done:
            todo.append((arch, path, rel))
    if todo:
        with _exporter(runner, dtype, per_op=False) as exporter:
            bar = progress_bar(todo, desc=f"measure {space.name} {runner.name} {dtype}", unit="model",
                               enabled=progress)
            for i, (arch, path, rel) in enumerate(bar):
                if not path.exists():
                    arch.save(path)
                model = exporter.export(arch.ops(), f"model{i}")
                timing = runner.time(model)
                model.unlink(missing_ok=True)
                append_model_row(out, ModelRow(rel, space.name, tuple(arch.choices), runner.name, dtype,
                                               runner.threads, timing.median_ms, timing.spread_ms,
                                               timing.repeats))
                bar.set_postfix_str(f"{timing.median_ms:.3f} ms")
    return ProfileResult(len(todo), len(archs) - len(todo), len(archs), out)
