"""Interleaved profiling: operators and whole models timed together, in rounds.

On a shared machine the speed of a core drifts with what runs beside it (even
in CPU time: shared caches, memory bandwidth, clock). Operators timed in one
hour and whole models timed in the next then disagree for reasons no predictor
can learn, so the models a predictor is calibrated on must be timed in the same
conditions as its operators. Here every file is exported once, then all of them
are timed in ``rounds`` rounds, each round in a fresh random order.

:func:`profile_interleaved` does this for a space: its operators (one dtype) and
``n_models`` whole models (:func:`hwnas.profiler.calibration_archs`, saved as
architecture JSON under ``models_dir``). :func:`retime` does it for given
operators and models (``tools/remeasure_interleaved.py`` re-times a table's rows).

Resuming. Exported files live in a cache folder (one per device, runtime and
thread count, checked against ``runner.json`` there) and are reused. Each
timing is appended to ``rounds.jsonl`` there as soon as it is taken; a rerun
reuses the rounds in the log (a last line cut short by a kill is ignored) and
times only what is missing. ``rounds`` below what the log holds uses only the
first ``rounds`` rounds. A new session (new timings of the same files) starts
with ``new_session=True``, which moves the old log aside (``rounds.<n>.jsonl``).

Rows. Each timing is first divided by the machine's relative speed at its
moment, estimated from the timings of other files taken just before and after
it (:func:`drift_factors`: the files of a round come in random order, so a
slow moment shows in all of them). A file's latency is then the median of its
corrected round timings, the spread their interquartile range, ``repeats`` the
number of rounds. Rows are written only
when every round is done, by :func:`store_rows`: a measurement (operator or
model, runtime, dtype, threads) not yet in the table is appended (one fsynced
line each); one already there with the same values is left alone (so a rerun
writes nothing); one there with other values (an older one-pass profile, or an
earlier session) is replaced where it stands, by rewriting the table once
through a temporary file (``os.replace``: a kill leaves the old or the new
table, never a mix). The round log keeps every timing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hwnas.arch import Architecture
from hwnas.errors import HwnasError
from hwnas.jsonfile import read_json
from hwnas.latency_data import ModelRow, OpRow, append_model_row, append_op_row, read_model_rows, read_op_rows
from hwnas.ops import OpSpec
from hwnas.profiler import Exporter, arch_file_name, calibration_archs, prepare_output, profiled_ops
from hwnas.progress import progress_bar
from hwnas.runners import Runner
from hwnas.runners.base import STATISTICS, summarize  # noqa: F401  (summarize: also this module's interface)
from hwnas.spaces import SearchSpace


@dataclass(frozen=True)
class Job:
    """One file to export and time: its operators, dtype, and whether it is a single operator."""

    name: str
    ops: tuple[OpSpec, ...]
    dtype: str
    per_op: bool


@dataclass
class InterleavedResult:
    op_rows: list[OpRow]
    model_rows: list[ModelRow]
    rounds: int
    written: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # path -> (added, replaced, same)
    rel_spread: list[float] = field(default_factory=list)  # IQR / median across rounds, per file


def job_name(kind: str, identity: str, dtype: str) -> str:
    """A cache name from what a file measures (kind, dtype and a digest of its identity)."""
    return f"{kind}-{dtype}-" + hashlib.sha1(identity.encode()).hexdigest()[:16]


def op_job(op: OpSpec, dtype: str) -> Job:
    return Job(job_name("op", op.key(), dtype), (op,), dtype, True)


def model_job(arch: Architecture, dtype: str) -> Job:
    return Job(job_name("model", arch_file_name(arch), dtype), tuple(arch.ops()), dtype, False)


def cache_folder(root: str | Path, device: dict, runner: Runner) -> Path:
    """The cache of one device, runtime and thread count; refuses one made for other runner settings."""
    folder = Path(root) / device["name"] / f"{runner.name}-t{runner.threads}"
    stamp = {"device": device["name"], "cpu": device.get("cpu"), "cores": device.get("cores"),
             "runtime_version": device.get("runtimes", {}).get(runner.name), "runner": runner.describe()}
    path = folder / "runner.json"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if path.exists():
            stored = read_json(path, "interleaved-timing cache description")
            if stored != stamp:
                changed = sorted(k for k in stamp if stored.get(k) != stamp[k]) if isinstance(stored, dict) else []
                raise HwnasError(f"{path}: the cached timings were taken with other settings "
                                 f"({', '.join(changed) or 'unreadable'} differ); use another --cache folder "
                                 "or delete this one")
        else:
            path.write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise HwnasError(f"{folder}: cannot use the cache folder ({exc.strerror or exc})") from None
    return folder


def start_new_session(cache: Path) -> Path | None:
    """Move the round log aside (``rounds.<n>.jsonl``) so that everything is timed again; returns where."""
    return set_aside(cache / "rounds.jsonl")


def set_aside(log: Path) -> Path | None:
    """Rename the round log ``log`` (``<stem>.<n>.jsonl``, the first free n) so that its files are timed again
    from scratch; returns the new name (None: there was no log)."""
    if not log.exists():
        return None
    n = 1
    while (kept := log.with_suffix(f".{n}.jsonl")).exists():
        n += 1
    os.replace(log, kept)
    return kept


def export_jobs(jobs: list[Job], runner: Runner, cache: Path, converter=None, progress: bool = True,
                log: Callable[[str], None] = print) -> dict[str, Path]:
    """Each job exported once into ``cache`` (files already there are reused); name -> file."""
    files = {job.name: cache / f"{job.name}{runner.suffix}" for job in jobs}
    todo = [job for job in jobs if not files[job.name].exists()]
    if not todo:
        return files
    n_models = sum(not job.per_op for job in todo)
    log(f"export: {len(todo) - n_models} operators and {n_models} whole models to {runner.suffix} "
        f"({len(jobs) - len(todo)} already in {cache})")
    exporters: dict[tuple[str, bool], Exporter] = {}
    try:
        bar = progress_bar(todo, desc=f"export {runner.name}", unit="file", enabled=progress)
        for job in bar:
            key = (job.dtype, job.per_op)
            if key not in exporters:
                exporters[key] = Exporter(runner, job.dtype, cache, per_op=job.per_op, converter=converter)
            os.replace(exporters[key].export(list(job.ops), f"tmp-{job.name}"), files[job.name])
    finally:
        for exporter in exporters.values():
            exporter.close()
    return files


@dataclass(frozen=True)
class Timing:
    """One file timed in one round (a line of the round log)."""

    name: str
    round: int
    median_ms: float
    iters: int
    fastest_ms: float | None = None  # the fastest of the runner's repeats (None in logs written before it)

    def fastest(self) -> float:
        """The fastest repeat of this round (its median in logs written before repeats were kept)."""
        return self.median_ms if self.fastest_ms is None else self.fastest_ms


def read_round_log(path: Path, names, rounds: int) -> list[Timing]:
    """The log's timings of ``names`` in its first ``rounds`` rounds, in the order they were taken (a line cut
    short by a kill, other names and a repeated (name, round) are ignored)."""
    wanted, seen, timings = set(names), set(), []
    if not path.exists():
        return timings
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            fastest = rec.get("fastest_ms")
            t = Timing(rec["name"], int(rec["round"]), float(rec["median_ms"]), int(rec.get("iters", 1)),
                       None if fastest is None else float(fastest))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if t.name in wanted and 0 <= t.round < rounds and (t.name, t.round) not in seen:
            seen.add((t.name, t.round))
            timings.append(t)
    return timings


def time_rounds(files: dict[str, Path], runner: Runner, rounds: int, log_path: Path, seed: int = 0,
                progress: bool = True) -> list[Timing]:
    """Every file timed once in each of the first ``rounds`` rounds, each round in a fresh random order; the
    timings in the order they were taken (those already in the log reused, see the module docstring)."""
    timings = read_round_log(log_path, files, rounds)
    done = {(t.name, t.round) for t in timings}
    missing = rounds * len(files) - len(done)
    if missing:
        text = log_path.read_text() if log_path.exists() else ""
        bar = progress_bar(total=rounds * len(files), initial=len(done), unit="timing", desc=f"time {runner.name}",
                           enabled=progress, smoothing=0.05)
        with open(log_path, "a") as out:
            if text and not text.endswith("\n"):
                out.write("\n")  # end the torn line so the next record stands on its own
            for r in range(rounds):
                order = sorted(name for name in files if (name, r) not in done)
                random.Random(seed * 1000 + r).shuffle(order)
                bar.set_description(f"time {runner.name} round {r + 1}/{rounds}")
                for name in order:
                    result = runner.time(files[name])
                    t = Timing(name, r, result.median_ms, result.iters, result.fastest_ms)
                    timings.append(t)
                    out.write(json.dumps({"round": r, "name": name, "median_ms": t.median_ms,
                                          "iters": t.iters, "fastest_ms": t.fastest_ms}) + "\n")
                    out.flush()
                    bar.update()
        bar.close()
    return timings


def times_now(files: dict[str, Path], runner: Runner, rounds: int, seed: int = 0, core: int | None = None,
              progress: bool = True) -> dict[str, list[float]]:
    """Per file, its ms in each round (:func:`time_rounds` with a throw-away log, pinned to ``core``, default
    :func:`hwnas.runners.pinning.default_core`): absolute times, no drift correction, for when the machine's speed
    now is what is measured. A round's ms is the fastest of the runner's repeats in it;
    :func:`hwnas.runners.latency_now` makes one latency of them."""
    import tempfile

    from hwnas.runners.pinning import default_core, pinned

    per_file: dict[str, list[float]] = {name: [] for name in files}
    with tempfile.TemporaryDirectory(prefix="hwnas-times-") as tmp, pinned(default_core() if core is None else core):
        for t in time_rounds(files, runner, rounds, Path(tmp) / "rounds.jsonl", seed, progress):
            per_file[t.name].append(t.fastest())
    return per_file


def time_architectures(archs: list[Architecture], runner: Runner, dtype: str = "fp32", rounds: int = 3, seed: int = 0,
                       core: int | None = None, progress: bool = True, what: str = "time") -> list[list[float]]:
    """Export every architecture whole (random weights) for ``runner`` and time them all now (:func:`times_now`);
    per architecture, its ms in each round."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hwnas-archs-") as tmp:
        exporter = Exporter(runner, dtype, Path(tmp), per_op=False)
        try:
            files = {f"m{i}": exporter.export(a.ops(), f"m{i}") for i, a in
                     enumerate(progress_bar(archs, desc=f"{what}: export", unit="model", enabled=progress))}
        finally:
            exporter.close()
        return list(times_now(files, runner, rounds, seed, core, progress).values())


DRIFT_WINDOW = 5  # timings on each side that estimate the machine's speed at a moment


def drift_factors(timings: list[Timing], window: int = DRIFT_WINDOW) -> list[float]:
    """The machine's relative speed when each timing was taken: the median, over the ``window`` timings
    before and after it (itself included), of timing / that file's median timing.

    The files of a round come in random order, so the timings around one are of
    other files; together they show how much slower than usual everything ran
    at that moment (a shared machine's speed drifts by several percent within
    seconds). Estimated twice, the second time from file medians already corrected.
    """
    factors = [1.0] * len(timings)
    for _ in range(2):
        by_name: dict[str, list[float]] = {}
        for t, f in zip(timings, factors):
            by_name.setdefault(t.name, []).append(t.median_ms / f)
        medians = {name: statistics.median(v) for name, v in by_name.items()}
        rel = [t.median_ms / medians[t.name] if medians[t.name] > 0 else 1.0 for t in timings]
        factors = [statistics.median(rel[max(0, i - window):i + window + 1]) for i in range(len(timings))]
    return factors


def file_latencies(timings: list[Timing], drift_window: int = DRIFT_WINDOW) -> dict[str, tuple[float, float, int]]:
    """Per file: (median over rounds, IQR over rounds, iterations), each timing divided by the machine's speed
    at its moment (:func:`drift_factors`; ``drift_window`` 0: as timed)."""
    factors = drift_factors(timings, drift_window) if drift_window > 0 else [1.0] * len(timings)
    values: dict[str, list[float]] = {}
    iters: dict[str, list[int]] = {}
    for t, f in zip(timings, factors):
        values.setdefault(t.name, []).append(t.median_ms / f)
        iters.setdefault(t.name, []).append(t.iters)
    return {name: (*summarize(v), max(1, int(statistics.median(iters[name])))) for name, v in values.items()}


def latencies_by(timings: list[Timing], statistic: str = "median") -> dict[str, float]:
    """Per file, one latency from its rounds: ``median`` (drift-corrected median, :func:`file_latencies`) or
    ``fastest`` (the fastest repeat of any round, :func:`hwnas.runners.latency_now`)."""
    from hwnas.runners import latency_now

    if statistic == "median":
        return {name: v[0] for name, v in file_latencies(timings).items()}
    if statistic != "fastest":
        raise HwnasError(f"unknown timing statistic {statistic!r}; one of {', '.join(STATISTICS)}")
    per_file: dict[str, list[float]] = {}
    for t in timings:
        per_file.setdefault(t.name, []).append(t.fastest())
    return {name: latency_now(v) for name, v in per_file.items()}


def repeatability(timings: list[Timing], names, statistic: str = "median", tolerance: float = 0.10) -> dict:
    """How well the measurement agrees with itself: the rounds split in two halves (even and odd rounds), each
    file's latency taken from each half alone (:func:`latencies_by`); the share of ``names`` whose two halves
    are within ``tolerance`` of each other, and the median |half A / half B - 1|. No predictor can be shown to
    agree with the measurement much better than the measurement agrees with itself."""
    halves = [latencies_by([t for t in timings if t.round % 2 == k], statistic) for k in (0, 1)]
    gaps = [abs(halves[0][n] / halves[1][n] - 1) for n in names if n in halves[0] and n in halves[1]]
    if not gaps:
        raise HwnasError("repeatability needs at least two rounds of every file")
    return {"files": len(gaps), "within": sum(g <= tolerance for g in gaps) / len(gaps), "tolerance": tolerance,
            "median_gap": statistics.median(gaps)}


def retime(ops: list[tuple[OpSpec, str]], models: list[tuple[Architecture, str, str]], runner: Runner,
           rounds: int, cache: Path, seed: int = 0, converter=None, progress: bool = True,
           log: Callable[[str], None] = print, drift_window: int = DRIFT_WINDOW) -> InterleavedResult:
    """Time operators ``(op, dtype)`` and whole models ``(arch, arch_file, dtype)`` together in ``rounds`` rounds.

    ``cache`` is a folder from :func:`cache_folder`. Returns one row per operator and model (nothing written).
    """
    if rounds < 1:
        raise HwnasError(f"--rounds must be at least 1, got {rounds}")
    op_jobs = [op_job(op, dtype) for op, dtype in ops]
    model_jobs = [model_job(arch, dtype) for arch, _, dtype in models]
    jobs = list({job.name: job for job in op_jobs + model_jobs}.values())
    files = export_jobs(jobs, runner, cache, converter, progress, log)
    log(f"time: {len(files)} files x {rounds} rounds, each round in a new random order "
        f"(log {cache / 'rounds.jsonl'})")
    latency = file_latencies(time_rounds(files, runner, rounds, cache / "rounds.jsonl", seed, progress),
                             drift_window)
    op_rows, model_rows = [], []
    for (op, dtype), job in zip(ops, op_jobs):
        median, iqr, iters = latency[job.name]
        op_rows.append(OpRow(op, runner.name, dtype, runner.threads, median, iqr, rounds, iters))
    for (arch, arch_file, dtype), job in zip(models, model_jobs):
        median, iqr, _ = latency[job.name]
        model_rows.append(ModelRow(arch_file, arch.space_name, tuple(arch.choices), runner.name, dtype,
                                   runner.threads, median, iqr, rounds))
    rel = [iqr / median for median, iqr, _ in latency.values() if median > 0]
    return InterleavedResult(op_rows, model_rows, rounds, rel_spread=rel)


def store_rows(path: Path, rows: list, kind: str) -> tuple[int, int, int]:
    """Write re-timed rows into a table (see the module docstring); returns (added, replaced, unchanged)."""
    read, append = (read_op_rows, append_op_row) if kind == "op" else (read_model_rows, append_model_row)
    path = Path(path)
    existing = read(path) if path.exists() and path.stat().st_size else []
    where = {row.key: i for i, row in enumerate(existing)}
    new = {row.key: row for row in rows}
    replaced = {where[k]: row for k, row in new.items()
                if k in where and existing[where[k]].to_record() != row.to_record()}  # as written: 6 digits
    added = [row for k, row in new.items() if k not in where]
    if replaced:
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        for i, row in enumerate(existing):
            append(tmp, replaced.get(i, row))
        os.replace(tmp, path)
    for row in added:
        append(path, row)
    return len(added), len(replaced), len(new) - len(added) - len(replaced)


def profile_interleaved(space: SearchSpace, runner: Runner, device: dict, dtype: str, n_models: int, rounds: int,
                        ops_csv: str | Path, models_csv: str | Path, models_dir: str | Path, cache_root: str | Path,
                        seed: int = 0, limit: int | None = None, new_session: bool = False, converter=None,
                        progress: bool = True, log: Callable[[str], None] = print) -> InterleavedResult:
    """Profile a space's operators (first ``limit``) and ``n_models`` whole models in interleaved rounds
    (see the module docstring); rows go to ``ops_csv`` and ``models_csv`` (latency_data format)."""
    if rounds < 1:
        raise HwnasError(f"--rounds must be at least 1, got {rounds}")
    if n_models < 0:
        raise HwnasError(f"--models must be 0 or more, got {n_models}")
    Exporter.check(runner, dtype)
    ops_csv, models_csv, models_dir = Path(ops_csv), Path(models_csv), Path(models_dir)
    prepare_output(ops_csv, device, runner.name, read_op_rows)  # writable, readable, same device: before any work
    if n_models:
        prepare_output(models_csv, device, runner.name, read_model_rows)
    cache = cache_folder(cache_root, device, runner)
    if new_session and (kept := start_new_session(cache)):
        log(f"time: a new session; the previous round log is kept as {kept}")
    ops = profiled_ops(space)[:limit]
    archs = calibration_archs(space, n_models, seed) if n_models else []
    models = []
    for arch in archs:
        path = models_dir / arch_file_name(arch)
        if not path.exists():
            arch.save(path)
        models.append((arch, os.path.relpath(path), dtype))
    result = retime([(op, dtype) for op in ops], models, runner, rounds, cache, seed, converter, progress, log)
    result.written[str(ops_csv)] = store_rows(ops_csv, result.op_rows, "op")
    if models:
        result.written[str(models_csv)] = store_rows(models_csv, result.model_rows, "model")
    return result
