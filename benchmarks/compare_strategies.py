"""Compare the search strategies on one space, dataset and latency budget.

All sample-based strategies get the same number of evaluations and score
architectures with the same evaluator: ``--evaluator proxy`` (default) trains
each child briefly from scratch; ``--evaluator oneshot`` trains one
weight-entangled supernet once with the sandwich rule (shared by every
strategy) and recalibrates BN per child. Accuracy is on the validation split. Latency comes from ``--predictor`` or,
without one, the search's analytic roofline proxy. Gradient strategies
(``hwnas.search.run_search``, ``--gradient proxyless darts snas``) run their own
supernet search under the same budget; their derived architecture is scored by
the same evaluator so every row's accuracy means the same thing.

Reported per run (strategy x seed): best validation accuracy found within the
budget, its latency, evaluations needed to first reach it, how many evaluated
children were within the budget, and wall time (the summed evaluation time for
the sample-based strategies; supernet search plus the scoring of its child for
the gradient ones). With several seeds a second table gives per strategy the
mean over seeds (and the min-max) of the best accuracy, evaluations to it and
wall time per run. ``--plot`` draws the best accuracy within the budget so far
against evaluations. Every run is resumable (re-run the same command); results
go to ``--out`` as ``results.md`` and ``results.json``.

    nice -n 10 .venv/bin/python benchmarks/compare_strategies.py --evaluations 10 --budget-ms 5.5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


from hwnas.arch import architecture_of
from hwnas.data import load_dataset
from hwnas.search.latency import load_latency_predictor
from hwnas.spaces import get_space
from hwnas.strategies import STRATEGIES, make_strategy
from hwnas.strategies import supernet_bridge as bridge
from hwnas.strategies.evaluators import CostModel, Objective, ProxyEvaluator
from hwnas.strategies.runner import best_record, evaluations_to_best, search_loop, write_results
from hwnas.threads import use_torch_threads


def _cached(path: Path, compute):
    """JSON result of ``compute()``, computed once and kept in ``path`` (resumable benchmark)."""
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")
    return value


def best_so_far(records: list[dict]) -> list[float | None]:
    """After each evaluation: the best accuracy within the budget so far (None before the first such child)."""
    curve, best = [], None
    for r in records:
        if r.get("feasible", True) and r.get("accuracy") is not None:
            best = r["accuracy"] if best is None else max(best, r["accuracy"])
        curve.append(best)
    return curve


def _spread(values: list[float], fmt: str) -> str:
    """``mean`` of the values, with ``(min-max)`` when there are several."""
    mean = sum(values) / len(values)
    return format(mean, fmt) + (f" ({min(values):{fmt}}-{max(values):{fmt}})" if len(values) > 1 else "")


def summary_table(rows: list[dict]) -> list[str]:
    """Markdown table: per strategy, the mean over its seeds (min-max) of best accuracy, evaluations to it, wall time."""
    lines = ["| strategy | seeds with a child within budget | best val acc, mean (min-max) | its latency (ms), mean "
             "| evaluations to reach it, mean | wall time per run (s), mean |", "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["strategy"] for r in rows):
        runs = [r for r in rows if r["strategy"] == name]
        found = [r for r in runs if r["best_acc"] is not None]
        to_best = [r["evals_to_best"] for r in found if r["evals_to_best"] is not None]
        acc = _spread([r["best_acc"] for r in found], ".4f") if found else "none"
        lat = f"{sum(r['latency_ms'] for r in found) / len(found):.3f}" if found else "-"
        evals = _spread(to_best, ".1f") if to_best else "-"
        wall = _spread([r["seconds"] for r in runs], ".0f")
        lines.append(f"| {name} | {len(found)}/{len(runs)} | {acc} | {lat} | {evals} | {wall} |")
    return lines


def plot_curves(rows: list[dict], path: Path, title: str) -> None:
    """Best accuracy within the budget so far vs evaluations (one line per run); gradient children as dotted lines."""
    from hwnas.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colors, styles = {}, ["-", "--", ":", "-."]
    seeds = sorted({r["seed"] for r in rows})
    for r in rows:
        color = colors.setdefault(r["strategy"], f"C{len(colors)}")
        label = r["strategy"] if r["seed"] == seeds[0] else None
        style = styles[seeds.index(r["seed"]) % len(styles)]
        if r.get("best_so_far"):
            xs = range(1, len(r["best_so_far"]) + 1)
            ys = [float("nan") if v is None else v for v in r["best_so_far"]]
            ax.plot(xs, ys, style, color=color, label=label, drawstyle="steps-post")
        elif r["best_acc"] is not None:
            ax.axhline(r["best_acc"], color=color, linestyle=":", linewidth=1, label=label)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best val acc within budget so far")
    ax.set_title(title + (f" (line style = seed {', '.join(map(str, seeds))})" if len(seeds) > 1 else ""), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def scaled_options(evaluations: int) -> dict:
    """Population / beam sized to the evaluation budget (the defaults suit 100+ evaluations)."""
    population = min(16, max(4, evaluations // 3))
    return {"population": population, "sample_size": max(2, population // 4), "beam": min(8, max(2, evaluations // 4))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--space", default="proxyless-tiny")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--limit-val", type=int, default=None)
    p.add_argument("--predictor", default=None, help="latency predictor (default: analytic proxy)")
    p.add_argument("--budget-ms", type=float, default=5.5)
    p.add_argument("--over-budget", choices=("penalty", "reject"), default="penalty")
    p.add_argument("--evaluations", type=int, default=20)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--gradient", nargs="*", default=["proxyless"], help="gradient modes to add (none: empty)")
    p.add_argument("--evaluator", choices=("oneshot", "proxy"), default="proxy")
    p.add_argument("--supernet-steps", type=int, default=300, help="oneshot: sandwich-rule supernet training steps")
    p.add_argument("--proxy-steps", type=int, default=30, help="proxy: training steps per child (one epoch)")
    p.add_argument("--proxy-lr", type=float, default=0.1)
    p.add_argument("--proxy-width-mult", type=float, default=None, help="proxy: train narrower copies")
    p.add_argument("--gradient-epochs", type=int, default=6, help="gradient: epochs (2 of them weight warm-up)")
    p.add_argument("--gradient-steps", type=int, default=20, help="gradient: steps per epoch")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/benchmarks/strategies")
    p.add_argument("--plot", default=None, help="write the best-so-far curves to this PNG")
    args = p.parse_args(argv)
    use_torch_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    space = get_space(args.space)
    splits = load_dataset(args.dataset, space.params["resolution"], seed=0, limit_train=args.limit_train,
                          limit_val=args.limit_val)
    if args.evaluator == "oneshot":
        supernet_path = out / bridge.SUPERNET

        def train():
            t0 = time.time()
            net = bridge.train_supernet(space, splits, steps=args.supernet_steps, batch_size=args.batch_size)
            bridge.save_supernet(net, supernet_path)
            return {"seconds": round(time.time() - t0, 1), "steps": args.supernet_steps}

        info = _cached(out / "supernet.json", train)
        evaluator = bridge.oneshot_evaluator(supernet_path, space, splits, batch_size=args.batch_size)
        how = f"one-shot evaluator on a supernet trained {info['steps']} sandwich-rule steps ({info['seconds']} s)"
    else:
        evaluator = ProxyEvaluator(splits, epochs=1, max_steps=args.proxy_steps, lr=args.proxy_lr,
                                   batch_size=args.batch_size, width_mult=args.proxy_width_mult)
        how = (f"proxy evaluator: each child trained {args.proxy_steps} steps (batch {args.batch_size}, "
               f"lr {args.proxy_lr:g}, cosine) from scratch"
               + (f" at width x{args.proxy_width_mult:g}" if args.proxy_width_mult else ""))
    predictor, source = load_latency_predictor(space, args.predictor)  # every stage width priced
    objective = Objective(evaluator, CostModel(predictor, "ms"), args.budget_ms, over_budget=args.over_budget)

    rows = []
    for seed in args.seeds:
        for name in args.strategies:
            run_dir = out / f"{name}-s{seed}"
            t0 = time.time()
            records = search_loop(make_strategy(name, space, seed=seed, **scaled_options(args.evaluations)),
                                  objective, args.evaluations, run_dir, resume=True)
            write_results(records, run_dir, space, objective, title=f"{name} on {space.name}, seed {seed}")
            best = best_record(records)
            rows.append({"strategy": name, "seed": seed, "evaluations": len(records),
                         "best_acc": best and best["accuracy"], "latency_ms": best and best["latency_ms"],
                         "evals_to_best": evaluations_to_best(records),
                         "within_budget": sum(1 for r in records if r.get("feasible", True)),
                         "seconds": round(sum(r["seconds"] for r in records), 1),
                         "loop_seconds_this_call": round(time.time() - t0, 1),
                         "best_so_far": best_so_far(records)})
            print(json.dumps(rows[-1]), flush=True)
        for mode in args.gradient:
            run_dir = out / f"gradient-{mode}-s{seed}"

            def search():
                from hwnas.search import SearchConfig, run_search

                t0 = time.time()
                result = run_search(SearchConfig(space=args.space, dataset=args.dataset, predictor=args.predictor,
                                                 budget_ms=args.budget_ms, mode=mode, epochs=args.gradient_epochs,
                                                 warmup_epochs=max(1, args.gradient_epochs // 3),
                                                 batch_size=args.batch_size, max_steps=args.gradient_steps,
                                                 limit_train=args.limit_train, limit_val=args.limit_val, seed=seed,
                                                 out=str(run_dir), resume=True, progress=True,
                                                 threads=args.threads))
                return {"choices": result.summary["choices"], "stage_widths": result.summary.get("stage_widths"),
                        "seconds": round(time.time() - t0, 1)}

            found = _cached(run_dir / "benchmark.json", search)
            widths = found.get("stage_widths")
            record = objective(architecture_of(space.at_widths(widths) if widths else space, found["choices"]))
            rows.append({"strategy": f"gradient-{mode}", "seed": seed, "evaluations": 1,
                         "best_acc": record["accuracy"] if record["feasible"] else None,
                         "latency_ms": record["latency_ms"], "evals_to_best": None,
                         "within_budget": int(record["feasible"]), "search_seconds": found["seconds"],
                         "score_seconds": record["seconds"], "seconds": round(found["seconds"] + record["seconds"], 1)})
            print(json.dumps(rows[-1]), flush=True)

    lines = [f"space {space.name}, dataset {splits.name} ({len(splits.train)} train / {len(splits.val)} val), "
             f"budget {args.budget_ms:g} ms ({source}, {args.over_budget} above it), {args.evaluations} evaluations per sample-based run, "
             f"{how}, {args.threads} torch thread(s), strategy options {scaled_options(args.evaluations)}", "",
             "| strategy | seed | evaluations | within budget | best val acc within budget | its latency (ms) "
             "| evaluations to reach it | wall time (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = "none" if r["best_acc"] is None else f"{r['best_acc']:.4f}"
        lat = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.3f}"
        lines.append(f"| {r['strategy']} | {r['seed']} | {r['evaluations']} | {r['within_budget']} | {acc} | {lat} | "
                     f"{r['evals_to_best'] or '-'} | {r['seconds']} |")
    if len(args.seeds) > 1:
        lines += ["", f"Mean over seeds {', '.join(map(str, args.seeds))}:", ""] + summary_table(rows)
    if args.plot:
        plot_curves(rows, Path(args.plot), f"{space.name}, {splits.name}, budget {args.budget_ms:g} ms")
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "evaluator": how, "rows": rows},
                                                  indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
