"""Kernel predictors: one regressor per kernel type, fitted on profiled kernels; a model's latency from its kernels.

``fit_kernels(rows, device) -> KernelPredictor`` fits every kernel type of a
kernel CSV (:mod:`hwnas.kernels.profile`), choosing per type by 5-fold
cross-validated MAPE among

* ``linear``: ms ~ a + b.work (multiply-adds, elements read and written), non-negative b;
* ``gbr-log``: gradient-boosted trees on log features, log target;
* ``linear+gbr``: the linear model times a boosted correction of log(measured / linear).

Types with fewer than 10 rows keep ``linear``. Each kernel was timed alone, so
each paid one model invoke (``overhead_ms``, the ``empty`` kernel's time): a
model is ``overhead_ms + sum(max(0, kernel - overhead_ms))``.

Saved as JSON (types, methods, CV scores, sampled feature ranges) plus a skops
file named in it with its SHA-256, loaded with the trusted types of
:mod:`hwnas.predictors.regressor` only.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hwnas.errors import HwnasError
from hwnas.jsonfile import read_json
from hwnas.kernels.detect import detect, node_flops
from hwnas.kernels.sample import feature_names, features, kernel_type

FORMAT = "hwnas-kernel-predictor"
WORK = ("macs", "in_elems", "out_elems")
MIN_ROWS_FOR_TREES = 10
RANGE_SLACK = 0.05  # a feature this far (relative) beyond the sampled range is reported


def _matrix(specs: list[dict], names: tuple[str, ...]) -> np.ndarray:
    return np.array([[float(features(s).get(n, 0.0)) for n in names] for s in specs])


def _work(specs: list[dict], names) -> np.ndarray:
    cols = [n for n in WORK if n in names]
    return _matrix(specs, tuple(cols))


class TypeModel:
    """The fitted model of one kernel type."""

    def __init__(self, method: str, names: tuple[str, ...], linear=None, trees=None):
        self.method, self.names, self.linear, self.trees = method, names, linear, trees

    def predict(self, specs: list[dict]) -> np.ndarray:
        base = None
        if self.linear is not None:
            base = np.maximum(self.linear.predict(_work(specs, self.names)), 1e-4)
        if self.method == "linear":
            return base
        logs = self.trees.predict(np.log1p(_matrix(specs, self.names)))
        return np.exp(logs) if self.method == "gbr-log" else base * np.exp(np.clip(logs, -2, 2))


def _fit(method: str, specs: list[dict], ms: np.ndarray, names) -> TypeModel:
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression

    linear = trees = None
    if method in ("linear", "linear+gbr"):
        linear = LinearRegression(positive=True).fit(_work(specs, names), ms)
    if method != "linear":
        X = np.log1p(_matrix(specs, names))
        target = np.log(ms) if method == "gbr-log" else np.log(ms / np.maximum(linear.predict(_work(specs, names)),
                                                                              1e-4))
        trees = GradientBoostingRegressor(n_estimators=200, max_depth=3, learning_rate=0.05, subsample=0.8,
                                          random_state=0).fit(X, target)
    return TypeModel(method, names, linear, trees)


def _cv_mape(method: str, specs: list[dict], ms: np.ndarray, names) -> float:
    rng = np.random.default_rng(0)
    folds = rng.permutation(len(specs)) % 5
    err = np.empty(len(specs))
    for f in range(5):
        test = folds == f
        model = _fit(method, [s for s, t in zip(specs, test) if not t], ms[~test], names)
        err[test] = np.abs(model.predict([s for s, t in zip(specs, test) if t]) / ms[test] - 1)
    return float(err.mean() * 100)


@dataclass
class PricedKernel:
    nodes: str
    type: str
    spec: dict
    ms: float
    predictor: str
    out_of_range: list[str] = field(default_factory=list)


@dataclass
class KernelPrediction:
    total_ms: float
    overhead_ms: float
    kernels: list[PricedKernel]
    unpriced: list[dict]
    unpriced_flops_share: float

    @property
    def out_of_range(self) -> list[PricedKernel]:
        return [k for k in self.kernels if k.out_of_range]

    def to_dict(self) -> dict:
        return asdict(self)


class KernelPredictor:
    def __init__(self, device: dict, runtime: str, dtype: str, threads: int, overhead_ms: float,
                 models: dict[str, TypeModel], info: dict, rows: list[dict] | None = None, path: Path | None = None):
        self.device, self.runtime, self.dtype, self.threads = device, runtime, dtype, threads
        self.overhead_ms, self.models, self.info, self.rows, self.path = overhead_ms, models, info, rows or [], path

    def price(self, spec: dict) -> tuple[float, str, list[str]]:
        """(ms this kernel adds to a model, predictor name, features outside the sampled range)."""
        ktype = kernel_type(spec)
        if ktype not in self.models:
            raise KeyError(ktype)
        model = self.models[ktype]
        ms = float(model.predict([spec])[0])
        f = features(spec)
        outside = []
        for name, (lo, hi) in self.info[ktype]["ranges"].items():
            v = float(f.get(name, 0.0))
            if v < lo * (1 - RANGE_SLACK) or v > hi * (1 + RANGE_SLACK):
                outside.append(f"{name}={v:g} outside {lo:g}..{hi:g}")
        return max(0.0, ms - self.overhead_ms), f"{ktype}:{model.method}", outside

    def predict_graph(self, graph) -> KernelPrediction:
        found = detect(graph)
        priced, unpriced = [], []
        for k in found.kernels:
            try:
                ms, name, outside = self.price(k.spec)
                priced.append(PricedKernel(k.span, kernel_type(k.spec), k.spec, ms, name, outside))
            except KeyError:
                unpriced.append({"node": k.nodes[0].index, "op": k.nodes[0].op, "name": k.nodes[0].name,
                                 "reason": f"no {kernel_type(k.spec)} kernel predictor in this file",
                                 "flops": sum(node_flops(n) for n in k.nodes)})
        total = found.total_flops or 1.0
        for u in found.unpriced:
            unpriced.append({"node": u.node.index, "op": u.node.op, "name": u.node.name, "reason": u.reason,
                             "flops": u.flops})
        for u in unpriced:
            u["flops_share"] = u["flops"] / total
        share = sum(u["flops"] for u in unpriced) / total
        return KernelPrediction(self.overhead_ms + sum(k.ms for k in priced), self.overhead_ms, priced, unpriced,
                                share)

    def save(self, path: str | Path) -> None:
        import skops.io as sio

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        model_path = path.with_suffix(".skops")
        sio.dump({t: {"linear": m.linear, "trees": m.trees} for t, m in self.models.items()}, model_path)
        data = {"format": FORMAT, "device": self.device, "runtime": self.runtime, "dtype": self.dtype,
                "threads": self.threads, "overhead_ms": self.overhead_ms, "types": self.info,
                "rows": [{"spec": r["spec"], "ms": r["ms"]} for r in self.rows],
                "model_file": model_path.name, "sha256": hashlib.sha256(model_path.read_bytes()).hexdigest()}
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "KernelPredictor":
        import skops.io as sio

        from hwnas.predictors.regressor import _checked_blob

        path = Path(path)
        data = read_json(path, "kernel predictor")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise HwnasError(f"{path}: not an hwnas kernel predictor (field 'format' is not {FORMAT!r})")
        model_file = data.get("model_file")
        if not isinstance(model_file, str) or "/" in model_file or "\\" in model_file:
            raise HwnasError(f"{path}: field 'model_file' must name a file beside it")
        blob, untrusted = _checked_blob(path.parent / model_file, str(data.get("sha256")), path)
        stored = sio.loads(blob, trusted=untrusted)
        models = {t: TypeModel(info["method"], tuple(info["features"]), stored[t]["linear"], stored[t]["trees"])
                  for t, info in data["types"].items()}
        return cls(data["device"], data["runtime"], data["dtype"], int(data["threads"]), float(data["overhead_ms"]),
                   models, data["types"], data.get("rows"), path)


def fit_kernels(rows: list[dict], device: dict, log=print) -> KernelPredictor:
    """One model per kernel type of ``rows`` (see the module docstring)."""
    empty = [r["ms"] for r in rows if r["type"] == "empty"]
    if not empty:
        raise HwnasError("the kernel table has no 'empty' kernel (a model's invoke cost); profile again")
    overhead = float(np.median(empty))
    by_type: dict[str, list[dict]] = {}
    for r in rows:
        if r["type"] != "empty":
            by_type.setdefault(kernel_type(r["spec"]), []).append(r)
    models, info = {}, {}
    for ktype, rs in sorted(by_type.items()):
        specs, ms = [r["spec"] for r in rs], np.array([r["ms"] for r in rs])
        names = feature_names(ktype)
        methods = ["linear"] + (["gbr-log", "linear+gbr"] if len(rs) >= MIN_ROWS_FOR_TREES else [])
        cv = {m: _cv_mape(m, specs, ms, names) for m in methods}
        best = min(cv, key=cv.get)
        models[ktype] = _fit(best, specs, ms, names)
        X = _matrix(specs, names)
        info[ktype] = {"method": best, "features": list(names), "rows": len(rs),
                       "cv_mape": {m: round(v, 2) for m, v in cv.items()},
                       "ranges": {n: [float(X[:, j].min()), float(X[:, j].max())] for j, n in enumerate(names)}}
        log(f"{ktype:10s} {len(rs):4d} rows  " + "  ".join(f"{m} {v:5.1f}%" for m, v in cv.items()) + f"  -> {best}")
    return KernelPredictor(device, "tflite", "fp32", 1, overhead, models, info, rows)


def main(argv=None) -> int:
    """``python -m hwnas.kernels.predictor KERNELS.csv OUT.json``: fit and save."""
    import sys

    from hwnas.kernels.profile import read_rows
    from hwnas.latency_data import describe_this_device

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m hwnas.kernels.predictor KERNELS.csv OUT.json", file=sys.stderr)
        return 2
    try:
        predictor = fit_kernels(read_rows(args[0]), describe_this_device())
    except HwnasError as exc:
        print(f"hwnas: error: {exc}", file=sys.stderr)
        return 2
    predictor.save(args[1])
    print(f"-> {args[1]} (overhead {predictor.overhead_ms:.4f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
