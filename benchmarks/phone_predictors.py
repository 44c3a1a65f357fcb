"""Held-out evaluation of latency predictors on the public phone measurements of the FBNet space.

For every device column of ``fbnet_cifar100_latency.csv``: fit on the lower
arch_ids, test on the higher ones (rows were measured in order and drift), and
compare (a) the additive per-layer LUT by least squares, (b) FLOPs-linear,
(c) the ``whole_model`` predictor (selected by forward validation on the
training rows only). Writes a markdown table, one predicted-vs-measured PNG per
device, and (``--ship``) the predictor fitted on all rows, with the held-out
figures in its metadata. Resumable: a device whose shipped predictor already
holds an evaluation is read back, not refitted (``--force`` refits).

    .venv/bin/python benchmarks/phone_predictors.py ../shared/phones/fbnet_cifar100_latency.csv \\
        --test-from 3000 --ship predictors/phones --figures docs/phones
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from hwnas.phones import (describe_settings, device_description, device_name, fit_phone_predictor,  # noqa: E402
                          flops_linear, per_layer_baseline, read_phone_csv)
from hwnas.predictors import load_predictor  # noqa: E402
from hwnas.predictors.whole_model import metrics  # noqa: E402
from hwnas.progress import progress_bar  # noqa: E402

LABELS = {"baseline_per_layer_lut": "(a) per-layer LUT, least squares", "flops_linear": "(b) FLOPs-linear",
          "whole_model": "(c) whole_model (ours)"}


def plot(path: Path, name: str, y: np.ndarray, preds: dict, table: dict) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3), sharex=True, sharey=True)
    lo, hi = float(min(y.min(), *(p.min() for p in preds.values()))), float(max(y.max(), *(p.max() for p in preds.values())))
    line = np.array([lo, hi])
    for ax, (key, p) in zip(axes, preds.items()):
        m = table[key]
        ax.scatter(y, p, s=4, alpha=0.35)
        ax.plot(line, line, "k-", lw=0.8)
        ax.fill_between(line, line * 0.9, line * 1.1, color="k", alpha=0.08, label="+-10%")
        ax.set_title(f"{LABELS[key]}\nRMSE {m['rmse_ms']:.2f} ms, +-10% {m['within_10']:.1%}, "
                     f"Spearman {m['spearman']:.3f}", fontsize=9)
        ax.set_xlabel("measured ms")
    axes[0].set_ylabel("predicted ms")
    fig.suptitle(f"{name}: held-out rows (later arch_ids)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def ablation(table, cut: int, devices) -> int:
    """Shared entries without correction or drift: what the loss alone does."""
    from hwnas.predictors.whole_model import fit_whole_model
    from hwnas.spaces import get_space

    space = get_space("fbnet-cifar100")
    for column, y in table.latency.items():
        if devices and device_name(column) not in devices:
            continue
        for robust in (False, True):
            settings = {"robust": robust, "drift_block": 0, "features": (), "alpha": 0.0}
            with threadpool_limits(1):
                p = fit_whole_model(space, table.choices[:cut], y[:cut], {}, settings=settings)
            m = metrics(y[cut:], p.predict_many_choices(table.choices[cut:]))
            print(f"| {device_name(column)} | shared entries, {'huber' if robust else 'least squares'} | "
                  f"{m['rmse_ms']:.3f} | {m['within_5']:.3f} | {m['within_10']:.3f} | {m['spearman']:.4f} |")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--test-from", type=int, default=3000, help="first test row (rows in arch_id order)")
    ap.add_argument("--devices", nargs="*", help="device names (default: all columns)")
    ap.add_argument("--ship", type=Path, help="folder for the predictors fitted on all rows")
    ap.add_argument("--figures", type=Path, default=Path("docs/phones"))
    ap.add_argument("--table", type=Path, help="also write the markdown table here")
    ap.add_argument("--force", action="store_true", help="refit devices already shipped")
    ap.add_argument("--ablation", action="store_true",
                    help="only print the table of shared entries (one per OpSpec) fitted by least squares / Huber")
    args = ap.parse_args(argv)

    table = read_phone_csv(args.csv)
    if args.ablation:
        return ablation(table, args.test_from, args.devices)
    columns = [c for c in table.latency if not args.devices or device_name(c) in args.devices]
    cut = args.test_from
    tr_c, te_c = table.choices[:cut], table.choices[cut:]
    rows = []
    for column in progress_bar(columns, desc="devices", unit="device"):
        name = device_name(column)
        y = table.latency[column]
        shipped = args.ship / f"{name}.json" if args.ship else None
        if shipped and shipped.exists() and not args.force:
            meta = json.loads(shipped.read_text())["meta"]
            evaluation = meta.get("evaluation")
            if evaluation and evaluation["split"].startswith(f"train rows [0, {cut})"):
                # recompute the predictions for the plot: the held-out fit is cheap to redo with its settings
                from hwnas.predictors.whole_model import fit_whole_model
                from hwnas.spaces import get_space

                held = fit_whole_model(get_space("fbnet-cifar100"), tr_c, y[:cut], {"name": name},
                                       settings=evaluation["settings"])
                preds = {"baseline_per_layer_lut": per_layer_baseline("fbnet-cifar100", tr_c, y[:cut], te_c),
                         "flops_linear": flops_linear("fbnet-cifar100", tr_c, y[:cut], te_c),
                         "whole_model": held.predict_many_choices(te_c)}
                metrics_ = {k: metrics(y[cut:], p) for k, p in preds.items()}
                rows.append((name, metrics_, evaluation["settings"]))
                plot(args.figures / f"{name}.png", name, y[cut:], preds, metrics_)
                continue
        with threadpool_limits(1):
            predictor, evaluation = fit_phone_predictor(table.choices, y, device_description(column, Path(args.csv).name),
                                                        test_from=cut)
        preds = evaluation.pop("_predictions")
        rows.append((name, evaluation["metrics"], evaluation["settings"]))
        plot(args.figures / f"{name}.png", name, y[cut:], preds, evaluation["metrics"])
        if shipped:
            if column in ("pixel3_ms", "raspi4_ms"):
                fit = predictor.predict_many_choices(table.choices)
                predictor.meta["exact_sum_check"] = {"rows": len(y), "max_abs_error_ms": float(np.max(np.abs(fit - y)))}
            predictor.save(shipped)
            load_predictor(shipped, space="fbnet-cifar100")  # must load back
    lines = ["| device | predictor | RMSE ms | within +-5% | within +-10% | Spearman |",
             "|---|---|---:|---:|---:|---:|"]
    for name, ms, settings in rows:
        for key in LABELS:
            m = ms[key]
            lines.append(f"| {name} | {LABELS[key]} | {m['rmse_ms']:.3f} | {m['within_5']:.3f} | "
                         f"{m['within_10']:.3f} | {m['spearman']:.4f} |")
    lines.append("")
    lines.append(f"Settings of (c) in this table, selected on rows 0-{cut - 1} (the held-out fit; the shipped "
                 "predictors are refitted on all rows and select again, see `meta.settings` of each file and "
                 "the first line of `hwnas phones fit`): "
                 + "; ".join(f"{n}: {describe_settings(s)}" for n, _, s in rows))
    text = "\n".join(lines)
    print(text)
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
