"""Budget sweep: gradient search at several latency budgets, derived latency vs budget.

    .venv/bin/python benchmarks/budget_sweep.py --predictor predictors/<device>-tflite-fp32.json \\
        --budgets 0.4 0.8 1.6 --out runs/sweep

Each budget runs ``hwnas search --fast`` settings on the embedded default
(proxyless-tiny + digits) in ``<out>/b<budget>`` (resumable: a finished budget is
read back, not re-run). Without ``--budgets`` the budgets are 20%, 40% and 60%
of the way from the fastest to the slowest architecture. Writes
``<out>/sweep.md`` (table) and ``<out>/sweep.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main() -> int:
    from hwnas.search import SearchConfig, run_search
    from hwnas.search.latency import latency_model, load_latency_predictor
    from hwnas.spaces import DEFAULT_SPACE, get_space

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=DEFAULT_SPACE)
    parser.add_argument("--predictor", default=None, help="latency predictor (default: analytic proxy)")
    parser.add_argument("--budgets", type=float, nargs="*", default=None, help="budgets in ms")
    parser.add_argument("--mode", default="proxyless")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--warmup-epochs", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/sweep")
    args = parser.parse_args()

    space = get_space(args.space)
    lat = latency_model(space, *load_latency_predictor(space, args.predictor))
    budgets = args.budgets or [round(lat.min_ms + f * (lat.max_ms - lat.min_ms), 3) for f in (0.2, 0.4, 0.6)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for budget in budgets:
        run_dir = out / f"b{budget:g}"
        done = run_dir / "derived.json"
        t0 = time.time()
        if done.exists() and json.loads(done.read_text()).get("epochs_done") == args.epochs:
            summary = json.loads(done.read_text())
        else:
            cfg = SearchConfig(space=args.space, predictor=args.predictor, budget_ms=budget, mode=args.mode,
                               epochs=args.epochs, warmup_epochs=args.warmup_epochs, max_steps=args.max_steps,
                               batch_size=args.batch_size, threads=args.threads, seed=args.seed, out=str(run_dir),
                               resume=True, progress=False)
            summary = run_search(cfg).summary
        rows.append({"budget_ms": budget, **summary, "seconds": round(time.time() - t0, 1)})
        print(f"budget {budget:g} ms -> {summary['predicted_latency_ms']:.4f} ms", file=sys.stderr)

    lines = [f"space {args.space}, mode {args.mode}, latency from {lat.source} (fastest {lat.min_ms:.4f} ms, "
             f"slowest {lat.max_ms:.4f} ms), {args.epochs} epochs ({args.warmup_epochs} warm-up) x "
             f"{args.max_steps} steps, batch {args.batch_size}, seed {args.seed}", "",
             "| budget (ms) | argmax child (ms) | derived (ms) | swaps to fit | within | MFLOPs | M params | "
             "val acc (supernet) | choices |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['budget_ms']:g} | {r['argmax_latency_ms']:.4f} | {r['predicted_latency_ms']:.4f} | "
                     f"{len(r['budget_swaps'])} | {'yes' if r['within_budget'] else 'NO'} | {r['mflops']:.2f} | "
                     f"{r['mparams']:.4f} | {r['val_acc_supernet_child']:.3f} | {' '.join(r['choices'])} |")
    table = "\n".join(lines)
    (out / "sweep.md").write_text(table + "\n")
    print(table)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    b = [r["budget_ms"] for r in rows]
    ax.plot(b, b, "k--", lw=1, label="budget")
    ax.plot(b, [r["argmax_latency_ms"] for r in rows], "o", label="argmax child")
    ax.plot(b, [r["predicted_latency_ms"] for r in rows], "s", label="derived (fitted)")
    ax.set_xlabel("budget (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "sweep.png", dpi=90)
    return 0


if __name__ == "__main__":
    sys.exit(main())
