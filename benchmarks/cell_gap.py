"""Search-vs-child accuracy gap of the cell space (SNAS Table 1), darts vs snas.

Runs a darts (first order) and a snas cell search on the same data, epochs and
seed, then reports the supernet's validation accuracy and the derived child's
validation accuracy with the shared weights and no retraining (by each mode's
own derivation rule, and by the other rule), the final mean edge entropy and
the child's cost, and the child's accuracy when trained from scratch
(``--retrain-epochs``, hwnas.train). Writes a markdown table, the entropy plot over training, the
genotypes and a drawing of each derived cell.

    .venv/bin/python benchmarks/cell_gap.py                    # both modes, embedded digits
    .venv/bin/python benchmarks/cell_gap.py --modes darts      # one mode (runs are resumable)
    .venv/bin/python benchmarks/cell_gap.py --report-only      # table + plots from finished runs

Reference (SNAS paper, CIFAR-10): DARTS 87.7% -> 54.7%, SNAS 88.5% -> 90.7%.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path


from hwnas.cells.draw import draw_genotype, plot_entropy
from hwnas.cells.genotype import network_cost
from hwnas.cells.search import CellSearchConfig, search_cells
from hwnas.threads import use_torch_threads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modes", default="darts,snas", help="comma-separated: darts, snas (default both)")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=8)
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--limit-val", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--out", default="runs/cell_gap", help="run folders (resumable)")
    parser.add_argument("--docs", default="docs/cells", help="where the table, plot, genotypes and drawings go")
    parser.add_argument("--retrain-epochs", type=int, default=5,
                        help="also train each derived child from scratch for this many epochs (0: skip)")
    parser.add_argument("--report-only", action="store_true", help="only collect finished runs")
    args = parser.parse_args()
    use_torch_threads(args.threads)
    out, docs = Path(args.out), Path(args.docs)
    space_params = {"layers": args.layers, "channels": args.channels, "resolution": args.resolution}
    modes = ["darts", "snas"] if args.report_only else args.modes.split(",")

    results = {}
    for mode in modes:
        cfg = CellSearchConfig(mode=mode, space_params=space_params, dataset=args.dataset, epochs=args.epochs,
                               batch_size=args.batch_size, limit_train=args.limit_train, limit_val=args.limit_val,
                               seed=args.seed, out=str(out / mode), resume=True)
        if args.report_only and not (out / mode / "gap.json").exists():
            print(f"{mode}: no finished run in {out / mode}", file=sys.stderr)
            continue
        t0 = time.time()
        results[mode] = search_cells(cfg)
        print(f"{mode}: {time.time() - t0:.0f} s")
    if not results:
        return 1

    docs.mkdir(parents=True, exist_ok=True)
    rows = ["| mode | supernet val acc | child val acc (own rule) | child val acc (other rule) | "
            "edge entropy normal / reduce | child MFLOPs | child params | search s | child retrained val acc |",
            "|---|---|---|---|---|---|---|---|---|"]
    for mode, r in results.items():
        other = "snas" if mode == "darts" else "darts"
        cost = network_cost(r.genotype)
        seconds = sum(h["seconds"] for h in r.history)
        retrained = "-"
        if args.retrain_epochs:
            from hwnas.cells.deploy import train_genotype
            from hwnas.data import load_dataset

            splits = load_dataset(args.dataset, args.resolution, seed=args.seed, limit_train=args.limit_train,
                                  limit_val=args.limit_val)
            trained = train_genotype(r.genotype, splits, epochs=args.retrain_epochs, seed=args.seed,
                                     out_dir=out / mode / "retrain", resume=True, progress=False)
            retrained = f"{trained.val_acc:.3f} ({args.retrain_epochs} ep)"
        rows.append(f"| {mode} | {r.supernet_acc:.3f}{f' ± {r.supernet_std:.3f}' if r.supernet_std else ''} | {r.child_acc[mode]:.3f} | {r.child_acc[other]:.3f} ({other}) "
                    f"| {r.history[-1]['entropy_normal']:.3f} / {r.history[-1]['entropy_reduce']:.3f} "
                    f"| {cost.flops / 1e6:.2f} | {cost.params} | {seconds:.0f} | {retrained} |")
        r.genotype.save(docs / f"genotype-{mode}.json")
        draw_genotype(r.genotype, docs / f"cells-{mode}.png", title=mode)
        shutil.copy(r.out_dir / "gap.json", docs / f"gap-{mode}.json")
    plot_entropy({m: r.entropy for m, r in results.items()}, docs / "entropy.png")
    table = "\n".join(rows)
    setup = (f"dataset {args.dataset}, {args.epochs} epochs, batch {args.batch_size}, layers {args.layers}, "
             f"channels {args.channels}, resolution {args.resolution}, seed {args.seed}")
    (docs / "gap_table.md").write_text(f"{setup}\n\n{table}\n")
    print(setup)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
