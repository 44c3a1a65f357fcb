"""Whole-model calibration of a kernel predictor, on networks that are not in the zoo it is judged on.

    hwnas kernels calibrate predictors/kernels/<device>-tflite-fp32-t1.json [--rounds 3]

A kernel timed alone keeps its input, output and weights in the caches from
one call to the next; inside a network every kernel reads what the previous
one wrote, and reads weights that other kernels pushed out of the caches. So
whole networks are timed: search-space networks (:data:`CALIBRATION`,
``hwnas.profiler.calibration_archs``), synthetic convolution chains
(:func:`chain_specs`, some of them weight-bound) and real networks
(:data:`REAL_NETWORKS`: ``keras.applications`` at widths and input sizes the
zoo benchmark does not have), in interleaved rounds, and

    measured - predicted ~ per_kernel_ms x kernels + ms_per_melem x (elements read, millions)
                           + ms_per_mweight x (weights read, millions)
                           + ms_per_mparam x max(0, weights - resident_mparams) (millions)
                           + sum over groups g of scale[g] x (predicted ms of the group's kernels)

(groups: conv (with grouped convolutions), conv1x1 (with fully connected
layers), dwconv, other; the mapping is stored with the terms as ``group_of``;
the weights term: a network whose
weights do not fit in the caches streams them from memory at every inference;
``resident_mparams`` is chosen from a grid by the mean absolute relative
error, the leave-one-out criterion below) is fitted by bounded least
squares in relative error with Huber weights beyond 5% (:data:`HUBER`: a few
networks far from their kernels' sum do not decide the terms for the rest;
:data:`BOUNDS`; the subset of terms with the lowest leave-one-network-out
error, :data:`TERM_SETS`) and stored in the predictor file
(field ``calibration``); :class:`hwnas.kernels.predictor.KernelPredictor`
adds it to every kernel.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from hwnas.kernels.predictor import GROUP_OF, GROUPS, scale_group

CALIBRATION = {"proxyless-tiny": 6, "proxyless-cifar": 4, "fbnet-cifar100": 3, "proxyless-mobile": 3}
RESIDENT_MPARAMS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
CHAINS = 16  # synthetic convolution chains with many weights (small inputs, wide layers)
# Real networks for calibration: keras.applications at widths and input sizes that the zoo benchmark
# (benchmarks/model_zoo.py) does not have, so that no zoo network is ever fitted on.
REAL_NETWORKS = [
    {"app": "MobileNet", "alpha": 0.25, "size": 128}, {"app": "MobileNet", "alpha": 0.5, "size": 64},
    {"app": "MobileNet", "alpha": 1.0, "size": 128}, {"app": "MobileNet", "alpha": 0.75, "size": 48},
    {"app": "MobileNetV2", "alpha": 0.75, "size": 64}, {"app": "MobileNetV2", "alpha": 0.35, "size": 128},
    {"app": "MobileNetV2", "alpha": 1.3, "size": 96}, {"app": "MobileNetV2", "alpha": 0.5, "size": 48},
    {"app": "MobileNetV3Small", "alpha": 1.0, "size": 64}, {"app": "MobileNetV3Small", "alpha": 0.75, "size": 160},
    {"app": "MobileNetV3Small", "alpha": 1.0, "size": 128, "minimalistic": True},
    {"app": "MobileNetV3Large", "alpha": 1.0, "size": 64}, {"app": "MobileNetV3Large", "alpha": 0.75, "size": 160},
    {"app": "EfficientNetB0", "size": 96}, {"app": "EfficientNetB1", "size": 48},
    {"app": "ResNet50", "size": 96}, {"app": "DenseNet121", "size": 96}, {"app": "NASNetMobile", "size": 64},
]


def real_name(spec: dict) -> str:
    """A calibration network's file name (``MobileNetV2-a0.75-64``, ``MobileNetV3Small-a1.0-128-min``)."""
    alpha = f"-a{spec['alpha']}" if "alpha" in spec else ""
    return f"{spec['app']}{alpha}-{spec['size']}" + ("-min" if spec.get("minimalistic") else "")


def chain_specs(count: int = CHAINS, seed: int = 5) -> list[dict]:
    """Random chains of 1x1, 3x3 and depthwise convolutions at 2-64 px with 16-2048 channels (up to ~20 M
    weights): networks whose weights do not stay in the caches, which the search spaces lack."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(count):
        h = rng.choice((2, 4, 7, 8, 14, 16, 28, 32, 64))
        c = rng.choice((16, 32, 64))
        top = rng.choice((256, 512, 1024, 2048)) if h <= 16 else rng.choice((128, 256, 512))
        layers = []
        for _ in range(rng.randint(8, 20)):
            kind = rng.choice(("conv1x1", "conv1x1", "dwconv", "conv3x3"))
            if kind == "dwconv":
                layers.append({"type": "dwconv", "k": 3, "s": 1})
                continue
            c = min(top, max(16, int(c * rng.choice((0.5, 1, 2, 2)))))
            layers.append({"type": "conv", "cout": c, "k": 3 if kind == "conv3x3" and c <= 512 else 1, "s": 1})
        out.append({"h": h, "cin": 16, "layers": layers})
    for _ in range(count // 2):  # weight-bound: tiny inputs, many wide 1x1 layers (4-40 M weights)
        c = rng.choice((512, 1024, 2048))
        layers = [{"type": "conv", "cout": c, "k": 1, "s": 1} for _ in range(rng.randint(2, 10))]
        out.append({"h": rng.choice((1, 2, 4)), "cin": c, "layers": layers})
    return out


def rounds_log(cache: Path, runtime: str) -> Path:
    """The round log of one runtime's calibration timings in ``cache``: the LiteRT and ONNX Runtime networks share
    names (``chain-0``), so one shared log would hand one runtime's times to the other."""
    return cache / f"rounds-{runtime}.jsonl"


def export_networks(cache: Path) -> dict[str, Path]:
    """The calibration networks (search-space networks, chains, :data:`REAL_NETWORKS`) converted once into
    ``cache`` (files there are reused); name -> file."""
    from hwnas.export.tflite import TFLiteConverter
    from hwnas.profiler import arch_file_name, calibration_archs
    from hwnas.spaces import get_space

    cache.mkdir(parents=True, exist_ok=True)
    jobs = {}
    for space_name, count in CALIBRATION.items():
        for arch in calibration_archs(get_space(space_name), count, seed=11):
            jobs[f"{space_name}-{arch_file_name(arch).removesuffix('.json')}"] = arch
    for i, spec in enumerate(chain_specs()):
        jobs[f"chain-{i}"] = {"chain": spec}
    for spec in REAL_NETWORKS:
        jobs[real_name(spec)] = {"app": spec}
    todo = [name for name in jobs if not (cache / f"{name}.tflite").exists()]
    if todo:
        with TFLiteConverter(cache / "convert.log") as conv:
            for i, name in enumerate(todo):
                path, tmp = cache / f"{name}.tflite", cache / f"tmp-{name}.tflite"
                if path.exists():  # written meanwhile by a second export process
                    continue
                job = jobs[name]
                conv.convert_spec(job, tmp) if isinstance(job, dict) else conv.convert(job.ops(), tmp)
                tmp.replace(path)
                print(f"export {i + 1}/{len(todo)} {name}", file=sys.stderr)
    return {name: cache / f"{name}.tflite" for name in jobs}


# bounds of the fitted terms: per kernel (ms, may be negative: a kernel timed alone pays more fixed cost than
# the empty model's invoke), per million elements read, per million weights read (a kernel's weights are
# not in the caches inside a network), per million weights of the network beyond the resident ones, and
# the relative in-network change of each group's alone-timed milliseconds
BOUNDS = {"per_kernel_ms": (-0.01, 0.01), "ms_per_melem": (0.0, 1.0), "ms_per_mweight": (0.0, 1.0),
          "ms_per_mparam": (0.0, 1.0),
          **{f"scale_{g}": (-0.6, 1.0) for g in GROUPS}}


def network_terms(prediction, resident: float) -> dict[str, float]:
    """The calibration terms of one uncalibrated prediction (:meth:`KernelPredictor.predict_graph`)."""
    mparams = sum(k.params for k in prediction.kernels) / 1e6
    t = {"per_kernel_ms": float(len(prediction.kernels)),
         "ms_per_melem": sum(k.in_elems for k in prediction.kernels) / 1e6,
         "ms_per_mweight": mparams, "ms_per_mparam": max(0.0, mparams - resident)}
    for g in GROUPS:
        t[f"scale_{g}"] = sum(k.ms for k in prediction.kernels if scale_group(k.type) == g)
    return t


SCALES = tuple(f"scale_{g}" for g in GROUPS)
# relative error beyond which a network counts linearly, not squared, in the fit: a few networks that run far
# from their kernels' sum (a chain of 0.4 us kernels measured at 2.7x it) must not decide the terms for all
HUBER = 0.05
# the term sets tried; the one with the lowest leave-one-network-out MAPE is kept
TERM_SETS = {"kernels+elements+weights beyond": ("per_kernel_ms", "ms_per_melem", "ms_per_mparam"),
             "+ weights read": ("per_kernel_ms", "ms_per_melem", "ms_per_mweight", "ms_per_mparam"),
             "+ weights read + group factors": tuple(BOUNDS)}


def robust_fit(A: np.ndarray, b: np.ndarray, bounds: tuple, huber: float = HUBER, passes: int = 20) -> np.ndarray:
    """Bounded least squares ``A x ~ b`` with Huber weights (iteratively reweighted): a row whose residual r is
    above ``huber`` weighs ``huber / |r|``, so its penalty grows linearly, not quadratically, beyond it."""
    from scipy.optimize import lsq_linear

    w = np.ones(len(b))
    for _ in range(passes):
        sw = np.sqrt(w)
        x = lsq_linear(A * sw[:, None], b * sw, bounds=bounds).x
        new = np.minimum(1.0, huber / np.maximum(np.abs(A @ x - b), 1e-12))
        if np.allclose(new, w, atol=1e-4):
            break
        w = new
    return x


def fit_terms(predictions: list, measured: np.ndarray, names: tuple[str, ...] = tuple(BOUNDS), log=print) -> dict:
    """Bounded least squares in relative error of ``measured - predicted`` on the terms ``names`` of
    :func:`network_terms` (the others 0), robust (:func:`robust_fit`), ``resident_mparams`` chosen from a grid
    by the mean absolute relative error."""
    predicted = np.array([p.total_ms for p in predictions])
    best = None
    for resident in RESIDENT_MPARAMS:
        terms = np.array([[network_terms(p, resident)[n] for n in names] for p in predictions])
        coef = robust_fit(terms / measured[:, None], (measured - predicted) / measured,
                          ([BOUNDS[n][0] for n in names], [BOUNDS[n][1] for n in names]))
        after = predicted + terms @ coef
        mape = float(np.mean(np.abs(after / measured - 1)) * 100)
        log(f"resident {resident:5.2f} M weights: MAPE {mape:.2f}%  "
            + " ".join(f"{n} {v:.4g}" for n, v in zip(names, coef)))
        if best is None or mape < best[0]:
            best = (mape, resident, coef, after)
    _, resident, coef, after = best
    result = {n: 0.0 for n in BOUNDS}
    result.update({n: float(v) for n, v in zip(names, coef)})
    result["scale"] = {g: result.pop(f"scale_{g}") for g in GROUPS}
    result["group_of"] = dict(GROUP_OF)  # which group each kernel type's factor is (fc moved to conv1x1 in 2026-12)
    result.update({"resident_mparams": resident, "models": len(predictions),
                   "mape_before": float(np.mean(np.abs(predicted / measured - 1)) * 100),
                   "mape_after": float(np.mean(np.abs(after / measured - 1)) * 100),
                   "within10_after": float(np.mean(np.abs(after / measured - 1) <= 0.1))})
    return result


def _apply(fit: dict, prediction) -> float:
    t = network_terms(prediction, fit["resident_mparams"])
    coef = {**{n: fit[n] for n in BOUNDS if n in fit}, **{f"scale_{g}": v for g, v in fit["scale"].items()}}
    return prediction.total_ms + sum(coef[n] * t[n] for n in coef)


def select_terms(predictions: list, measured: np.ndarray, log=print) -> dict:
    """:func:`fit_terms` with the term set of :data:`TERM_SETS` whose leave-one-network-out MAPE is lowest; the
    result carries that out-of-sample MAPE and share within +-10% (``loo_mape``, ``loo_within10``)."""
    best = None
    for label, names in TERM_SETS.items():
        err = []
        for i in range(len(predictions)):
            keep = [j for j in range(len(predictions)) if j != i]
            fit = fit_terms([predictions[j] for j in keep], measured[keep], names, log=lambda _: None)
            err.append(_apply(fit, predictions[i]) / measured[i] - 1)
        err = np.abs(np.array(err))
        log(f"terms {label}: leave-one-out MAPE {err.mean() * 100:.2f}%, within +-10% {np.mean(err <= 0.1):.0%}")
        if best is None or err.mean() < best[0]:
            best = (err.mean(), label, names, err)
    _, label, names, err = best
    result = fit_terms(predictions, measured, names, log)
    result.update({"terms": label, "loo_mape": float(err.mean() * 100), "loo_within10": float(np.mean(err <= 0.1))})
    return result


def fit_calibration(predictor, files: dict[str, Path], latency: dict[str, float], log=None) -> dict:
    """The whole-network terms of ``predictor`` (:class:`hwnas.kernels.predictor.KernelPredictor`) fitted on the
    calibration networks ``files`` (name -> .tflite, :func:`export_networks`) and their ``latency`` (name -> ms,
    :func:`hwnas.timing_rounds.latencies_by`); the predictor itself is left unchanged."""
    from hwnas.modelgraph import read_model

    saved, predictor.calibration = predictor.calibration, None
    try:
        predictions = [predictor.predict_graph(read_model(path)) for path in files.values()]
    finally:
        predictor.calibration = saved
    measured = np.array([latency[name] for name in files])
    result = select_terms(predictions, measured, log=log or (lambda line: print(line, file=sys.stderr)))
    result.update({"chains": len(chain_specs()), "spaces": CALIBRATION,
                   "real_networks": [real_name(s) for s in REAL_NETWORKS]})
    return result


def calibrate(predictor_path: Path, cache: Path, rounds: int, out: Path | None = None,
              retime: bool = False, statistic: str = "fastest") -> dict:
    """Time the calibration networks in ``rounds`` interleaved rounds and store the fitted terms in the
    predictor file (``out``, default: ``predictor_path`` in place). The round log in ``cache`` is reused
    (an interrupted timing resumes) unless ``retime``: then it is moved aside and the networks are timed
    again now. The terms describe the machine as it runs at timing (its share of the caches, which other
    processes and virtual machines take), so calibrate on the day the predictions are for. A network's ms
    is taken from its rounds with ``statistic`` (:func:`hwnas.timing_rounds.latencies_by`), stored with the
    terms so that what is predicted can be timed the same way."""
    from hwnas.kernels.predictor import KernelPredictor
    from hwnas.kernels.profile import POLICY
    from hwnas.runners.tflite import TFLiteRunner
    from hwnas.timing_rounds import latencies_by, set_aside, time_rounds

    predictor = KernelPredictor.load(predictor_path)  # a missing or malformed file: refused before the timing
    files = export_networks(cache)
    log_path = rounds_log(cache, "tflite")
    if retime:
        set_aside(log_path)
    runner = TFLiteRunner(threads=1, policy=POLICY)
    latency = latencies_by(time_rounds(files, runner, rounds, log_path, 0), statistic)
    result = fit_calibration(predictor, files, latency)
    result["rounds"], result["statistic"] = rounds, statistic
    store_calibration(predictor_path, result, out)
    return result


def store_calibration(predictor_path: Path, result: dict, out: Path | None = None) -> None:
    """The predictor file with ``result`` as its ``calibration``, written to ``out`` (default: in place) in one
    step (a crash leaves the old file or the new one, never half of one)."""
    data = json.loads(Path(predictor_path).read_text())
    data["calibration"] = result
    target = Path(out or predictor_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True) + "\n")
    os.replace(tmp, target)
