"""A predictor whose milliseconds are scaled by a level: the session level (:mod:`hwnas.search.session_level`)
measured on this machine now, applied to every prediction of a table measured earlier."""

from __future__ import annotations

from hwnas.predictors import LatencyPredictor


class LeveledPredictor(LatencyPredictor):
    """``predictor``'s milliseconds times ``level`` (everything else is the wrapped predictor's)."""

    def __init__(self, predictor: LatencyPredictor, level: float):
        self.base, self.level = predictor, float(level)
        self.device, self.space = predictor.device, predictor.space
        self.overhead_ms = self.level * float(getattr(predictor, "overhead_ms", 0.0))

    def predict_op(self, op) -> float:
        return self.level * float(self.base.predict_op(op))

    def predict_many(self, ops) -> list[float]:
        many = getattr(self.base, "predict_many", None)
        values = many(ops) if many else [self.base.predict_op(op) for op in ops]
        return [self.level * float(v) for v in values]

    def predict_ops(self, ops) -> float:
        return self.level * float(self.base.predict_ops(ops))

    def __getattr__(self, name):  # fallback_name, runtime, dtype, ... of the wrapped predictor
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)
