"""Whole-model calibration of a kernel predictor, on search-space networks (never on the zoo it is judged on).

    python -m hwnas.kernels.calibrate predictors/kernels/<device>-tflite-fp32-t1.json [--rounds 3]

A kernel timed alone keeps its input, output and weights in the caches from
one call to the next; inside a network every kernel reads what the previous
one wrote, and pays its launch inside a bigger graph. Measured on this CPU, a
sum of kernels timed alone misses a few microseconds per kernel, more for
large activations. So whole networks of the search spaces (:data:`CALIBRATION`,
``hwnas.profiler.calibration_archs``: different networks from the zoo) are
exported, timed in interleaved rounds, and

    measured - predicted ~ per_kernel_ms x kernels + ms_per_melem x (elements read, millions)

is fitted (non-negative least squares, in relative error) and stored in the
predictor file (field ``calibration``); :class:`hwnas.kernels.predictor.KernelPredictor`
adds it to every kernel.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

CALIBRATION = {"proxyless-tiny": 6, "proxyless-cifar": 4, "fbnet-cifar100": 3, "proxyless-mobile": 3}


def calibrate(predictor_path: Path, cache: Path, rounds: int) -> dict:
    from hwnas.export.tflite import TFLiteConverter
    from hwnas.kernels.predictor import KernelPredictor
    from hwnas.kernels.profile import POLICY
    from hwnas.modelgraph import read_model
    from hwnas.profiler import arch_file_name, calibration_archs
    from hwnas.runners.tflite import TFLiteRunner
    from hwnas.spaces import get_space
    from hwnas.timing_rounds import file_latencies, time_rounds

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
    runner = TFLiteRunner(threads=1, policy=POLICY)
    latency = file_latencies(time_rounds(files, runner, rounds, cache / "rounds.jsonl", 0))
    predictor = KernelPredictor.load(predictor_path)
    predictor.calibration = None
    measured, predicted, n_kernels, melems = [], [], [], []
    for name, path in files.items():
        pred = predictor.predict_graph(read_model(path))
        measured.append(latency[name][0])
        predicted.append(pred.total_ms)
        n_kernels.append(len(pred.kernels))
        melems.append(sum(k.in_elems for k in pred.kernels) / 1e6)
    measured, predicted = np.array(measured), np.array(predicted)
    from scipy.optimize import nnls

    A = np.stack([np.array(n_kernels), np.array(melems)], axis=1) / measured[:, None]
    coef, _ = nnls(A, (measured - predicted) / measured)
    after = predicted + np.stack([n_kernels, melems], axis=1) @ coef
    result = {"per_kernel_ms": float(coef[0]), "ms_per_melem": float(coef[1]), "models": len(files),
              "spaces": CALIBRATION, "rounds": rounds,
              "mape_before": float(np.mean(np.abs(predicted / measured - 1)) * 100),
              "mape_after": float(np.mean(np.abs(after / measured - 1)) * 100),
              "within10_after": float(np.mean(np.abs(after / measured - 1) <= 0.1))}
    data = json.loads(predictor_path.read_text())
    data["calibration"] = result
    predictor_path.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True) + "\n")
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hwnas.kernels.calibrate", description=__doc__.splitlines()[0])
    p.add_argument("predictor", type=Path)
    p.add_argument("--cache", type=Path, default=Path("runs/kernel-calibration"))
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    start = time.time()
    result = calibrate(args.predictor, args.cache, args.rounds)
    print(json.dumps(result, indent=1))
    print(f"wall time {time.time() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
