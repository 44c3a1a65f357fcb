"""Runners: time a model file on a runtime behind one interface.

``Runner.time(model_path) -> Timing(median_ms, spread_ms, repeats, iters, samples)``

* ``tflite``       ai_edge_litert Interpreter on this machine (XNNPACK on by default)
* ``onnxruntime``  ONNX Runtime CPU execution provider on this machine
* ``adb-tflite``   TFLite's benchmark_model on an Android phone over adb (:mod:`hwnas.runners.adb`)

``get_runner(name, threads=1, **options)`` builds one by name.
"""

from __future__ import annotations

from hwnas.errors import HwnasError
from hwnas.runners.base import Runner, Timing, TimingPolicy, latency_now, measure  # noqa: F401  (the package's interface)

RUNNER_NAMES = ("tflite", "onnxruntime", "adb-tflite")


def get_runner(name: str, threads: int = 1, policy: TimingPolicy | None = None, **options) -> Runner:
    """The runner called ``name``; ``options`` go to its constructor (xnnpack, adb settings ...)."""
    if name == "tflite":
        from hwnas.runners.tflite import TFLiteRunner

        return TFLiteRunner(threads=threads, policy=policy, **options)
    if name == "onnxruntime":
        from hwnas.runners.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(threads=threads, policy=policy, **options)
    if name == "adb-tflite":
        from hwnas.runners.adb import AdbRunner

        return AdbRunner(threads=threads, **options)
    raise HwnasError(f"unknown runtime {name!r}; expected one of {', '.join(RUNNER_NAMES)}")


def runner_for_file(path, threads: int = 1, **options) -> Runner:
    """The local runner that runs ``path`` by its suffix (.tflite or .onnx)."""
    suffix = str(path).rsplit(".", 1)[-1].lower()
    if suffix == "tflite":
        return get_runner("tflite", threads, **options)
    if suffix == "onnx":
        return get_runner("onnxruntime", threads, **options)
    raise HwnasError(f"{path}: expected a .tflite or .onnx model file")


__all__ = ["Runner", "Timing", "TimingPolicy", "measure", "get_runner", "runner_for_file", "RUNNER_NAMES"]
