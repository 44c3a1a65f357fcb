"""Scoring an architecture: accuracy (one-shot or proxy training) plus its latency.

Accuracy evaluators implement ``evaluate(arch) -> float`` (validation accuracy
in [0, 1]):

* :class:`OneShotEvaluator` -- ENAS-style parameter sharing: the trained
  supernet running one child (its stage widths and one candidate per position;
  :mod:`hwnas.strategies.supernet_bridge`); its BatchNorm statistics are
  re-estimated for that child on a few fixed training batches (the shared
  running statistics belong to the mixture of children, not to this one), then
  the validation split is classified. The supernet's own buffers are restored
  after.
* :class:`ProxyEvaluator` -- the "proxy task": train the standalone network for
  a few epochs / steps on a data subset (optionally a narrower copy, via
  ``width_mult``) and return its validation accuracy.

:class:`CostModel` gives each architecture's latency from a latency predictor
(a measured one, or the search's analytic roofline proxy when none is given)
and its analytic multiply-adds (MFLOPs); the budget limits one of the two. The
cheapest architecture of the space (the feasibility check before any
evaluation) comes from the search's cost tables, over every stage width.

:class:`Objective` combines the two into the score the strategies maximise.
Over the budget B an architecture is either penalised MnasNet-style (Tan et
al., 2019, soft constraint)::

    score = acc * (cost / B) ** w    with w = -0.07 when cost > B, else score = acc

(at 2x the budget the score drops by 1 - 2**-0.07 = 4.7%), or, with
``over_budget="reject"``, not trained/evaluated at all and given score 0.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader

from hwnas.arch import Architecture, architecture_of
from hwnas.data import Splits
from hwnas.errors import HwnasError
from hwnas.spaces import get_space

MNAS_WEIGHT = -0.07
OVER_BUDGET = ("penalty", "reject")


class AccuracyEvaluator(Protocol):
    def evaluate(self, arch: Architecture) -> float: ...


def mnas_reward(accuracy: float, cost: float, budget: float | None, weight: float = MNAS_WEIGHT) -> float:
    """MnasNet's soft-constraint reward: ``acc * (cost / budget) ** weight`` above the budget, ``acc`` below."""
    if budget is None or cost <= budget:
        return accuracy
    return accuracy * (cost / budget) ** weight


# -- accuracy -----------------------------------------------------------------------
class OneShotEvaluator:
    """Validation accuracy of one child of a trained supernet, BN recalibrated per architecture.

    ``select(supernet, arch)`` makes the supernet run ``arch`` (its stage widths and candidates) and returns the
    module to run (the supernet itself or a view of the chosen path).
    """

    def __init__(self, supernet: nn.Module, splits: Splits,
                 select: Callable[[nn.Module, Architecture], nn.Module | None],
                 calib_batches: int = 4, batch_size: int = 64, seed: int = 0):
        self.supernet, self.splits, self.select = supernet, splits, select
        loader = DataLoader(splits.train, batch_size=batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        self.batches = []
        for x, _ in loader:
            self.batches.append(x)
            if len(self.batches) >= calib_batches:
                break

    def evaluate(self, arch: Architecture) -> float:
        from hwnas.supernet.recalibrate import recalibrate_bn
        from hwnas.train import evaluate

        model = self.select(self.supernet, arch) or self.supernet
        saved = {k: v.clone() for k, v in self.supernet.state_dict().items() if "running_" in k or "num_batches" in k}
        try:
            recalibrate_bn(model, self.batches, max_batches=len(self.batches))
            acc, _ = evaluate(model, self.splits.val)
        finally:
            self.supernet.load_state_dict(saved, strict=False)
        return acc


class ProxyEvaluator:
    """Validation accuracy after a short training of the standalone network (the proxy task)."""

    def __init__(self, splits: Splits, epochs: int = 1, max_steps: int | None = 40, lr: float = 0.1,
                 batch_size: int = 32, width_mult: float | None = None, seed: int = 0):
        self.splits, self.epochs, self.max_steps = splits, epochs, max_steps
        self.lr, self.batch_size, self.width_mult, self.seed = lr, batch_size, width_mult, seed

    def proxy_arch(self, arch: Architecture) -> Architecture:
        """``arch`` itself, or the same choices in a copy of the space with channels scaled by ``width_mult``."""
        if self.width_mult is None or self.width_mult == 1:
            return arch
        params = dict(arch.space_params)
        params["width_mult"] = arch.space.params["width_mult"] * self.width_mult
        return architecture_of(get_space(arch.space_name, params), arch.choices)

    def evaluate(self, arch: Architecture) -> float:
        from hwnas.train import train_model

        result = train_model(self.proxy_arch(arch), self.splits, epochs=self.epochs, max_steps=self.max_steps,
                             lr=self.lr, batch_size=self.batch_size, seed=self.seed, progress=False)
        return float(result.val_acc)


# -- cost and score ------------------------------------------------------------------
class CostModel:
    """Latency (ms) from a predictor and multiply-adds (MFLOPs); ``unit`` says which one the budget limits.

    Without a predictor only MFLOPs are known and the unit must be ``MFLOPs``.
    """

    def __init__(self, predictor=None, unit: str | None = None):
        self.predictor = predictor
        self.unit = unit or ("ms" if predictor is not None else "MFLOPs")
        if self.unit not in ("ms", "MFLOPs"):
            raise HwnasError(f"cost unit must be 'ms' or 'MFLOPs', got {self.unit!r}")
        if self.unit == "ms" and predictor is None:
            raise HwnasError("a latency budget (ms) needs a latency predictor")

    def measure(self, arch: Architecture) -> dict:
        from hwnas.costs import total_cost

        ops = arch.ops()
        row = {"mflops": round(total_cost(ops).flops / 1e6, 4), "latency_ms": None}
        if self.predictor is not None:
            row["latency_ms"] = round(float(self.predictor.predict_ops(ops)), 5)
        return row

    def cost(self, measured: dict) -> float:
        return measured["latency_ms"] if self.unit == "ms" else measured["mflops"]

    def minimum(self, space) -> float:
        """The cheapest architecture of ``space`` in this unit, over every stage width and candidate."""
        from hwnas.children import analytic_table, latency_table

        if self.unit == "ms":
            return latency_table(space, self.predictor).min()
        return analytic_table(space, "flops").min() / 1e6


@dataclass
class Objective:
    """Score = accuracy, penalised (MnasNet) or rejected above the budget."""

    evaluator: AccuracyEvaluator
    cost_model: CostModel
    budget: float | None = None
    weight: float = MNAS_WEIGHT
    over_budget: str = "penalty"

    def __post_init__(self) -> None:
        if self.over_budget not in OVER_BUDGET:
            raise HwnasError(f"over-budget handling must be one of {', '.join(OVER_BUDGET)}, got {self.over_budget!r}")
        if self.budget is not None and not 0 < self.budget < math.inf:
            raise HwnasError(f"the budget must be a positive finite number, got {self.budget!r}")

    def check_feasible(self, space) -> None:
        """Refuse, before any evaluation, a budget that no architecture of ``space`` can meet."""
        if self.budget is None:
            return
        low = self.cost_model.minimum(space)
        if self.budget < low:
            unit = self.cost_model.unit
            raise HwnasError(f"budget {self.budget:g} {unit} is below the cheapest architecture of {space.name}: "
                             f"minimum achievable is {low:.4f} {unit}")

    def __call__(self, arch: Architecture) -> dict:
        """One log record (without index): stage widths, choices, score, accuracy, latency, MFLOPs, feasibility,
        seconds."""
        t0 = time.time()
        measured = self.cost_model.measure(arch)
        cost = self.cost_model.cost(measured)
        feasible = self.budget is None or cost <= self.budget
        accuracy = None
        if feasible or self.over_budget == "penalty":
            accuracy = float(self.evaluator.evaluate(arch))
            if not math.isfinite(accuracy):
                accuracy = 0.0
            score = mnas_reward(accuracy, cost, self.budget, self.weight)
        else:
            score = 0.0
        return {"stage_widths": list(arch.space.stage_widths), "choices": list(arch.choices), "score": score,
                "accuracy": accuracy, **measured, "feasible": feasible, "rejected": accuracy is None,
                "seconds": round(time.time() - t0, 3)}
