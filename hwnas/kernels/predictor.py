"""Kernel predictors: one regressor per kernel type, fitted on profiled kernels; a model's latency from its kernels.

``fit_kernels(rows, device) -> KernelPredictor`` fits every kernel type of a
kernel CSV (:mod:`hwnas.kernels.profile`), choosing per type by 5-fold
cross-validated MAPE among

* ``linear``: ms ~ a + b.work (multiply-adds, elements read and written), non-negative b;
* ``gbr-log``: gradient-boosted trees on log features, log target;
* ``linear+gbr``: the linear model times a boosted correction of log(measured / linear);
* ``loglin+gbr``: a power law (log ms linear in the logs of the work terms) times a boosted correction.

The choice minimises the cross-validated WAPE (sum of absolute errors / sum of
latencies: what decides a model's sum; a kernel of 1-2 us is mostly the invoke
cost that is subtracted anyway). Types with fewer than 10 rows keep ``linear``. Each kernel was timed alone, so
each paid one model invoke (``overhead_ms``, the ``empty`` kernel's time): a
model is ``overhead_ms + sum(max(0, kernel - overhead_ms))``, plus the
in-network costs of :mod:`hwnas.kernels.calibrate` when the file has them.

Saved as one plain JSON file: per type the method, CV scores, sampled feature
ranges and the model as numbers (linear coefficients; each boosted tree as
arrays of split features, thresholds, children and leaf values), so loading
runs nothing from the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hwnas.errors import HwnasError
from hwnas.jsonfile import read_json
from hwnas.kernels.detect import detect, node_flops
from hwnas.kernels.sample import BLOCK, feature_names, features, kernel_type, taps_read_share

FORMAT = "hwnas-kernel-predictor"
# the linear base: counts of work that each cost time in proportion
WORK = ("macs", "in_elems", "out_elems", "broadcast_channels", "interp_elems")
MIN_ROWS_FOR_TREES = 10
RANGE_SLACK = 0.05  # a feature this far (relative) beyond the sampled range is reported
GROUPS = ("conv", "conv1x1", "dwconv", "other")  # kernel groups with one in-network factor each (calibration)
# kernel types that share another type's group: a fully connected layer at batch 1 is a 1x1 convolution on a
# 1x1 input (XNNPACK runs both as one matrix product), not one of the small element-wise kernels of "other"
GROUP_OF = {"gconv": "conv", "fc": "conv1x1"}
LEGACY_GROUP_OF = {"gconv": "conv"}  # calibrations fitted before 2026-12-07 (no "group_of" field): fc in "other"


def scale_group(ktype: str, group_of: dict | None = None) -> str:
    """The group whose alone-timed milliseconds share one in-network factor of the calibration (``group_of``: the
    calibration's own mapping, default :data:`GROUP_OF`)."""
    ktype = (GROUP_OF if group_of is None else group_of).get(ktype, ktype)
    return ktype if ktype in GROUPS else "other"


def _matrix(specs: list[dict], names: tuple[str, ...]) -> np.ndarray:
    return np.array([[float(features(s).get(n, 0.0)) for n in names] for s in specs])


def _work(specs: list[dict], names) -> np.ndarray:
    cols = [n for n in WORK if n in names]
    return _matrix(specs, tuple(cols))


def _linear_json(est) -> dict:
    return {"coef": [float(c) for c in np.ravel(est.coef_)], "intercept": float(est.intercept_)}


def _linear_predict(d: dict, X: np.ndarray) -> np.ndarray:
    return X @ np.array(d["coef"]) + d["intercept"]


def _trees_json(gbr) -> dict:
    """A fitted GradientBoostingRegressor (squared error) as plain arrays: nothing but numbers on load."""
    trees = []
    for est in gbr.estimators_[:, 0]:
        t = est.tree_
        trees.append({"feature": t.feature.tolist(), "threshold": [float(v) for v in t.threshold],
                      "left": t.children_left.tolist(), "right": t.children_right.tolist(),
                      "value": [float(v) for v in t.value[:, 0, 0]]})
    return {"init": float(gbr.init_.constant_[0, 0]), "rate": float(gbr.learning_rate), "trees": trees}


def _trees_predict(d: dict, X: np.ndarray) -> np.ndarray:
    out = np.full(len(X), d["init"])
    for t in d["trees"]:
        for i, x in enumerate(X):
            node = 0
            while t["left"][node] != -1:
                node = t["left"][node] if x[t["feature"][node]] <= t["threshold"][node] else t["right"][node]
            out[i] += d["rate"] * t["value"][node]
    return out


class TypeModel:
    """The fitted model of one kernel type, as plain numbers (``linear``: coefficients; ``trees``: arrays)."""

    def __init__(self, method: str, names: tuple[str, ...], linear: dict | None = None, trees: dict | None = None):
        self.method, self.names, self.linear, self.trees = method, tuple(names), linear, trees

    def predict(self, specs: list[dict]) -> np.ndarray:
        X = np.log1p(_matrix(specs, self.names))
        if self.method == "loglin+gbr":
            return np.exp(_linear_predict(self.linear, np.log1p(_work(specs, self.names))) +
                          _trees_predict(self.trees, X))
        if self.method == "gbr-log":
            return np.exp(_trees_predict(self.trees, X))
        base = np.maximum(_linear_predict(self.linear, _work(specs, self.names)), 1e-4)
        if self.method == "linear":
            return base
        return base * np.exp(np.clip(_trees_predict(self.trees, X), -2, 2))


def _gbr(X: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.ensemble import GradientBoostingRegressor

    return _trees_json(GradientBoostingRegressor(n_estimators=150, max_depth=3, learning_rate=0.07, subsample=0.8,
                                                 random_state=0).fit(X, y))


def _fit(method: str, specs: list[dict], ms: np.ndarray, names) -> TypeModel:
    from sklearn.linear_model import LinearRegression

    X, W = np.log1p(_matrix(specs, names)), _work(specs, names)
    if method == "loglin+gbr":
        linear = _linear_json(LinearRegression().fit(np.log1p(W), np.log(ms)))
        return TypeModel(method, names, linear, _gbr(X, np.log(ms) - _linear_predict(linear, np.log1p(W))))
    if method == "gbr-log":
        return TypeModel(method, names, None, _gbr(X, np.log(ms)))
    linear = _linear_json(LinearRegression(positive=True).fit(W, ms))
    if method == "linear":
        return TypeModel(method, names, linear)
    return TypeModel(method, names, linear, _gbr(X, np.log(ms / np.maximum(_linear_predict(linear, W), 1e-4))))


def _cv_wape(method: str, specs: list[dict], ms: np.ndarray, names, relative: bool = False) -> float:
    rng = np.random.default_rng(0)
    k = min(5, len(specs))
    folds = rng.permutation(len(specs)) % k
    err = np.empty(len(specs))
    for f in range(k):
        test = folds == f
        model = _fit(method, [s for s, t in zip(specs, test) if not t], ms[~test], names)
        err[test] = np.abs(model.predict([s for s, t in zip(specs, test) if t]) - ms[test])
    return float(np.mean(err / ms) * 100) if relative else float(err.sum() / ms.sum() * 100)


@dataclass
class PricedKernel:
    nodes: str
    type: str
    spec: dict
    ms: float  # alone (invoke cost subtracted) plus the calibration's in-network cost
    predictor: str
    out_of_range: list[str] = field(default_factory=list)
    in_elems: float = 0.0
    params: float = 0.0  # weights the runtime reads (ONNX Runtime: only the filter taps that meet the input)


@dataclass
class KernelPrediction:
    total_ms: float
    overhead_ms: float
    weights_ms: float  # the calibration's cost of streaming weights that do not fit in the caches
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
        self.calibration: dict | None = None  # hwnas.kernels.calibrate: in-network cost per kernel
        self.nchwc_block = BLOCK  # ONNX Runtime: the NCHWc block of the machine profiled (16 before it was recorded)

    def price(self, spec: dict) -> tuple[float, str, list[str]]:
        """(ms this kernel adds to a model, predictor name, features outside the sampled range)."""
        ktype = kernel_type(spec)
        if ktype == "fc" and spec.get("rows", 1) > 1:
            return self._price_rows(spec)
        if ktype == "matmul":  # a product of two activations: ``batch`` GEMMs, as a Linear over ``m`` rows each
            gemm = {"type": "fc", "cin": spec["k"], "cout": spec["n"], "rows": spec["m"]}
            ms, name, outside = self._price_rows(gemm)
            outside = outside + ["never sampled: priced as 1x1 convs"]
            return spec["batch"] * ms, name.replace("fc:", "matmul:", 1), outside
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
        if spec.get("dilation", 1) > 1:  # never sampled: priced as the undilated conv (measured close on both runtimes)
            outside.append(f"dilation={spec['dilation']} outside 1..1 (priced as the undilated conv)")
        ms = max(0.0, ms - self.overhead_ms)
        if self.calibration:
            c = self.calibration
            group = scale_group(ktype, c.get("group_of", LEGACY_GROUP_OF))
            ms += ms * c.get("scale", {}).get(group, 0.0) + c["per_kernel_ms"] + \
                c["ms_per_melem"] * f["in_elems"] / 1e6 + c.get("ms_per_mweight", 0.0) * f.get("params", 0.0) / 1e6
        return ms, f"{ktype}:{model.method}", outside

    def _price_rows(self, spec: dict) -> tuple[float, str, list[str]]:
        """A fully connected kernel over many rows (a Linear on every pixel or token) is the GEMM of a 1x1
        convolution: priced as the 1x1 conv over a square of about as many pixels, scaled to the exact count
        (ORT, 1 thread: a MatMul over 56 x 56 rows, 96 -> 384, ran 2.07 ms, this file's 1x1 conv 2.06 ms)."""
        rows = spec["rows"]
        h = max(1, round(math.sqrt(rows)))
        conv = {"type": "conv", "h": h, "cin": spec["cin"], "cout": spec["cout"], "k": 1, "s": 1, "groups": 1,
                "act": spec.get("act", "none")}
        ms, name, outside = self.price(conv)
        return ms * rows / (h * h), f"fc:as {name}", outside

    def predict_graph(self, graph) -> KernelPrediction:
        found, flops = (detect(graph), node_flops) if graph.format != "onnx" else \
            _onnx_kernels(graph, self.nchwc_block)
        priced, unpriced = [], []
        for k in found.kernels:
            try:
                ms, name, outside = self.price(k.spec)
                f = features(k.spec)
                read = taps_read_share(k.spec) if self.runtime == "onnxruntime" else 1.0  # XNNPACK reads every tap
                priced.append(PricedKernel(k.span, kernel_type(k.spec), k.spec, ms, name, outside,
                                           f["in_elems"], f.get("params", 0.0) * read))
            except KeyError:
                unpriced.append({"node": k.nodes[0].index, "op": k.nodes[0].op, "name": k.nodes[0].name,
                                 "reason": f"no {kernel_type(k.spec)} kernel predictor in this file",
                                 "flops": sum(flops(n) for n in k.nodes), "shape_known": True})
        total = found.total_flops or 1.0
        for u in found.unpriced:
            unpriced.append({"node": u.node.index, "op": u.node.op, "name": u.node.name, "reason": u.reason,
                             "flops": u.flops,  # 0 when the shapes are unknown: then its share is unknown too
                             "shape_known": u.node.in_shape is not None and u.node.out_shape is not None})
        for u in unpriced:
            u["flops_share"] = u["flops"] / total
        share = sum(u["flops"] for u in unpriced) / total
        weights_ms = 0.0
        if self.calibration:
            mparams = sum(k.params for k in priced) / 1e6
            weights_ms = self.calibration.get("ms_per_mparam", 0.0) * \
                max(0.0, mparams - self.calibration.get("resident_mparams", 0.0))
        return KernelPrediction(self.overhead_ms + weights_ms + sum(k.ms for k in priced), self.overhead_ms,
                                weights_ms, priced, unpriced, share)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        info = {t: {**self.info[t], "model": {"linear": m.linear, "trees": m.trees}} for t, m in self.models.items()}
        data = {"format": FORMAT, "device": self.device, "runtime": self.runtime, "dtype": self.dtype,
                "threads": self.threads, "overhead_ms": self.overhead_ms, "types": info,
                "rows": [{"spec": r["spec"], "ms": r["ms"]} for r in self.rows], "calibration": self.calibration}
        if self.runtime == "onnxruntime":
            data["nchwc_block"] = self.nchwc_block
        path.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> KernelPredictor:
        """A saved predictor (plain JSON: numbers only, nothing is run); HwnasError naming the file and field."""
        path = Path(path)
        data = read_json(path, "kernel predictor")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise HwnasError(f"{path}: not an hwnas kernel predictor (field 'format' is not {FORMAT!r})")
        try:
            models = {t: TypeModel(info["method"], info["features"], info["model"]["linear"], info["model"]["trees"])
                      for t, info in data["types"].items()}
            predictor = cls(data["device"], data["runtime"], data["dtype"], int(data["threads"]),
                            float(data["overhead_ms"]), models, data["types"], data.get("rows"), path)
            predictor.calibration = data.get("calibration")
            predictor.nchwc_block = int(data.get("nchwc_block", BLOCK))
            if predictor.nchwc_block not in (4, 8, 16, 32):
                raise HwnasError(f"{path}: field 'nchwc_block' must be 4, 8, 16 or 32 (ONNX Runtime's NCHWc channel "
                                 f"block), got {data['nchwc_block']!r}")
            if predictor.calibration is not None:
                float(predictor.calibration["per_kernel_ms"]), float(predictor.calibration["ms_per_melem"])
                group_of = predictor.calibration.get("group_of", {})
                if not isinstance(group_of, dict) or any(g not in GROUPS for g in group_of.values()):
                    raise HwnasError(f"{path}: field 'calibration.group_of' must map kernel types to one of "
                                     f"{', '.join(GROUPS)}, got {group_of!r}")
            return predictor
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise HwnasError(f"{path}: damaged kernel predictor ({type(exc).__name__}: {exc})") from None


def _onnx_kernels(graph, block: int):
    """ONNX Runtime's kernels of an ONNX graph (its fusion rules and layout changes, NCHWc ``block``) and its FLOPs
    counter."""
    from hwnas.kernels.onnx_detect import detect_onnx, onnx_node_flops

    return detect_onnx(graph, block), onnx_node_flops


def fit_kernels(rows: list[dict], device: dict, log=print, runtime: str = "tflite",
                relative: bool = False) -> KernelPredictor:
    """One model per kernel type of ``rows`` (see the module docstring); ``relative``: chosen by the sum of the
    cross-validated WAPE and MAPE (small kernels weigh as much as large ones: ONNX Runtime)."""
    blocks = {r.get("nchwc_block", BLOCK) for r in rows}  # ONNX Runtime tables record their machine's block
    if len(blocks) > 1:
        raise HwnasError(f"the kernel tables were profiled on CPUs with different ONNX Runtime NCHWc blocks "
                         f"({', '.join(map(str, sorted(blocks)))} channels): fit one machine's tables together")
    block = blocks.pop() if blocks else BLOCK
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
        names = feature_names(ktype, runtime)
        methods = ["linear"] + (["gbr-log", "linear+gbr", "loglin+gbr"] if len(rs) >= MIN_ROWS_FOR_TREES else [])
        cv = {m: _cv_wape(m, specs, ms, names) for m in methods}
        score = {m: cv[m] + _cv_wape(m, specs, ms, names, True) for m in methods} if relative else cv
        best = min(score, key=score.get)
        models[ktype] = _fit(best, specs, ms, names)
        X = _matrix(specs, names)
        info[ktype] = {"method": best, "features": list(names), "rows": len(rs),
                       "cv_wape": {m: round(v, 2) for m, v in cv.items()},
                       "ranges": {n: [float(X[:, j].min()), float(X[:, j].max())] for j, n in enumerate(names)}}
        log(f"{ktype:10s} {len(rs):4d} rows  " + "  ".join(f"{m} {v:5.1f}%" for m, v in cv.items()) + f"  -> {best}")
    predictor = KernelPredictor(device, runtime, "fp32", 1, overhead, models, info, rows)
    predictor.nchwc_block = block
    return predictor
