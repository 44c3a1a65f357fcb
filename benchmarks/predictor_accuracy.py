"""Whole-model accuracy of the latency predictors, on models never used in fitting.

For each runtime: the lookup table (sum + overhead), the regressor, the
operator-level FLOPs-linear regressor (sum + overhead) and a whole-model
FLOPs-linear fit, judged on the held-out whole-model rows of
``latency_data/<device>-models.csv``. A "transfer" row refits the regressor
without any operator of the evaluated space (only operators of the other
profiled spaces), to show how it does on operators it never saw.

Writes a markdown table into docs/predictors.md (between the results markers)
and one scatter PNG per runtime under docs/.

    .venv/bin/python benchmarks/predictor_accuracy.py [--device NAME] [--runtimes tflite,onnxruntime]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from hwnas.latency_data import default_device_name, read_model_rows, read_op_rows
from hwnas.predictors import load_predictor
from hwnas.predictors.evaluate import FlopsLinear, evaluate, scatter_plot, unseen_rows
from hwnas.predictors.fit import calibrate, fit_device, model_ops, output_stem, select_models, select_ops
from hwnas.predictors.lut import LookupTable
from hwnas.predictors.regressor import METHODS, RegressorPredictor, fit_method
from hwnas.spaces import DEFAULT_SPACE, get_space

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def transfer_regressor(reg, ops, ms, space_name, fit_ops, fit_measured):
    """The kept method refitted on operators outside ``space_name``; overhead on the same fit models."""
    inside = set(get_space(space_name).unique_ops())
    keep = [i for i, op in enumerate(ops) if op not in inside]
    if len(keep) < 10:
        return None, 0
    fitted = fit_method(METHODS[reg.method], [ops[i] for i in keep], ms[keep])
    pred = RegressorPredictor(reg.device, reg.space, reg.runtime, reg.dtype, reg.threads, fitted)
    calibrate(pred, fit_ops, fit_measured, ["-"] * len(fit_ops), "fit models")
    return pred, len(keep)


def constant_overhead_table(lut, fit_ops, fit_measured):
    """The table with only a constant overhead (the plain 'sum + constant' definition)."""
    plain = LookupTable(lut.device, lut.space, lut.runtime, lut.dtype, lut.threads, lut.entries)
    plain.enable_fallback(lut.fallback)
    calibrate(plain, fit_ops, fit_measured, ["-"] * len(fit_ops), "fit models", per_op=False)
    return plain


def disturbance_note(rows, lut) -> str:
    """Where, in file order (first measurement order), the models that ran >= 10% slower than the table predicts lie.

    On a shared machine a disturbed measurement is always too slow; when such
    models cluster in time rather than by architecture, the cause is the machine.
    """
    slow = [r.median_ms > 1.1 * lut.predict_ops(model_ops(r, ROOT)) for r in rows]  # rows are in file order
    fifths = np.array_split(np.array(slow, dtype=int), 5)
    counts = " / ".join(f"{int(part.sum())} of {len(part)}" for part in fifths)
    return (f"Models (all {len(rows)}, in file order, i.e. the order they were first measured, by fifths) measured >= 10% slower than the "
            f"calibrated table predicts: {counts}.")


def run_runtime(args, runtime: str) -> tuple[list[str], Path | None]:
    data = ROOT / args.data
    stem = output_stem(args.device, runtime, args.dtype, 1, args.space, DEFAULT_SPACE)
    lut_path = ROOT / args.predictors / f"{stem}.json"
    reg_path = ROOT / args.predictors / f"{stem}-regressor.json"
    if not lut_path.exists() or not reg_path.exists():
        print(f"{runtime}: no predictors at {lut_path}; run `hwnas fit --runtime {runtime}` first", file=sys.stderr)
        return [], None
    lut = load_predictor(lut_path, space=args.space, device=args.device).enable_fallback()
    reg = load_predictor(reg_path, space=args.space, device=args.device)
    rows = select_models(read_model_rows(data / f"{args.device}-models.csv"), runtime, args.dtype, 1, args.space)
    fit_set = set(lut.overhead.get("models", []))
    fit_rows = [r for r in rows if r.arch_file in fit_set]
    test = unseen_rows(rows, lut, reg)
    test_ops = [model_ops(r, ROOT) for r in test]
    measured = np.array([r.median_ms for r in test])
    fit_ops = [model_ops(r, ROOT) for r in fit_rows]
    fit_measured = [r.median_ms for r in fit_rows]
    covered = sum(lut.covers(o) for o in test_ops)

    base = fit_device(data, args.device, runtime, args.dtype, 1, args.space, args.holdout, ["flops-linear"]).regressor
    candidates = {}
    form = lut.overhead.get("form", "?")
    if form != "constant":
        candidates[f"LUT, calibrated ({form})"] = lut
    candidates["LUT sum + constant overhead"] = constant_overhead_table(lut, fit_ops, fit_measured)
    candidates[f"regressor ({reg.method}, {reg.overhead.get('form', '?')})"] = reg
    candidates[f"FLOPs-linear ops, calibrated ({base.overhead.get('form', '?')})"] = base
    if len(fit_rows) >= 2:
        candidates["FLOPs-linear whole model"] = FlopsLinear.fit(fit_ops, fit_measured)
    ops, ms = select_ops(read_op_rows(data / f"{args.device}.csv"), runtime, args.dtype, 1)
    transfer, n_transfer = transfer_regressor(reg, ops, ms, args.space, fit_ops, fit_measured)
    if transfer is not None:
        candidates[f"regressor, no {args.space} ops ({n_transfer} others)"] = transfer
    results = evaluate(candidates, test_ops, measured)

    title = f"{args.device} {runtime} {args.dtype} 1 thread: {len(test)} unseen {args.space} models"
    plotted = [next(iter(results))] + [k for k in results if k.startswith(("regressor (", "FLOPs-linear ops"))]
    png = scatter_plot({k: results[k] for k in plotted}, measured,
                       ROOT / args.docs / f"predictors-{stem}.png", title)
    lines = [f"### {runtime} {args.dtype}, 1 thread",
             "",
             f"{len(test)} held-out models (measured {measured.min():.3f}-{measured.max():.3f} ms, "
             f"median {np.median(measured):.3f}); {len(fit_rows)} other models fitted the overheads; "
             f"{covered}/{len(test)} fully covered by the table (the rest used its fallback regressor).",
             "",
             "| predictor | RMSE (ms) | MAPE (%) | within +-5% | within +-10% |",
             "|---|---:|---:|---:|---:|"]
    for name, (m, _) in results.items():
        lines.append(f"| {name} | {m.rmse_ms:.4f} | {m.mape:.2f} | {m.within5:.1f}% | {m.within10:.1f}% |")
    lines += ["", "Calibration forms cross-validated on the fit models only (repeated 5-fold, what `hwnas fit` "
              "chose by; MAPE / within +-5% / within +-10%):", "",
              "| predictor | " + " | ".join(lut.overhead.get("cv", {})) + " |",
              "|---|" + "---:|" * len(lut.overhead.get("cv", {}))]
    for name, pred in (("LUT", lut), (f"regressor ({reg.method})", reg), ("FLOPs-linear ops", base)):
        cv = pred.overhead.get("cv", {})
        kept = pred.overhead.get("form")
        lines.append(f"| {name} | " + " | ".join(
            ("**" if f == kept else "") + f"{s['mape']:.2f} / {s['within5']:.1f}% / {s['within10']:.1f}%"
            + ("**" if f == kept else "") for f, s in cv.items()) + " |")
    lines += ["", disturbance_note(rows, lut), "", f"![{runtime} predicted vs measured]({png.name})", "",
              f"Operator-level grouped 5-fold cross-validation of the regressor methods ({reg.n_rows} "
              f"operators; each fold holds out whole shapes), from `hwnas fit`:", "",
              "| method | RMSE (ms) | MAPE (%) | WAPE (%) |", "|---|---:|---:|---:|"]
    for name, sc in sorted(reg.cv.items(), key=lambda kv: kv[1]["wape"]):
        kept = " (kept)" if name == reg.method else ""
        lines.append(f"| {name}{kept} | {sc['rmse_ms']:.4f} | {sc['mape']:.2f} | {sc['wape']:.2f} |")
    lines.append("")
    print("\n".join(lines))
    return lines, png


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="device name (default: this machine's)")
    parser.add_argument("--runtimes", default="tflite,onnxruntime")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--space", default=DEFAULT_SPACE)
    parser.add_argument("--holdout", type=float, default=0.5, help="as given to hwnas fit (default 0.5)")
    parser.add_argument("--data", default="latency_data")
    parser.add_argument("--predictors", default="predictors")
    parser.add_argument("--docs", default="docs")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/predictors.md alone")
    args = parser.parse_args()
    args.device = args.device or default_device_name()
    section = [f"Device `{args.device}`, space `{args.space}`. Regenerate with "
               f"`.venv/bin/python benchmarks/predictor_accuracy.py --device {args.device}`.", ""]
    for runtime in args.runtimes.split(","):
        lines, _ = run_runtime(args, runtime)
        section += lines
    if args.no_write:
        return 0
    doc = ROOT / args.docs / "predictors.md"
    text = doc.read_text() if doc.exists() else f"# Latency predictors\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: BEGIN + "\n" + "\n".join(section) + "\n" + END,
                  text, flags=re.S)
    doc.write_text(text)
    print(f"wrote {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
