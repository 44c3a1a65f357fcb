"""Judge latency predictors on whole models measured end to end and never used in fitting.

Metrics per predictor: RMSE (ms), MAPE (%), and the share of models predicted
within +-5% and +-10% of the measured latency. :func:`scatter_plot` draws
predicted against measured latency.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwnas.costs import total_cost
from hwnas.errors import HwnasError
from hwnas.latency_data import ModelRow
from hwnas.predictors import LatencyPredictor


@dataclass
class Metrics:
    n: int
    rmse_ms: float
    mape: float
    within5: float
    within10: float

    def row(self) -> str:
        return (f"{self.n:4d} {self.rmse_ms:9.4f} {self.mape:7.2f} {self.within5:8.1f} {self.within10:8.1f}")


def metrics(measured, predicted) -> Metrics:
    """RMSE (ms), MAPE (%) and shares (%) within +-5% / +-10% of measured."""
    measured, predicted = np.asarray(measured, float), np.asarray(predicted, float)
    if len(measured) == 0:
        raise HwnasError("no whole models to evaluate on")
    rel = np.abs(predicted - measured) / measured
    return Metrics(len(measured), float(np.sqrt(np.mean((predicted - measured) ** 2))), float(100 * rel.mean()),
                   float(100 * np.mean(rel <= 0.05)), float(100 * np.mean(rel <= 0.10)))


def fitted_on(predictor: LatencyPredictor) -> set[str]:
    """The whole-model files a predictor's overhead was fitted on."""
    return set((getattr(predictor, "overhead", None) or {}).get("models", []))


def unseen_rows(rows: list[ModelRow], *predictors: LatencyPredictor) -> list[ModelRow]:
    """Rows none of the predictors was fitted on."""
    used = set().union(*(fitted_on(p) for p in predictors))
    return [r for r in rows if r.arch_file not in used]


@dataclass
class FlopsLinear:
    """Whole-model baseline: ms = a * total FLOPs + b, fitted on whole models."""

    a: float
    b: float

    @classmethod
    def fit(cls, model_ops: list[list], measured: list[float]) -> "FlopsLinear":
        flops = np.array([total_cost(ops).flops for ops in model_ops], float)
        if len(flops) < 2:
            raise HwnasError("the whole-model FLOPs baseline needs at least 2 models to fit on")
        a, b = np.polyfit(flops, np.asarray(measured, float), 1)
        return cls(float(a), float(b))

    def predict_ops(self, ops) -> float:
        return self.a * total_cost(ops).flops + self.b


def evaluate(predictors: dict[str, object], model_ops: list[list], measured: list[float]
             ) -> dict[str, tuple[Metrics, np.ndarray]]:
    """Metrics and predictions of each predictor (anything with ``predict_ops``) on the given models."""
    out = {}
    for name, predictor in predictors.items():
        predicted = np.array([predictor.predict_ops(ops) for ops in model_ops])
        out[name] = (metrics(measured, predicted), predicted)
    return out


def scatter_plot(results: dict[str, tuple[Metrics, np.ndarray]], measured, path: Path, title: str) -> Path:
    """Predicted vs measured, one panel per predictor, with the +-10% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = np.asarray(measured, float)
    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False)
    lo, hi = measured.min() * 0.85, measured.max() * 1.15
    for ax, (name, (m, predicted)) in zip(axes[0], results.items()):
        line = np.linspace(lo, hi, 10)
        ax.fill_between(line, line * 0.9, line * 1.1, color="0.9", label="+-10%")
        ax.plot(line, line, color="0.5", lw=0.8)
        ax.scatter(measured, predicted, s=10, alpha=0.8)
        ax.set_xlim(lo, hi)
        ax.set_ylim(min(lo, predicted.min() * 0.95), max(hi, predicted.max() * 1.05))
        ax.set_xlabel("measured ms")
        ax.set_ylabel("predicted ms")
        ax.set_title(f"{name}\nMAPE {m.mape:.1f}%, {m.within10:.0f}% within +-10%", fontsize=9)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
