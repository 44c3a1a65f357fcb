"""Whole-model calibration of a kernel predictor, on search-space networks (never on the zoo it is judged on).

    python -m hwnas.kernels.calibrate predictors/kernels/<device>-tflite-fp32-t1.json [--rounds 3]

A kernel timed alone keeps its input, output and weights in the caches from
one call to the next; inside a network every kernel reads what the previous
one wrote, and reads weights that other kernels pushed out of the caches. Measured on this CPU, a
sum of kernels timed alone misses a few microseconds per kernel, more for
large activations. So whole networks of the search spaces (:data:`CALIBRATION`,
``hwnas.profiler.calibration_archs``: different networks from the zoo) are
exported with synthetic convolution chains (:func:`chain_specs`, some of them
weight-bound), timed in interleaved rounds, and

    measured - predicted ~ per_kernel_ms x kernels + ms_per_melem x (elements read, millions)
                           + ms_per_mparam x max(0, weights - resident_mparams) (millions)

(the last term: a network whose weights do not fit in the caches streams them
from memory at every inference; ``resident_mparams`` is chosen from a grid by
the median absolute relative error, which a few extreme chains do not sway)

is fitted (non-negative least squares, in relative error) and stored in the
predictor file (field ``calibration``); :class:`hwnas.kernels.predictor.KernelPredictor`
adds it to every kernel.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

CALIBRATION = {"proxyless-tiny": 6, "proxyless-cifar": 4, "fbnet-cifar100": 3, "proxyless-mobile": 3}
RESIDENT_MPARAMS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
CHAINS = 16  # synthetic convolution chains with many weights (small inputs, wide layers)


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


def calibrate(predictor_path: Path, cache: Path, rounds: int) -> dict:
    from hwnas.export.tflite import TFLiteConverter
    from hwnas.kernels.predictor import KernelPredictor
    from hwnas.kernels.profile import POLICY
    from hwnas.modelgraph import read_model
    from hwnas.profiler import arch_file_name, calibration_archs
    from hwnas.runners.tflite import TFLiteRunner
    from hwnas.spaces import get_space
    from hwnas.timing_rounds import file_latencies, time_rounds

    predictor = KernelPredictor.load(predictor_path)  # a missing or malformed file: refused before the timing
    cache.mkdir(parents=True, exist_ok=True)
    files = {}
    with TFLiteConverter(cache / "convert.log") as conv:
        for space_name, count in CALIBRATION.items():
            for arch in calibration_archs(get_space(space_name), count, seed=11):
                name = f"{space_name}-{arch_file_name(arch).removesuffix('.json')}"
                path = cache / f"{name}.tflite"
                if not path.exists():
                    conv.convert(arch.ops(), path)
                    print(f"export {name}", file=sys.stderr)
                files[name] = path
        for i, spec in enumerate(chain_specs()):
            path = cache / f"chain-{i}.tflite"
            if not path.exists():
                conv.convert_spec({"chain": spec}, path)
                print(f"export chain-{i}", file=sys.stderr)
            files[f"chain-{i}"] = path
    runner = TFLiteRunner(threads=1, policy=POLICY)
    latency = file_latencies(time_rounds(files, runner, rounds, cache / "rounds.jsonl", 0))
    predictor.calibration = None
    measured, predicted, n_kernels, melems, mparams = [], [], [], [], []
    for name, path in files.items():
        pred = predictor.predict_graph(read_model(path))
        measured.append(latency[name][0])
        predicted.append(pred.total_ms)
        n_kernels.append(len(pred.kernels))
        melems.append(sum(k.in_elems for k in pred.kernels) / 1e6)
        mparams.append(sum(k.params for k in pred.kernels) / 1e6)
    measured, predicted = np.array(measured), np.array(predicted)
    from scipy.optimize import nnls

    best = None
    for resident in RESIDENT_MPARAMS:  # weights up to this many millions stay in the caches
        terms = np.stack([n_kernels, melems, np.maximum(0.0, np.array(mparams) - resident)], axis=1)
        coef, _ = nnls(terms / measured[:, None], (measured - predicted) / measured)
        after = predicted + terms @ coef
        mape = float(np.median(np.abs(after / measured - 1)) * 100)  # median: robust to a few extreme chains
        print(f"resident {resident:5.2f} M weights: median APE {mape:.2f}%  coefficients "
              f"{np.round(coef, 4).tolist()}", file=sys.stderr)
        if best is None or mape < best[0]:
            best = (mape, resident, coef, after)
    _, resident, coef, after = best
    result = {"chains": len(chain_specs()), "per_kernel_ms": float(coef[0]), "ms_per_melem": float(coef[1]),
              "ms_per_mparam": float(coef[2]), "resident_mparams": resident, "models": len(files),
              "spaces": CALIBRATION, "rounds": rounds,
              "mape_before": float(np.mean(np.abs(predicted / measured - 1)) * 100),
              "mape_after": float(np.mean(np.abs(after / measured - 1)) * 100),
              "within10_after": float(np.mean(np.abs(after / measured - 1) <= 0.1))}
    data = json.loads(predictor_path.read_text())
    data["calibration"] = result
    predictor_path.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True) + "\n")
    return result
