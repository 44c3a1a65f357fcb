"""LiteRT (TFLite) runner on this machine: ``ai_edge_litert.interpreter.Interpreter``.

XNNPACK is LiteRT's default CPU delegate (``OpResolverType.AUTO``); with
``xnnpack=False`` the interpreter uses ``BUILTIN_WITHOUT_DEFAULT_DELEGATES``,
i.e. the plain builtin kernels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hwnas.errors import HwnasError
from hwnas.runners.base import Runner, TimingPolicy


def random_input(detail: dict, rng: np.random.Generator) -> np.ndarray:
    shape, dtype = tuple(detail["shape"]), detail["dtype"]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -100), min(info.max, 100), shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


class TFLiteRunner(Runner):
    name = "tflite"
    suffix = ".tflite"

    def __init__(self, threads: int = 1, policy: TimingPolicy | None = None, xnnpack: bool = True):
        super().__init__(threads, policy)
        self.xnnpack = xnnpack

    def interpreter(self, model_path: Path):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if self.xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            interp = Interpreter(model_path=str(model_path), num_threads=self.threads,
                                 experimental_op_resolver_type=resolver)
            interp.allocate_tensors()
        except ValueError as exc:
            raise HwnasError(f"{model_path}: LiteRT cannot load the model ({exc})") from None
        return interp

    def load(self, model_path: Path):
        if not Path(model_path).is_file():
            raise HwnasError(f"{model_path}: no such model file")
        interp = self.interpreter(model_path)
        rng = np.random.default_rng(0)
        for detail in interp.get_input_details():
            interp.set_tensor(detail["index"], random_input(detail, rng))
        return interp.invoke

    def describe(self) -> dict:
        return {**super().describe(), "xnnpack": self.xnnpack}
