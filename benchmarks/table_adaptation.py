"""Accuracy of a committed table adapted to this machine from N timed children, vs N, on 30 unseen children.

Draws 20 + 30 random children of the space (the space's widths), exports each whole to TFLite fp32 and
times all 50 here together in interleaved rounds (one pinned core, the runner's CPU-time clock). Then,
from every committed ``predictors/*-tflite-fp32.json`` table, compares on the 30 unseen children:
the table as it is, the table times the session level of the first N children, and the table adapted
(:func:`hwnas.predictors.adapt_table.adapt_table`) from the first N, for N in 5, 10, 20.

    PYTHONPATH=. python benchmarks/table_adaptation.py --out docs/predictors/table_adaptation.json

Resumable: the timings are kept in ``--out`` and reused by a rerun (``--retime`` times again).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hwnas.latency_data import describe_this_device
from hwnas.predictors import load_predictor
from hwnas.predictors.adapt_table import adapt_table, random_children, time_children
from hwnas.predictors.common import write_json
from hwnas.spaces import get_space

FIT, UNSEEN = 20, 30


def within(pred, y, tol=0.10) -> float:
    return float(np.mean(np.abs(np.asarray(pred) / y - 1) <= tol))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="proxyless-tiny")
    ap.add_argument("--tables", default="predictors", help="folder of the committed *-tflite-fp32.json tables")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--sizes", default="5,10,20")
    ap.add_argument("--out", default="docs/predictors/table_adaptation.json")
    ap.add_argument("--table", default=None, help="write the markdown table here too")
    ap.add_argument("--retime", action="store_true")
    args = ap.parse_args(argv)

    space = get_space(args.space)
    archs = random_children(space, FIT + UNSEEN, args.seed)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() and not args.retime else {}
    if "measured_ms" not in results:
        results = {"device": describe_this_device(), "space": args.space, "rounds": args.rounds,
                   "children": [a.choices for a in archs],
                   "measured_ms": time_children(archs, "tflite", "fp32", 1, args.rounds, args.seed)}
        write_json(out, results)
    y = np.asarray(results["measured_ms"])
    fit_y, test_y = y[:FIT], y[FIT:]
    test = archs[FIT:]
    rows = []
    for path in sorted(Path(args.tables).glob("*-tflite-fp32.json")):
        table = load_predictor(path, space=args.space)
        raw = np.array([table.predict_ops(a.ops()) for a in test])
        fit_raw = np.array([table.predict_ops(a.ops()) for a in archs[:FIT]])
        rows.append({"table": path.name, "N": 0, "method": "table as is", "within_10": within(raw, test_y), "within_5": within(raw, test_y, 0.05),
                     "median_ratio": float(np.median(test_y / raw))})
        for n in (int(s) for s in args.sizes.split(",")):
            level = float(np.median(fit_y[:n] / fit_raw[:n]))
            rows.append({"table": path.name, "N": n, "method": "session level", "within_10": within(level * raw, test_y),
                         "within_5": within(level * raw, test_y, 0.05),
                         "median_ratio": float(np.median(test_y / (level * raw)))})
            adapted = adapt_table(table, archs[:n], fit_y[:n], {"name": "this machine"}, path.name)
            pred = np.array([adapted.predict_ops(a.ops()) for a in test])
            rows.append({"table": path.name, "N": n, "method": "adapted (group scales)",
                         "within_10": within(pred, test_y), "within_5": within(pred, test_y, 0.05), "median_ratio": float(np.median(test_y / pred)),
                         "lambda": adapted.overhead["adapt"]["lambda"]})
    results["rows"] = rows
    write_json(out, results)
    lines = ["| starting table | N timed | method | unseen within +-5% | within +-10% | median measured/predicted |",
             "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['table']} | {r['N'] or '-'} | {r['method']} | {r['within_5']:.0%} | {r['within_10']:.0%} | {r['median_ratio']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.table:
        Path(args.table).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
