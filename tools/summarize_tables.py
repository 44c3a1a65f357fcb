#!/usr/bin/env python3
"""Summarize a device's latency tables: rows, spread, int8 vs fp32, whole model vs sum of operators.

    python tools/summarize_tables.py [--device amd-epyc-2c] [--dir latency_data] [--plots latency_data/plots]

Runs from any folder: the architecture files named in <device>-models.csv are looked up relative to the
folder above --dir (the repository root for latency_data/), else rebuilt from the row's space and choices.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hwnas.errors import HwnasError  # noqa: E402
from hwnas.latency_data import default_device_name, read_model_rows, read_op_rows  # noqa: E402
from hwnas.predictors.fit import model_ops  # noqa: E402


def spread_line(label: str, medians, spreads) -> str:
    rel = np.asarray(spreads) / np.asarray(medians)
    return (f"{label}: {len(rel)} rows, relative spread (IQR/median) median {np.median(rel):.1%}, "
            f"90th pct {np.percentile(rel, 90):.1%}, max {rel.max():.1%}, >10%: {(rel > 0.1).sum()}")


def _diagonals(ax, lo: float, hi: float, label: str, band: tuple[float, float, str], ylabel: str) -> None:
    """Log-log axes over [lo, hi] with y = x (dashed) and the band y = low x .. high x (dotted)."""
    lo, hi = lo / 1.3, hi * 1.3
    line = np.array([lo, hi])
    ax.plot(line, line, "k--", lw=0.8, label=label)
    ax.plot(line, line * band[0], "k:", lw=0.7, label=band[2])
    ax.plot(line, line * band[1], "k:", lw=0.7)
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), ylabel=ylabel)
    ax.grid(alpha=0.3, which="both")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=default_device_name())
    parser.add_argument("--dir", default="latency_data")
    parser.add_argument("--plots", help="folder for PNG plots")
    args = parser.parse_args(argv)
    ops_path = Path(args.dir) / f"{args.device}.csv"
    models_path = Path(args.dir) / f"{args.device}-models.csv"
    rows = read_op_rows(ops_path) if ops_path.exists() else []
    groups = defaultdict(list)
    for r in rows:
        groups[(r.runtime, r.dtype, r.threads)].append(r)
    print(f"# {ops_path}")
    for key, group in sorted(groups.items()):
        print(spread_line(f"{key[0]} {key[1]} {key[2]}t", [r.median_ms for r in group], [r.spread_ms for r in group]))
    table = {r.key: r.median_ms for r in rows}

    fp32 = {r.op: r.median_ms for r in groups.get(("tflite", "fp32", 1), [])}
    int8 = {r.op: r.median_ms for r in groups.get(("tflite", "int8", 1), [])}
    both = [op for op in int8 if op in fp32]
    if both:
        print("\n# tflite int8 / fp32 (1 thread), per operator kind and kernel")
        by = defaultdict(list)
        for op in both:
            by[(op.kind, op.kernel)].append(int8[op] / fp32[op])
        for (kind, k), ratios in sorted(by.items()):
            print(f"{kind:7s} k{k}: n={len(ratios):3d} ratio median {np.median(ratios):.2f} "
                  f"(min {min(ratios):.2f}, max {max(ratios):.2f})")
        total8, total32 = sum(int8[o] for o in both), sum(fp32[o] for o in both)
        print(f"all {len(both)} operators: sum int8 {total8:.3f} ms vs fp32 {total32:.3f} ms "
              f"(ratio {total8 / total32:.2f})")

    models = read_model_rows(models_path) if models_path.exists() else []
    pairs = defaultdict(list)
    unreadable: list[str] = []
    uncovered = 0  # model rows with an operator missing from the operator table
    if models:
        print(f"\n# {models_path}")
        mgroups = defaultdict(list)
        for m in models:
            mgroups[(m.space, m.runtime, m.dtype, m.threads)].append(m)
        for key, group in sorted(mgroups.items()):
            med = [m.median_ms for m in group]
            print(spread_line(f"{key[0]} {key[1]} {key[2]} {key[3]}t", med, [m.spread_ms for m in group])
                  + f"; latency {min(med):.3f}..{max(med):.3f} ms")
            for m in group:
                try:  # arch_file is relative to the folder above --dir (the repository root)
                    ops = model_ops(m, root=Path(args.dir).resolve().parent)
                except HwnasError as exc:
                    unreadable.append(f"{m.arch_file}: {exc}")
                    continue
                keys = [(op.key(), m.runtime, m.dtype, m.threads) for op in ops if not op.is_identity]
                if all(k in table for k in keys):
                    pairs[key].append((sum(table[k] for k in keys), m.median_ms))
                else:
                    uncovered += 1
        if unreadable:
            print(f"skipped {len(unreadable)} model rows whose operators could not be read, e.g. {unreadable[0]}")
        if uncovered:
            print(f"skipped {uncovered} model rows with operators missing from {ops_path.name}")
        for key, values in sorted(pairs.items()):
            s, meas = np.array(values).T
            corr = np.corrcoef(s, meas)[0, 1]
            print(f"sum of operator rows vs whole model, {key[0]} {key[1]} {key[2]}: n={len(s)}, "
                  f"measured/sum median {np.median(meas / s):.2f}, Pearson r {corr:.3f}")

    if args.plots:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = Path(args.plots)
        out.mkdir(parents=True, exist_ok=True)
        # log axes: latencies span decades and most points would crowd the origin on linear ones
        if both:
            fig, ax = plt.subplots(figsize=(5, 5))
            for kernel in sorted({op.kernel for op in both}):
                sel = [op for op in both if op.kernel == kernel]
                ax.scatter([fp32[o] for o in sel], [int8[o] for o in sel], s=12, label=f"k{kernel}")
            values = [fp32[o] for o in both] + [int8[o] for o in both]
            _diagonals(ax, min(values), max(values), "int8 = fp32", (0.5, 2.0, "0.5x / 2x"), "int8 ms")
            ax.set(xlabel="fp32 ms", title=f"{args.device} tflite: int8 vs fp32 per operator")
            ax.legend(fontsize=8)
            fig.savefig(out / f"{args.device}-int8-vs-fp32.png", dpi=120, bbox_inches="tight")
            print(f"wrote {out / f'{args.device}-int8-vs-fp32.png'}")
        else:
            print("no int8-vs-fp32 plot: no operator has both tflite int8 and fp32 1-thread rows")
        if pairs:
            fig, ax = plt.subplots(figsize=(5, 5))
            for key, values in sorted(pairs.items()):
                s, meas = np.array(values).T
                ax.scatter(s, meas, s=10, label=f"{key[0]} {key[1]}")
            values = [x for v in pairs.values() for pair in v for x in pair]
            _diagonals(ax, min(values), max(values), "measured = sum", (0.9, 1.1, "+-10%"), "whole model measured (ms)")
            ax.set(xlabel="sum of operator rows (ms)", title=f"{args.device}: whole model vs sum of operators")
            ax.legend(fontsize=7)
            fig.savefig(out / f"{args.device}-model-vs-sum.png", dpi=120, bbox_inches="tight")
            print(f"wrote {out / f'{args.device}-model-vs-sum.png'}")
        else:
            print(f"no model-vs-sum plot: no whole-model row of {models_path} has all its operators in {ops_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
