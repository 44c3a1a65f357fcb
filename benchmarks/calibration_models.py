"""How many whole models the calibration needs: accuracy on held-out models against the fit-set size.

From one device's tables: the lookup table of every operator row, calibrated
(``hwnas.predictors.fit.calibrate``, the form chosen by cross-validation as
``hwnas fit`` does) on ``k`` whole models drawn at random from the fit half
(the models ``hwnas fit`` may use), then judged on the held-out half. Each
``k`` is drawn ``--draws`` times; the table gives the mean and the worst draw.

    .venv/bin/python benchmarks/calibration_models.py --device amd-epyc-2c --runtime tflite
    .venv/bin/python benchmarks/calibration_models.py --device intel-xeon-2c --data latency_data --sizes 5,10,20,40
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

from hwnas.latency_data import default_device_name, read_model_rows, read_op_rows
from hwnas.predictors.evaluate import metrics
from hwnas.predictors.fit import calibrate, is_held_out, model_ops, select_models, select_ops
from hwnas.predictors.lut import LookupTable
from hwnas.spaces import DEFAULT_SPACE


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=default_device_name())
    p.add_argument("--runtime", default="tflite")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--space", default=DEFAULT_SPACE)
    p.add_argument("--data", default="latency_data", help="folder of the tables")
    p.add_argument("--sizes", default="3,5,10,15,20,30,40,60", help="fit-set sizes to try (comma-separated)")
    p.add_argument("--draws", type=int, default=10, help="random fit sets per size")
    args = p.parse_args(argv)

    data = Path(args.data)
    ops, ms = select_ops(read_op_rows(data / f"{args.device}.csv"), args.runtime, args.dtype, 1)
    lut = LookupTable({"name": args.device}, args.space, args.runtime, args.dtype, 1,
                      {op.key(): float(t) for op, t in zip(ops, ms)})
    rows = [r for r in select_models(read_model_rows(data / f"{args.device}-models.csv"), args.runtime, args.dtype,
                                     1, args.space) if lut.covers(model_ops(r, data.parent))]
    fit = [r for r in rows if not is_held_out(r.arch_file, 0.5)]
    held = [r for r in rows if is_held_out(r.arch_file, 0.5)]
    if not fit or not held:
        print(f"no covered whole models to fit on / hold out ({len(fit)} / {len(held)})", file=sys.stderr)
        return 2
    held_ops = [model_ops(r, data.parent) for r in held]
    held_ms = [r.median_ms for r in held]
    print(f"{args.device} {args.runtime} {args.dtype} {args.space}: {len(ops)} operators, {len(fit)} fit-half models, "
          f"{len(held)} held out (measured {min(held_ms):.3f}-{max(held_ms):.3f} ms)")
    print(f"{'k':>4s} {'within5 mean':>13s} {'worst':>6s} {'within10 mean':>14s} {'worst':>6s} {'MAPE mean':>10s}  forms")
    for k in (int(s) for s in args.sizes.split(",")):
        if k > len(fit):
            break
        w5, w10, mape, forms = [], [], [], []
        for draw in range(args.draws if k < len(fit) else 1):
            chosen = random.Random(draw).sample(fit, k)
            calibrate(lut, [model_ops(r, data.parent) for r in chosen], [r.median_ms for r in chosen],
                      [r.arch_file for r in chosen], "draw")
            m = metrics(held_ms, [lut.predict_ops(o) for o in held_ops])
            w5.append(m.within5)
            w10.append(m.within10)
            mape.append(m.mape)
            forms.append(lut.overhead["form"])
        kinds = ", ".join(f"{f} x{forms.count(f)}" for f in sorted(set(forms)))
        print(f"{k:4d} {np.mean(w5):12.1f}% {min(w5):5.1f}% {np.mean(w10):13.1f}% {min(w10):5.1f}% "
              f"{np.mean(mape):9.2f}%  {kinds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
