"""TFLite export through the conversion worker subprocess (TensorFlow never loads in this process).

``export_tflite(ops, state_dict, path, quant="fp32", representative=None, int8_io=False) -> Path``
    Convert one network. ``ops`` is a chain's OpSpec list or a cell genotype
    (``hwnas.cells.Genotype``); ``state_dict`` is the PyTorch state dict of
    ``hwnas.builder.build_network(ops)`` or ``build_cell_network(genotype)``
    (tensors or numpy arrays) or None for Keras' own random initialization;
    ``quant`` is fp32 | dynamic | int8; ``representative`` a float32 NCHW array
    of calibration inputs for int8 (random normal samples when None);
    ``int8_io`` makes the int8 model take and return int8 tensors (used for
    per-operator profiling).

``TFLiteConverter`` (context manager) keeps one worker alive and converts many
jobs with one TensorFlow import (batch mode, used by the profiler)::

    with TFLiteConverter() as conv:
        path = conv.convert(ops, "out.tflite", quant="int8", int8_io=True)

Errors (a failing conversion, a crashed worker) raise :class:`HwnasError`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hwnas.errors import HwnasError
from hwnas.ops import OpSpec

if TYPE_CHECKING:
    from hwnas.cells.genotype import Genotype

QUANTS = ("fp32", "dynamic", "int8")


def _worker_env() -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _job(network, output: Path, quant: str, weights: str | None, representative: str | None,
         int8_io: bool) -> dict:
    """A worker job for ``network``: a chain's OpSpec list, or a cell genotype (``hwnas.cells.Genotype``)."""
    if quant not in QUANTS:
        raise HwnasError(f"unknown quantization {quant!r}; expected one of {', '.join(QUANTS)}")
    if isinstance(network, list):
        what = {"ops": [op.to_dict() for op in network]}
    else:
        from hwnas.cells.network import cell_plan

        what = {"cells": cell_plan(network)}
    return {**what, "output": str(output), "quant": quant, "weights": weights, "representative": representative,
            "int8_io": int8_io}


def _save_state(state_dict: dict, path: Path) -> str:
    from safetensors.numpy import save_file

    arrays = {}
    for name, value in state_dict.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        arrays[name] = np.ascontiguousarray(value)
    save_file(arrays, str(path))
    return str(path)


def _reply(reply: dict, output: Path) -> Path:
    if not reply.get("ok"):
        raise HwnasError(f"TFLite conversion of {output} failed: {reply.get('error')}")
    return Path(reply["output"])


class TFLiteConverter:
    """A long-lived conversion worker (one TensorFlow import for many conversions)."""

    def __init__(self, log_path: str | Path | None = None):
        self.log_path = Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"hwnas-tflite-{os.getpid()}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "TFLiteConverter":
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hwnas.export.tflite_worker", "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, env=_worker_env(),
        )
        self._read()  # the "ready" line, after TensorFlow has loaded
        return self

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise HwnasError(f"TFLite conversion worker exited (code {self.proc.returncode}): {' | '.join(tail)}")
        return json.loads(line)

    def convert(self, ops: list[OpSpec] | Genotype, output: str | Path, quant: str = "fp32", *,
                weights: str | None = None, representative: str | None = None, int8_io: bool = False) -> Path:
        """Convert ``ops`` to ``output``; ``weights`` / ``representative`` are file paths (see module doc)."""
        if self.proc is None:
            self.start()
        output = Path(output)
        self.proc.stdin.write(json.dumps(_job(ops, output, quant, weights, representative, int8_io)) + "\n")
        self.proc.stdin.flush()
        return _reply(self._read(), output)

    def convert_spec(self, spec: dict, output: str | Path) -> Path:
        """Convert a kernel (``{"kernel": ...}``) or Keras application (``{"app": ...}``) job to fp32 ``output``."""
        if self.proc is None:
            self.start()
        output = Path(output)
        self.proc.stdin.write(json.dumps({**spec, "output": str(output), "quant": "fp32"}) + "\n")
        self.proc.stdin.flush()
        return _reply(self._read(), output)

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # every reply is in; TensorFlow's teardown can be slow
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self._log.close()

    def __enter__(self) -> "TFLiteConverter":
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and exc[0] is not None:
            self.proc.kill()
        self.close()


def export_tflite(ops: list[OpSpec] | Genotype, state_dict: dict | None, path: str | Path, quant: str = "fp32",
                  representative: np.ndarray | None = None, int8_io: bool = False) -> Path:
    """Convert one network (see the module docstring); returns the written path."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="hwnas-tflite-") as tmp:
        tmp = Path(tmp)
        weights = _save_state(state_dict, tmp / "weights.safetensors") if state_dict is not None else None
        rep = None
        if representative is not None:
            rep = str(tmp / "representative.npy")
            np.save(rep, np.asarray(representative, dtype=np.float32), allow_pickle=False)
        jobs = tmp / "jobs.json"
        jobs.write_text(json.dumps({"jobs": [_job(ops, path.resolve(), quant, weights, rep, int8_io)]}))
        proc = subprocess.run([sys.executable, "-m", "hwnas.export.tflite_worker", str(jobs)],
                              capture_output=True, text=True, env=_worker_env())
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        if proc.returncode != 0 or not lines:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise HwnasError(f"TFLite conversion worker failed (code {proc.returncode}): {tail}")
        return _reply(json.loads(lines[-1]), path)
