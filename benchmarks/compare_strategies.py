"""Compare the search strategies on one space, dataset and latency budget.

All sample-based strategies get the same number of evaluations and score
architectures with the same one-shot evaluator: one supernet trained once with
uniform single paths (shared by every strategy), BN statistics recalibrated per
child, accuracy on the validation split. Latency comes from ``--predictor`` or,
without one, the search's analytic roofline proxy. Gradient strategies
(``hwnas.search.run_search``, ``--gradient proxyless darts snas``) run their own
supernet search under the same budget; their derived architecture is scored by
the same one-shot evaluator so every row's accuracy means the same thing.

Reported per row: best validation accuracy found within the budget, its
latency, evaluations needed to first reach it, and wall time (evaluation time
for the sample-based strategies, search time for the gradient ones). Every run
is resumable (re-run the same command); results go to ``--out`` as
``results.md`` and ``results.json``.

    nice -n 10 .venv/bin/python benchmarks/compare_strategies.py --evaluations 20 --budget-ms 5.5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from hwnas.arch import architecture_of
from hwnas.data import load_dataset
from hwnas.spaces import get_space
from hwnas.strategies import STRATEGIES, make_strategy
from hwnas.strategies import supernet_bridge as bridge
from hwnas.strategies.evaluators import CostModel, Objective
from hwnas.strategies.runner import best_record, evaluations_to_best, search_loop, write_results


def _cached(path: Path, compute):
    """JSON result of ``compute()``, computed once and kept in ``path`` (resumable benchmark)."""
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2) + "\n")
    return value


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
    p.add_argument("--supernet-steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/benchmarks/strategies")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    space = get_space(args.space)
    splits = load_dataset(args.dataset, space.params["resolution"], seed=0, limit_train=args.limit_train,
                          limit_val=args.limit_val)
    supernet_path = out / bridge.SUPERNET

    def train():
        t0 = time.time()
        net = bridge.train_uniform(space, splits, steps=args.supernet_steps, batch_size=args.batch_size)
        bridge.save_supernet(net, supernet_path)
        return {"seconds": round(time.time() - t0, 1), "steps": args.supernet_steps}

    supernet_info = _cached(out / "supernet.json", train)
    evaluator = bridge.oneshot_evaluator(supernet_path, space, splits, batch_size=args.batch_size)
    from hwnas.search.latency import AnalyticProxy

    if args.predictor:
        from hwnas.predictors import load_predictor

        predictor, source = load_predictor(args.predictor, space=space.name), args.predictor
    else:
        predictor, source = AnalyticProxy(), AnalyticProxy().device["name"]
    objective = Objective(evaluator, CostModel(predictor, "ms"), args.budget_ms, over_budget=args.over_budget)

    rows = []
    for seed in args.seeds:
        for name in args.strategies:
            run_dir = out / f"{name}-s{seed}"
            t0 = time.time()
            records = search_loop(make_strategy(name, space, seed=seed), objective, args.evaluations, run_dir,
                                  resume=True)
            write_results(records, run_dir, space, objective, title=f"{name} on {space.name}, seed {seed}")
            best = best_record(records)
            rows.append({"strategy": name, "seed": seed, "evaluations": len(records),
                         "best_acc": best and best["accuracy"], "latency_ms": best and best["latency_ms"],
                         "evals_to_best": evaluations_to_best(records),
                         "seconds": round(sum(r["seconds"] for r in records), 1),
                         "loop_seconds_this_call": round(time.time() - t0, 1)})
            print(json.dumps(rows[-1]), flush=True)
        for mode in args.gradient:
            run_dir = out / f"gradient-{mode}-s{seed}"

            def search():
                from hwnas.search import SearchConfig, run_search

                t0 = time.time()
                result = run_search(SearchConfig(space=args.space, dataset=args.dataset, predictor=args.predictor,
                                                 budget_ms=args.budget_ms, mode=mode, epochs=6, warmup_epochs=2,
                                                 batch_size=args.batch_size, max_steps=20,
                                                 limit_train=args.limit_train, limit_val=args.limit_val, seed=seed,
                                                 out=str(run_dir), resume=True, progress=True,
                                                 threads=args.threads))
                return {"choices": result.summary["choices"], "seconds": round(time.time() - t0, 1)}

            found = _cached(run_dir / "benchmark.json", search)
            record = objective(architecture_of(space, found["choices"]))
            rows.append({"strategy": f"gradient-{mode}", "seed": seed, "evaluations": 1,
                         "best_acc": record["accuracy"] if record["feasible"] else None,
                         "latency_ms": record["latency_ms"], "evals_to_best": None, "seconds": found["seconds"]})
            print(json.dumps(rows[-1]), flush=True)

    lines = [f"space {space.name}, dataset {splits.name} ({len(splits.train)} train / {len(splits.val)} val), "
             f"budget {args.budget_ms:g} ms ({source}, {args.over_budget} above it), {args.evaluations} evaluations per sample-based run, "
             f"one-shot evaluator on a supernet trained {supernet_info['steps']} uniform-path steps "
             f"({supernet_info['seconds']} s), {args.threads} torch thread(s)", "",
             "| strategy | seed | evaluations | best val acc within budget | its latency (ms) | evaluations to reach it "
             "| wall time (s) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = "none" if r["best_acc"] is None else f"{r['best_acc']:.4f}"
        lat = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.3f}"
        lines.append(f"| {r['strategy']} | {r['seed']} | {r['evaluations']} | {acc} | {lat} | "
                     f"{r['evals_to_best'] or '-'} | {r['seconds']} |")
    text = "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "supernet": supernet_info, "rows": rows},
                                                  indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
