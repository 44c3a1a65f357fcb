"""Per-candidate latency for the search: a predictor file or an analytic proxy.

With a predictor (``--predictor P``) the latencies come from
``hwnas.predictors.load_predictor(P, space=...)`` and
``hwnas.predictors.differentiable.latency_tensors(space, predictor)``; the stem,
head and the predictor's constant overhead form the fixed part.

Without one, :class:`AnalyticProxy` stands in: a roofline-style estimate from
the analytic costs of :mod:`hwnas.costs`,
``ms = flops / (GFLOPS x 1e6) + 4 x mac / (GBPS x 1e6)`` with 2 GFLOP/s of
multiply-adds and 4 GB/s of fp32 memory traffic (a mid-range phone core, one
thread). It ranks operators by compute and memory traffic only; it knows
nothing about a runtime's slow kernels (e.g. XNNPACK's 7x7 depthwise), so use a
measured predictor for real budgets.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch

from hwnas.costs import op_cost
from hwnas.errors import HwnasError
from hwnas.ops import OpSpec
from hwnas.predictors import LatencyPredictor
from hwnas.spaces import SearchSpace

PROXY_GFLOPS = 2.0
PROXY_GBPS = 4.0


class AnalyticProxy(LatencyPredictor):
    """Latency proxy from FLOPs and memory access (see the module docstring)."""

    def __init__(self, gflops: float = PROXY_GFLOPS, gbps: float = PROXY_GBPS):
        self.gflops, self.gbps = gflops, gbps
        self.device = {"name": f"analytic-proxy({gflops} GFLOP/s, {gbps} GB/s)"}
        self.space = None
        self.overhead_ms = 0.0

    def predict_op(self, op: OpSpec) -> float:
        cost = op_cost(op)
        return cost.flops / (self.gflops * 1e6) + 4.0 * cost.mac / (self.gbps * 1e6)


@dataclass
class LatencyModel:
    """Candidate latencies per position, the fixed part, and where they came from."""

    per_position: list[torch.Tensor]
    fixed_ms: float
    source: str

    @property
    def min_ms(self) -> float:
        """The fastest architecture of the space."""
        return self.fixed_ms + sum(float(t.min()) for t in self.per_position)

    @property
    def max_ms(self) -> float:
        return self.fixed_ms + sum(float(t.max()) for t in self.per_position)


def _tensors(space: SearchSpace, predictor: LatencyPredictor) -> list[torch.Tensor]:
    try:
        from hwnas.predictors.differentiable import latency_tensors
    except ImportError:  # the predictor package's helper has not landed: same definition here
        def latency_tensors(space, predictor):
            return [torch.tensor([0.0 if op.kind == "zero" else predictor.predict_op(op) for op in pos.ops])
                    for pos in space.positions]
    return [torch.as_tensor(t, dtype=torch.float32).detach().cpu().reshape(-1)
            for t in latency_tensors(space, predictor)]


def load_latency_predictor(space: SearchSpace, predictor_path: str | None, quiet: bool = False,
                           level: float = 1.0) -> tuple[LatencyPredictor, str]:
    """(predictor, where its numbers come from): the file's, or the analytic proxy when ``None``; with a
    ``level`` other than 1 every prediction is multiplied by it (:mod:`hwnas.search.session_level`).

    A table that lacks some of the space's operators prices them with its fallback regressor (a note
    says so unless ``quiet``)."""
    if level != 1.0:
        from hwnas.predictors.leveled import LeveledPredictor

        predictor, source = load_latency_predictor(space, predictor_path, quiet)
        return LeveledPredictor(predictor, level), f"{source} x {level:g} (session level)"
    if predictor_path:
        from hwnas.predictors import load_predictor

        predictor = load_predictor(predictor_path, space=space.name)
        if getattr(predictor, "fallback_name", None):
            ops = space.unique_ops()
            missing = predictor.fallback_for(ops)
            if missing and not quiet:
                print(f"note: {missing} of {len(ops)} operators of {space.name} are not in "
                      f"{predictor_path}; its fallback regressor {predictor.fallback_name} predicts them "
                      "(profile them for measured values)", file=sys.stderr)
        return predictor, str(predictor_path)
    predictor = AnalyticProxy()
    return predictor, predictor.device["name"]


def latency_model(space: SearchSpace, predictor_path: str | None, level: float = 1.0) -> LatencyModel:
    """Load ``predictor_path`` (or the analytic proxy when ``None``) for ``space``, times ``level``."""
    predictor, source = load_latency_predictor(space, predictor_path, level=level)
    try:
        from hwnas.predictors.differentiable import fixed_latency
    except ImportError:
        fixed = predictor.predict_ops(list(space.stem) + list(space.head))
    else:
        fixed = fixed_latency(space, predictor)
    return LatencyModel(_tensors(space, predictor), float(fixed), source)


def check_budget_value(value: float | None, what: str = "--budget-ms") -> None:
    """A budget must be a positive finite number (None: no budget)."""
    if value is not None and not (isinstance(value, (int, float)) and 0 < value < math.inf):
        raise HwnasError(f"{what} must be a positive finite number, got {value}")


def check_budget(budget_ms: float | None, model: LatencyModel) -> None:
    """Refuse a budget the fastest architecture of the space cannot meet."""
    if budget_ms is None:
        return
    check_budget_value(budget_ms)
    if budget_ms < model.min_ms:
        raise HwnasError(f"budget {budget_ms:g} ms is below the fastest architecture of the space: "
                         f"minimum achievable latency is {model.min_ms:.4f} ms (latency from {model.source})")
