"""Timing on one CPU core: :class:`pinned` (like ``taskset -c CORE``), the core to use, and one file timed pinned."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hwnas.runners import get_runner, latency_now, runner_for_file
from hwnas.runners.base import summarize


class pinned:
    """Pin this process to one CPU core while timing (like ``taskset -c CORE``), then restore."""

    def __init__(self, core: int | None):
        self.core = core

    def __enter__(self):
        self.old = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        if self.core is not None and self.old is not None and self.core in self.old:
            os.sched_setaffinity(0, {self.core})
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            os.sched_setaffinity(0, self.old)


def default_core() -> int | None:
    """The last core this process may use (core 1 on the 2-core machine), None when unknown."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return cores[-1] if cores else None


@dataclass(frozen=True)
class FileLatency:
    """One model file timed now: its latency (:func:`hwnas.runners.latency_now` of the rounds), the rounds'
    median and interquartile range, and every round (the fastest repeat of each), ms."""

    latency_ms: float
    median_ms: float
    spread_ms: float
    rounds_ms: list[float]


def measure_file(path: Path, runtime: str | None = None, threads: int = 1, core: int | None = None,
                 rounds: int = 5) -> FileLatency:
    """One model file timed ``rounds`` times on this machine (``hwnas.runners``), pinned to ``core``."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    runner = get_runner(runtime, threads) if runtime else runner_for_file(path, threads)
    with pinned(core):
        timings = [runner.time(path) for _ in range(rounds)]
    per_round = [t.fastest_ms for t in timings]
    return FileLatency(latency_now(per_round), *summarize(per_round), per_round)
