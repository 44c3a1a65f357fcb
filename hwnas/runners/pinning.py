"""Timing on one CPU core: :class:`pinned` (like ``taskset -c CORE``), the core to use, and one file timed pinned."""

from __future__ import annotations

import os
from pathlib import Path

from hwnas.runners import get_runner, runner_for_file


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


def measure_file(path: Path, runtime: str | None = None, threads: int = 1, core: int | None = None):
    """Median latency of one model file on this machine (``hwnas.runners``), pinned to ``core``."""
    runner = get_runner(runtime, threads) if runtime else runner_for_file(path, threads)
    with pinned(core):
        return runner.time(path)
