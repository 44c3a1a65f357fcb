"""Latency as tensors, for a supernet's differentiable latency term.

With ``p_i`` the path probabilities at position ``i`` (in ``position.names``
order)::

    expected_latency = fixed_latency(space, predictor) + sum_i dot(p_i, t_i)
    t = latency_tensors(space, predictor)

``fixed_latency`` covers the stem, the head and the predictor's constant
overhead; ``zero`` candidates cost 0.
"""

from __future__ import annotations

import torch

from hwnas.budget import check_budget as one_check
from hwnas.errors import HwnasError
from hwnas.predictors import LatencyPredictor
from hwnas.spaces import SearchSpace


def _check(space: SearchSpace, predictor: LatencyPredictor) -> None:
    fitted_for = getattr(predictor, "space", None)
    if fitted_for is not None and fitted_for != space.name:
        raise HwnasError(f"predictor was fitted for space {fitted_for!r}, not {space.name!r}")


def _predict(predictor: LatencyPredictor, ops) -> list[float]:
    many = getattr(predictor, "predict_many", None)
    real = [op for op in ops if op.kind != "zero"]
    values = dict(zip(real, many(real) if many else [predictor.predict_op(op) for op in real]))
    return [0.0 if op.kind == "zero" else float(values[op]) for op in ops]


def latency_tensors(space: SearchSpace, predictor: LatencyPredictor,
                    dtype: torch.dtype = torch.float32, device=None) -> list[torch.Tensor]:
    """One 1-D tensor per position: ms of each candidate in ``position.names`` order (zero -> 0)."""
    _check(space, predictor)
    return [torch.tensor(_predict(predictor, pos.ops), dtype=dtype, device=device) for pos in space.positions]


def fixed_latency(space: SearchSpace, predictor: LatencyPredictor) -> float:
    """ms of what every architecture has: stem, head and the constant overhead."""
    _check(space, predictor)
    return float(predictor.overhead_ms + sum(_predict(predictor, list(space.stem) + list(space.head))))


def expected_latency(probs: list[torch.Tensor], tensors: list[torch.Tensor], fixed: float) -> torch.Tensor:
    """``fixed + sum_i dot(p_i, t_i)``, differentiable in ``probs``."""
    if len(probs) != len(tensors):
        raise ValueError(f"{len(probs)} probability vectors for {len(tensors)} positions")
    return fixed + sum((p * t).sum() for p, t in zip(probs, tensors))


def min_latency(space: SearchSpace, predictor: LatencyPredictor) -> float:
    """The fastest architecture's predicted ms (fastest candidate at every position)."""
    return fixed_latency(space, predictor) + sum(float(t.min()) for t in latency_tensors(space, predictor))


def max_latency(space: SearchSpace, predictor: LatencyPredictor) -> float:
    """The slowest architecture's predicted ms."""
    return fixed_latency(space, predictor) + sum(float(t.max()) for t in latency_tensors(space, predictor))


def check_budget(space: SearchSpace, predictor: LatencyPredictor, budget_ms: float) -> None:
    """Refuse a latency budget that no architecture of the space can meet (:func:`hwnas.budget.check_budget`)."""
    one_check(budget_ms, min_latency(space, predictor), "the predictor", what=space.name)
