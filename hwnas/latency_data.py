"""Measured latency tables: reading and appending the shared CSV formats.

Files (under ``latency_data/`` by default)::

    <device>.csv            one row per measured operator
        op_key,kind,c_in,c_out,h,w,kernel,stride,expand,groups,act,
        runtime,dtype,threads,median_ms,spread_ms,repeats,iters
    <device>-models.csv     one row per measured whole model
        arch_file,space,choices,runtime,dtype,threads,median_ms,spread_ms,repeats
    <device>.device.json    the device description (cpu, cores, os, runtimes ...)

``runtime`` is one of tflite | onnxruntime | adb-tflite, ``dtype`` fp32 | int8,
``spread_ms`` the interquartile range of the repeat medians, ``choices`` the
architecture's choices separated by single spaces, ``arch_file`` relative to
the repository root.

Appends write one whole line with a single ``write`` and then flush + fsync,
so a run killed at any moment loses at most the row in flight. A final line
without its newline (a row cut short by a crash) is ignored when reading and
removed before the next append; any other bad row raises :class:`HwnasError`
naming the file and line. A table holds one row per measurement (operator or
model, runtime, dtype, threads): an exact repeat is counted once with a warning,
a repeat with other values is refused naming both lines.

API: :class:`OpRow`, :class:`ModelRow`, :func:`read_op_rows`,
:func:`append_op_row`, :func:`read_model_rows`, :func:`append_model_row`,
:func:`read_device`, :func:`write_device`, :func:`describe_this_device`,
:func:`default_device_name`, :func:`check_same_device`, :func:`device_mismatch`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import re
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from hwnas.errors import HwnasError
from hwnas.jsonfile import read_json
from hwnas.ops import OpSpec

RUNTIMES = ("tflite", "onnxruntime", "adb-tflite")
DTYPES = ("fp32", "int8")
OP_FIELDS = [
    "op_key", "kind", "c_in", "c_out", "h", "w", "kernel", "stride", "expand", "groups", "act",
    "runtime", "dtype", "threads", "median_ms", "spread_ms", "repeats", "iters",
]
MODEL_FIELDS = ["arch_file", "space", "choices", "runtime", "dtype", "threads", "median_ms", "spread_ms", "repeats"]
MAX_MS = 60_000.0  # one inference of a mobile network never takes a minute: a larger value is a broken row
_OP_INT_FIELDS = ("c_in", "c_out", "h", "w", "kernel", "stride", "expand", "groups")


@dataclass(frozen=True)
class OpRow:
    """One measured operator."""

    op: OpSpec
    runtime: str
    dtype: str
    threads: int
    median_ms: float
    spread_ms: float
    repeats: int
    iters: int

    @property
    def key(self) -> tuple:
        """Identity of a measurement for resuming: (op key, runtime, dtype, threads)."""
        return (self.op.key(), self.runtime, self.dtype, self.threads)

    def to_record(self) -> dict:
        op = self.op
        rec = {"op_key": op.key(), "kind": op.kind}
        rec.update({f: getattr(op, f) for f in _OP_INT_FIELDS})
        rec.update(act=op.act, runtime=self.runtime, dtype=self.dtype, threads=self.threads,
                   median_ms=f"{self.median_ms:.6g}", spread_ms=f"{self.spread_ms:.6g}",
                   repeats=self.repeats, iters=self.iters)
        return rec


@dataclass(frozen=True)
class ModelRow:
    """One measured whole model."""

    arch_file: str
    space: str
    choices: tuple[str, ...]
    runtime: str
    dtype: str
    threads: int
    median_ms: float
    spread_ms: float
    repeats: int

    @property
    def key(self) -> tuple:
        return (self.arch_file, self.runtime, self.dtype, self.threads)

    def to_record(self) -> dict:
        return {"arch_file": self.arch_file, "space": self.space, "choices": " ".join(self.choices),
                "runtime": self.runtime, "dtype": self.dtype, "threads": self.threads,
                "median_ms": f"{self.median_ms:.6g}", "spread_ms": f"{self.spread_ms:.6g}",
                "repeats": self.repeats}


# -- parsing helpers ------------------------------------------------------------------
def _int(rec: dict, name: str) -> int:
    try:
        value = int(rec[name])
    except (TypeError, ValueError):
        raise ValueError(f"field {name!r} must be an integer, got {rec[name]!r}") from None
    if value < 1:
        raise ValueError(f"field {name!r} must be positive, got {value}")
    return value


def _float(rec: dict, name: str, positive: bool = False) -> float:
    """A field in ms: finite, >= 0 (> 0 with ``positive``) and at most :data:`MAX_MS`."""
    try:
        value = float(rec[name])
    except (TypeError, ValueError):
        raise ValueError(f"field {name!r} must be a number, got {rec[name]!r}") from None
    if not (value > 0 if positive else value >= 0) or value > MAX_MS:
        low = "(0" if positive else "[0"
        raise ValueError(f"field {name!r} must be a number of ms in {low}, {MAX_MS:g}], got {rec[name]!r}")
    return value


def _choice(rec: dict, name: str, allowed: tuple) -> str:
    if rec[name] not in allowed:
        raise ValueError(f"field {name!r} is {rec[name]!r}, expected one of {', '.join(allowed)}")
    return rec[name]


def _op_row(rec: dict) -> OpRow:
    try:
        op = OpSpec(rec["kind"], *(_int(rec, f) for f in _OP_INT_FIELDS), act=rec["act"])
    except HwnasError as exc:
        raise ValueError(str(exc)) from None
    if rec["op_key"] != op.key():
        raise ValueError(f"op_key {rec['op_key']!r} does not match the operator fields ({op.key()})")
    return OpRow(op, _choice(rec, "runtime", RUNTIMES), _choice(rec, "dtype", DTYPES), _int(rec, "threads"),
                 _float(rec, "median_ms", positive=True), _float(rec, "spread_ms"), _int(rec, "repeats"), _int(rec, "iters"))


def _model_row(rec: dict) -> ModelRow:
    choices = tuple(rec["choices"].split())
    if not rec["arch_file"] or not rec["space"] or not choices:
        raise ValueError("fields 'arch_file', 'space' and 'choices' must not be empty")
    return ModelRow(rec["arch_file"], rec["space"], choices, _choice(rec, "runtime", RUNTIMES),
                    _choice(rec, "dtype", DTYPES), _int(rec, "threads"), _float(rec, "median_ms", positive=True),
                    _float(rec, "spread_ms"), _int(rec, "repeats"))


def _read(path: Path, fields: list[str], parse) -> list:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise HwnasError(f"{path}: no such latency file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HwnasError(f"{path}: cannot read ({exc})") from None
    lines = text.splitlines(keepends=True)
    if not lines:
        return []
    header = lines[0].strip().split(",")
    if header != fields:
        raise HwnasError(f"{path}, line 1: header is not the expected columns {','.join(fields)}")
    rows, seen = [], {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        unterminated = not line.endswith("\n")
        try:
            values = next(csv.reader([line]))
            if len(values) != len(fields):
                raise ValueError(f"expected {len(fields)} columns, found {len(values)}")
            row = parse(dict(zip(fields, values)))
        except (ValueError, csv.Error) as exc:
            if unterminated:
                warnings.warn(f"{path}, line {number}: ignoring an incomplete last row (interrupted write)")
                continue
            raise HwnasError(f"{path}, line {number}: corrupted row: {exc}") from None
        if row.key in seen:
            _repeated(path, seen[row.key], number, row)
            continue
        seen[row.key] = (number, row)
        rows.append(row)
    return rows


def _repeated(path: Path, first: tuple[int, object], number: int, row) -> None:
    """A second row for the same measurement: an exact copy is dropped with a warning, a different one refused
    (the tools write one row per operator or model, so a second one means the table was edited or merged)."""
    line, kept = first
    what = f"operator {row.key[0]}" if isinstance(row, OpRow) else f"model {row.key[0]}"
    target = f"{row.runtime} {row.dtype} {row.threads} thread(s)"
    if row == kept:
        warnings.warn(f"{path}, line {number}: repeats line {line} ({what}, {target}); counted once")
        return
    raise HwnasError(f"{path}, lines {line} and {number}: {what} measured twice for {target} with different "
                     f"values ({kept.median_ms:g} ms and {row.median_ms:g} ms); keep one of the two rows")


def _append(path: Path, fields: list[str], record: dict) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _drop_unterminated_tail(path)
        new = not path.exists() or path.stat().st_size == 0
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow(record)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, buf.getvalue().encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise HwnasError(f"{path}: cannot write ({exc.strerror or exc})") from None


def _drop_unterminated_tail(path: Path) -> None:
    """Remove a last line that lacks its newline (a row cut short by a crash)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        content = f.read()
        cut = content.rfind(b"\n") + 1
        f.truncate(cut)
    warnings.warn(f"{path}: removed an incomplete last row (interrupted write)")


# -- public API ----------------------------------------------------------------------
def read_op_rows(path: str | Path) -> list[OpRow]:
    """All operator rows of ``path``; HwnasError naming file and line for a bad row."""
    return _read(Path(path), OP_FIELDS, _op_row)


def append_op_row(path: str | Path, row: OpRow) -> None:
    """Append one row (header first when the file is new), flushed and fsynced."""
    _append(Path(path), OP_FIELDS, row.to_record())


def read_model_rows(path: str | Path) -> list[ModelRow]:
    """All whole-model rows of ``path``."""
    return _read(Path(path), MODEL_FIELDS, _model_row)


def append_model_row(path: str | Path, row: ModelRow) -> None:
    _append(Path(path), MODEL_FIELDS, row.to_record())


def device_file(csv_path: str | Path) -> Path:
    """``latency_data/x.csv`` and ``latency_data/x-models.csv`` -> ``latency_data/x.device.json``."""
    path = Path(csv_path)
    stem = path.stem[: -len("-models")] if path.stem.endswith("-models") else path.stem
    return path.with_name(stem + ".device.json")


def read_device(path: str | Path) -> dict:
    path = Path(path)
    data = read_json(path, "device description")
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise HwnasError(f"{path}: a device description must be a JSON object with a string field 'name'")
    if not isinstance(data.get("runtimes", {}), dict):
        raise HwnasError(f"{path}: field 'runtimes' must be an object")
    return data


def write_device(path: str | Path, desc: dict) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(desc, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
    except OSError as exc:
        raise HwnasError(f"{path}: cannot write ({exc.strerror or exc})") from None


def _cpuinfo() -> list[str]:
    """The lines of Linux ``/proc/cpuinfo`` ([] where it cannot be read)."""
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_model(cpuinfo: list[str] | None = None) -> str:
    for line in _cpuinfo() if cpuinfo is None else cpuinfo:
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def vector_isa(cpuinfo: list[str] | None = None) -> str | None:
    """The widest vector instruction set this CPU reports (Linux ``/proc/cpuinfo``): avx512, avx2, avx, sse4.2,
    sve or neon; None where it cannot be read. Two machines with one CPU string can differ here (the reference
    AMD EPYC VM has AVX-512, a later one with the same string only AVX2), and runtimes pick their kernels by it."""
    flags = set()
    for line in _cpuinfo() if cpuinfo is None else cpuinfo:
        if line.lower().startswith(("flags", "features")):
            flags.update(line.split(":", 1)[1].split())
    for flag, name in (("avx512f", "avx512"), ("avx2", "avx2"), ("avx", "avx"), ("sse4_2", "sse4.2"),
                       ("sve", "sve"), ("asimd", "neon")):
        if flag in flags:
            return name
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def default_device_name(cpu: str | None = None) -> str:
    """A slug of this machine's CPU model (``cpu``, default :func:`cpu_model`) and core count, e.g. ``amd-epyc-2c``."""
    slug = re.sub(r"[^a-z0-9]+", "-", (cpu or cpu_model()).lower()).strip("-")
    slug = re.sub(r"-?(\(r\)|\(tm\)|-r-|-tm-|cpu|processor)-?", "-", slug).strip("-")
    slug = re.sub(r"-+", "-", slug) or "cpu"
    return f"{slug}-{os.cpu_count()}c"


DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_device_name(name: str, what: str = "--device") -> str:
    """``name`` when it is a plain slug (letters, digits, ``.``, ``_``, ``-``; no path): it names files."""
    if not isinstance(name, str) or not DEVICE_NAME.fullmatch(name) or ".." in name:
        raise HwnasError(f"{what}: device name {name!r} must be a plain name of letters, digits, '.', '_' or "
                         "'-' (at most 64, no path), e.g. pixel2")
    return name


def describe_this_device(name: str | None = None) -> dict:
    """The description of this machine written beside its latency tables."""
    if name is not None:
        check_device_name(name)
    runtimes = {}
    for runtime, dist in (("tflite", "ai-edge-litert"), ("onnxruntime", "onnxruntime")):
        version = _version(dist)
        if version:
            runtimes[runtime] = version
    converters = {d: v for d in ("tensorflow", "torch", "onnx") if (v := _version(d))}
    cpuinfo = _cpuinfo()  # read once for the CPU string, the default name and the instruction set
    cpu, isa = cpu_model(cpuinfo), vector_isa(cpuinfo)
    return {
        "name": name or default_device_name(cpu),
        "cpu": cpu,
        "cores": os.cpu_count(),
        **({"vector_isa": isa} if isa else {}),
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "runtimes": runtimes,
        "converters": converters,
    }


def device_mismatch(stored: dict, current: dict, runtime: str | None) -> str | None:
    """Why the device description ``stored`` is not ``current`` (None when it is): CPU, cores or runtime version."""
    try:
        check_same_device(stored, current, runtime, "stored")
    except HwnasError as exc:
        return str(exc).split("mismatch: ", 1)[-1].split(";")[0]
    if "cpu" not in stored or "cores" not in stored:
        return "no cpu/cores recorded"
    return None


def check_same_device(stored: dict, current: dict, runtime: str, where: Path | str) -> None:
    """Refuse to add rows measured on another device (CPU, cores, vector instruction set where both record it, or
    runtime version differ)."""
    for field in ("cpu", "cores", "vector_isa"):
        if field == "vector_isa" and field not in current:
            continue  # this machine's could not be read; older descriptions have none either
        if field in stored and stored.get(field) != current.get(field):
            raise HwnasError(
                f"{where}: device description mismatch: stored {field} {stored.get(field)!r}, this machine "
                f"has {current.get(field)!r}; use another --device name or --out file"
            )
    old = stored.get("runtimes", {}).get(runtime)
    new = current.get("runtimes", {}).get(runtime)
    if old is not None and new is not None and old != new:
        raise HwnasError(
            f"{where}: device description mismatch: rows for {runtime} were measured with version {old}, "
            f"this machine has {new}; use another --device name or --out file"
        )
