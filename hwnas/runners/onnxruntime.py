"""ONNX Runtime runner on this machine: CPU execution provider, full graph optimization."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hwnas.errors import HwnasError
from hwnas.runners.base import Runner

_DTYPES = {"tensor(float)": np.float32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
           "tensor(int64)": np.int64}


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"
    suffix = ".onnx"

    def session(self, model_path: Path):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            return ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise HwnasError(f"{model_path}: ONNX Runtime cannot load the model ({str(exc).splitlines()[0]})") from None

    def load(self, model_path: Path):
        if not Path(model_path).is_file():
            raise HwnasError(f"{model_path}: no such model file")
        sess = self.session(model_path)
        rng = np.random.default_rng(0)
        feed = {}
        for inp in sess.get_inputs():
            shape = [d if isinstance(d, int) else 1 for d in inp.shape]
            feed[inp.name] = rng.standard_normal(shape).astype(_DTYPES.get(inp.type, np.float32))
        return lambda: sess.run(None, feed)
