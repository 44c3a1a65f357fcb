"""A latency budget: a positive finite number of milliseconds, and not below the fastest child of the space.

The one budget check of the gradient searches, the main job, the predictors' helpers and the benchmarks.
"""

from __future__ import annotations

import math

from hwnas.errors import HwnasError


def check_budget_value(value: float | None, what: str = "--budget-ms") -> None:
    """A budget must be a positive finite number (None: no budget)."""
    if value is not None and not (isinstance(value, (int, float)) and 0 < value < math.inf):
        raise HwnasError(f"{what} must be a positive finite number, got {value}")


def check_budget(budget_ms: float | None, fastest_ms: float, source: str, what: str = "the space",
                 unit: str = "architecture") -> None:
    """Refuse a budget below the fastest child (``fastest_ms``, predicted from ``source``; None: no budget)."""
    if budget_ms is None:
        return
    check_budget_value(budget_ms)
    if budget_ms < fastest_ms:
        raise HwnasError(f"budget {budget_ms:g} ms is below the fastest {unit} of {what}: "
                         f"minimum achievable latency is {fastest_ms:.4f} ms (latency from {source})")
