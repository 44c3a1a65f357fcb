"""TFLite conversion worker: the only hwnas code that imports TensorFlow, always in its own process.

Run by :mod:`hwnas.export.tflite`, never imported by the main process. Two modes::

    python -m hwnas.export.tflite_worker JOBS.json   # convert every job of {"jobs": [...]}
    python -m hwnas.export.tflite_worker --serve     # one JSON job per stdin line, one reply per line

A job::

    {"ops": [OpSpec dicts], "output": "x.tflite", "quant": "fp32" | "dynamic" | "int8",
     "weights": "state.safetensors" | null,      # PyTorch state dict of build_network(ops)
     "representative": "calib.npy" | null,       # float32 NCHW samples for int8 (random if null)
     "int8_io": false}                           # int8 input/output tensors (int8 only)

A cell network job has ``"cells": hwnas.cells.network.cell_plan(genotype)``
instead of ``"ops"`` (weights: the state dict of ``build_cell_network``); a
kernel job ``"kernel": spec`` and an application job ``"app": spec`` (random
weights; :mod:`hwnas.export.keras_kernels`).

Each reply is ``{"ok": true, "output": path}`` or ``{"ok": false, "error": message}``,
one JSON line on the real stdout (TensorFlow's own chatter is sent to stderr).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

QUANTS = ("fp32", "dynamic", "int8")


def convert(job: dict) -> str:
    """Build the Keras model of one job, convert it, write the .tflite file; returns its path."""
    import numpy as np
    import tensorflow as tf

    from hwnas.export.keras_builder import build_keras
    from hwnas.export.keras_cells import build_keras_cells
    from hwnas.ops import OpSpec

    quant = job.get("quant", "fp32")
    if quant not in QUANTS:
        raise ValueError(f"unknown quantization {quant!r}; expected one of {', '.join(QUANTS)}")
    weights = None
    if job.get("weights"):
        from safetensors.numpy import load_file

        weights = load_file(job["weights"])
    if "kernel" in job or "app" in job or "chain" in job:  # hwnas.kernels: a kernel, a Keras application, a chain
        from hwnas.export.keras_kernels import build_app, build_chain, build_kernel

        model = build_kernel(job["kernel"]) if "kernel" in job else \
            build_app(job["app"]) if "app" in job else build_chain(job["chain"])
    elif "cells" in job:
        model = build_keras_cells(job["cells"], weights)
    else:
        model = build_keras([OpSpec.from_dict(d) for d in job["ops"]], weights)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quant in ("dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quant == "int8":
        shape = tuple(model.input_shape[1:])
        if job.get("representative"):
            samples = np.load(job["representative"], allow_pickle=False).astype(np.float32)
            if samples.ndim == 4:
                samples = samples.transpose(0, 2, 3, 1)  # NCHW -> NHWC
            if tuple(samples.shape[1:]) != shape:
                raise ValueError(f"representative data has shape {samples.shape[1:]}, the model takes {shape}")
        else:
            samples = np.random.default_rng(0).standard_normal((8, *shape)).astype(np.float32)

        def representative():
            for sample in samples:
                yield [sample[None]]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if job.get("int8_io"):
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    data = converter.convert()
    out = Path(job["output"])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return str(out)


def _run(job: dict) -> dict:
    try:
        return {"ok": True, "output": convert(job)}
    except Exception as exc:  # reported to the parent, which raises HwnasError
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str]) -> int:
    # Keep the real stdout for replies; everything TensorFlow prints goes to stderr.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    if argv == ["--serve"]:
        import tensorflow  # noqa: F401  (slow import, done once before the first job)

        replies.write(json.dumps({"ok": True, "ready": True}) + "\n")
        replies.flush()
        for line in sys.stdin:
            if line.strip():
                replies.write(json.dumps(_run(json.loads(line))) + "\n")
                replies.flush()
        return 0
    if len(argv) != 1:
        print("usage: python -m hwnas.export.tflite_worker JOBS.json | --serve", file=sys.stderr)
        return 2
    jobs = json.loads(Path(argv[0]).read_text())["jobs"]
    for job in jobs:
        replies.write(json.dumps(_run(job)) + "\n")
        replies.flush()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main(sys.argv[1:]))
