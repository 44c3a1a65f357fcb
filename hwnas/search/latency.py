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

import sys
from dataclasses import dataclass

import torch

from hwnas.budget import check_budget, check_budget_value  # noqa: F401  (re-exported)
from hwnas.costs import op_cost
from hwnas.ops import OpSpec
from hwnas.predictors import LatencyPredictor
from hwnas.predictors.differentiable import fixed_latency, latency_tensors
from hwnas.predictors.leveled import LeveledPredictor
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
    return [torch.as_tensor(t, dtype=torch.float32).detach().cpu().reshape(-1)
            for t in latency_tensors(space, predictor)]


def load_latency_predictor(space: SearchSpace, predictor_path: str | None, quiet: bool = False,
                           level: float = 1.0) -> tuple[LatencyPredictor, str]:
    """(predictor, where its numbers come from): the file's, or the analytic proxy when ``None``; with a
    ``level`` other than 1 every prediction is multiplied by it (:func:`leveled`). Load it once, at the edge
    (the command or the job), and pass the object on.

    A table that lacks some of the space's operators prices them with its fallback regressor (a note
    says so unless ``quiet``)."""
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
        return leveled(predictor, str(predictor_path), level)
    predictor = AnalyticProxy()
    return leveled(predictor, predictor.device["name"], level)


def leveled(predictor: LatencyPredictor, source: str, level: float = 1.0) -> tuple[LatencyPredictor, str]:
    """``predictor`` with every prediction times ``level`` (:mod:`hwnas.search.session_level`), and its source."""
    if level == 1.0:
        return predictor, source
    return LeveledPredictor(predictor, level), f"{source} x {level:g} (session level)"


def latency_model(space: SearchSpace, predictor: LatencyPredictor, source: str) -> LatencyModel:
    """Per-candidate latencies of ``space`` from a loaded predictor (e.g. :func:`load_latency_predictor`)."""
    return LatencyModel(_tensors(space, predictor), float(fixed_latency(space, predictor)), source)
