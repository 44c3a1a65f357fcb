"""The runner interface and the timing method shared by the local runners.

Method (:func:`measure`): warm up for ``warmup_ms`` (at least 5 calls), pick
the iterations per repeat so a repeat lasts about ``repeat_ms`` (within
``min_iters``..``max_iters``), time every call of every repeat, take each
repeat's median; report the median of the repeat medians and their
interquartile range as the spread. When spread / median exceeds
``max_rel_spread`` the whole measurement is repeated (up to ``retries`` more
times) and the one with the smallest relative spread is kept.

Clock: ``wall`` (``perf_counter_ns``) or ``cpu``, the CPU time of the calling
thread (``thread_time_ns``). With one inference thread, LiteRT/XNNPACK and ONNX
Runtime compute in the calling thread, so ``cpu`` is the inference time without
the time the thread waited for a core; on a shared machine (here: 2 cores,
load 8-10) wall time of a 3.5 ms model read 15.8 ms. ``auto`` (default) picks
``cpu`` for 1 thread and ``wall`` otherwise.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Timing:
    median_ms: float
    spread_ms: float
    repeats: int
    iters: int
    samples: list[float] = field(default_factory=list)  # per-repeat medians, ms

    @property
    def rel_spread(self) -> float:
        return self.spread_ms / self.median_ms if self.median_ms > 0 else 0.0

    @property
    def fastest_ms(self) -> float:
        """The fastest repeat's median (the median when the runner kept no repeats, e.g. benchmark_model)."""
        return min(self.samples) if self.samples else self.median_ms


@dataclass(frozen=True)
class TimingPolicy:
    warmup_ms: float = 50.0
    repeats: int = 5
    repeat_ms: float = 40.0
    min_iters: int = 10
    max_iters: int = 500
    max_rel_spread: float = 0.1
    retries: int = 2
    clock: str = "auto"  # auto | wall | cpu

    def clock_for(self, threads: int) -> str:
        if self.clock not in ("auto", "wall", "cpu"):
            raise ValueError(f"unknown clock {self.clock!r}")
        if self.clock == "auto":
            return "cpu" if threads == 1 else "wall"
        return self.clock


def _once(fn: Callable[[], object], policy: TimingPolicy, clock_name: str = "wall") -> Timing:
    clock = time.thread_time_ns if clock_name == "cpu" else time.perf_counter_ns
    start, calls = clock(), 0
    while calls < 5 or (clock() - start) < policy.warmup_ms * 1e6:
        fn()
        calls += 1
    per_call_ms = (clock() - start) / 1e6 / calls
    iters = int(min(policy.max_iters, max(policy.min_iters, round(policy.repeat_ms / max(per_call_ms, 1e-6)))))
    medians = []
    for _ in range(policy.repeats):
        times = np.empty(iters)
        for i in range(iters):
            t0 = clock()
            fn()
            times[i] = clock() - t0
        medians.append(float(np.median(times)) / 1e6)
    q1, q2, q3 = np.percentile(medians, [25, 50, 75])
    return Timing(float(q2), float(q3 - q1), policy.repeats, iters, medians)


def summarize(values: list[float]) -> tuple[float, float]:
    """(median, interquartile range) of per-round values."""
    if len(values) < 2:
        return values[0], 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), max(0.0, q[2] - q[0])  # interpolation can leave -1e-17 for equal values


STATISTICS = ("median", "fastest")  # how a file's ms is taken from its rounds (hwnas.timing_rounds.latencies_by)


def latency_now(rounds_ms: list[float]) -> float:
    """One file's latency from rounds timed now (e.g.
    :func:`hwnas.timing_rounds.times_now`): the fastest round.

    On a shared VM the speed of a core jumps between a few levels for
    tenths of a second at a time (measured on a 2-core AMD EPYC VM, one
    0.3 ms model in 100-call blocks over 60 s: 0.305, 0.339, 0.424 and
    0.453 ms, 52% of the blocks within 3% of the fastest), so the median of
    three rounds lands on a slow level about as often as not, while the
    fastest level (presumably the core to itself) came back within 1% in
    each timing. Every time taken "now" (machine recognition, session level,
    adaptation children, the measured child) uses this statistic, so that
    they agree with each other.
    """
    if not rounds_ms:
        raise ValueError("no rounds to take a latency from")
    return min(rounds_ms)


def measure(fn: Callable[[], object], policy: TimingPolicy | None = None, clock: str = "wall") -> Timing:
    """Time ``fn`` with the ``wall`` or ``cpu`` (calling thread) clock (see the module docstring)."""
    policy = policy or TimingPolicy()
    best = _once(fn, policy, clock)
    for _ in range(policy.retries):
        if best.rel_spread <= policy.max_rel_spread:
            break
        again = _once(fn, policy, clock)
        if again.rel_spread < best.rel_spread:
            best = again
    return best


class Runner:
    """Times model files on one runtime."""

    name = "runner"
    suffix = ""

    def __init__(self, threads: int = 1, policy: TimingPolicy | None = None):
        self.threads = threads
        self.policy = policy or TimingPolicy()

    def load(self, model_path: Path) -> Callable[[], object]:
        """Prepare the model with random input and return a function running one inference."""
        raise NotImplementedError

    def time(self, model_path: str | Path) -> Timing:
        return measure(self.load(Path(model_path)), self.policy, self.clock)

    @property
    def clock(self) -> str:
        return self.policy.clock_for(self.threads)

    def describe(self) -> dict:
        """Settings recorded with measurements."""
        return {"runtime": self.name, "threads": self.threads, "clock": self.policy.clock}
