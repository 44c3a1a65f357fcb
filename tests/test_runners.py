"""Runners and the timing method (real ONNX Runtime and LiteRT; no timed assertions)."""

import itertools

import numpy as np
import pytest

from hwnas.errors import HwnasError
from hwnas.export import export_onnx
from hwnas.ops import OpSpec
from hwnas.runners import TimingPolicy, get_runner, measure, runner_for_file
from hwnas.runners import base

FAST = TimingPolicy(warmup_ms=1, repeats=3, repeat_ms=1, min_iters=3, max_iters=5, retries=0)


def test_measure_reports_median_and_iqr_of_repeat_medians():
    calls = itertools.count()
    timing = measure(lambda: next(calls), TimingPolicy(warmup_ms=1, repeats=4, repeat_ms=1, min_iters=7,
                                                       max_iters=7, retries=0))
    assert timing.repeats == 4 and timing.iters == 7 and len(timing.samples) == 4
    q1, q2, q3 = np.percentile(timing.samples, [25, 50, 75])
    assert timing.median_ms == pytest.approx(q2) and timing.spread_ms == pytest.approx(q3 - q1)
    assert next(calls) >= 5 + 4 * 7  # warm-up calls, then every timed call


def test_measure_repeats_when_spread_is_high_and_keeps_the_steadiest(monkeypatch):
    results = iter([base.Timing(1.0, 0.5, 3, 5, [0.5, 1.0, 1.5]), base.Timing(1.0, 0.05, 3, 5, [0.95, 1.0, 1.05]),
                    base.Timing(1.0, 0.3, 3, 5, [0.7, 1.0, 1.3])])
    calls = []
    monkeypatch.setattr(base, "_once", lambda fn, policy, clock="wall": calls.append(1) or next(results))
    timing = measure(lambda: None, TimingPolicy(max_rel_spread=0.1, retries=2))
    assert timing.spread_ms == 0.05 and len(calls) == 2  # stopped once the spread was low enough
    results = iter([base.Timing(1.0, 0.5, 3, 5, []), base.Timing(1.0, 0.4, 3, 5, []), base.Timing(1.0, 0.45, 3, 5, [])])
    calls.clear()
    assert measure(lambda: None, TimingPolicy(max_rel_spread=0.1, retries=2)).spread_ms == 0.4
    assert len(calls) == 3


def test_onnxruntime_runner_times_an_exported_op(tmp_path):
    op = OpSpec("mbconv", 8, 16, 8, 8, kernel=5, stride=2, expand=3)
    path = export_onnx([op], None, tmp_path / "op.onnx")
    runner = get_runner("onnxruntime", threads=1, policy=FAST)
    timing = runner.time(path)
    assert timing.median_ms > 0 and timing.spread_ms >= 0 and 3 <= timing.iters <= 5
    assert runner_for_file(path).name == "onnxruntime"


def test_measure_file_times_rounds_and_keeps_the_fastest(tmp_path, monkeypatch):
    from hwnas.runners import pinning

    op = OpSpec("mbconv", 8, 16, 8, 8, kernel=5, stride=2, expand=3)
    path = export_onnx([op], None, tmp_path / "op.onnx")
    got = pinning.measure_file(path, "onnxruntime", rounds=3)  # real ONNX Runtime
    assert len(got.rounds_ms) == 3 and got.latency_ms == min(got.rounds_ms) <= got.median_ms
    # each round is the fastest repeat of one runner timing; the rounds' median and IQR ride along
    timings = iter([base.Timing(0.45, 0.01, 3, 5, [0.45, 0.44, 0.46]), base.Timing(0.40, 0.1, 3, 5, [0.5, 0.31, 0.4]),
                    base.Timing(0.34, 0.0, 3, 5, [0.34, 0.34, 0.34])])
    monkeypatch.setattr(type(get_runner("onnxruntime")), "time", lambda self, p: next(timings))
    got = pinning.measure_file(path, "onnxruntime", rounds=3)
    assert got.rounds_ms == [0.44, 0.31, 0.34] and got.latency_ms == 0.31 and got.median_ms == 0.34
    with pytest.raises(ValueError, match="at least 1"):
        pinning.measure_file(path, "onnxruntime", rounds=0)


def test_runner_errors(tmp_path):
    with pytest.raises(HwnasError, match="unknown runtime"):
        get_runner("coreml")
    with pytest.raises(HwnasError, match="expected a .tflite or .onnx"):
        runner_for_file(tmp_path / "model.pt")
    with pytest.raises(HwnasError, match="no such model file"):
        get_runner("tflite").time(tmp_path / "missing.tflite")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(HwnasError, match="ONNX Runtime cannot load"):
        get_runner("onnxruntime").time(garbage)
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a model at all, just some bytes")
    with pytest.raises(HwnasError, match="LiteRT cannot load"):
        get_runner("tflite").time(garbage)


def test_cpu_clock_leaves_out_time_spent_waiting():
    import time

    policy = TimingPolicy(warmup_ms=0, repeats=2, repeat_ms=1, min_iters=3, max_iters=3, retries=0)
    wall = measure(lambda: time.sleep(0.002), policy, "wall")
    cpu = measure(lambda: time.sleep(0.002), policy, "cpu")
    assert wall.median_ms >= 2.0 and cpu.median_ms < wall.median_ms / 2
    assert TimingPolicy().clock_for(1) == "cpu" and TimingPolicy().clock_for(4) == "wall"
    assert TimingPolicy(clock="wall").clock_for(1) == "wall"
    assert get_runner("onnxruntime").describe()["clock"] == "auto"
