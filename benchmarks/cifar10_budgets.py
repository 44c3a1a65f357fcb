"""CIFAR-10 at two latency budgets: searched model vs best of N random vs a width-scaled MobileNetV2.

For each budget (ms, predicted on this CPU's LiteRT fp32 1-thread predictor):

(a) searched   ProxylessNAS gradient search (``hwnas.search``) under the budget;
(b) random     the best (validation accuracy) of N random architectures whose
               predicted latency is under the budget;
(c) mbv2       the uniform MobileNetV2-style network (k3_e6 at every position,
               no skipped blocks) with ``width_mult`` bisected so its predicted
               latency meets the budget.

All are trained with the same recipe and epochs (``hwnas.train``), exported to
TFLite fp32 (self-checked against PyTorch) and timed with LiteRT, 1 thread,
pinned to one core. Results go to ``--out/results.jsonl`` (one line per model;
re-running skips models already there) and a Markdown table to ``--table``.

The size is configurable (images, epochs, N) so a reduced version fits a small
CPU. Example (what docs/cifar10.md reports)::

    nice -n 10 .venv/bin/python benchmarks/cifar10_budgets.py --predictor P.json \
        --limit-train 3000 --limit-val 1000 --epochs 3 --random 3 --search-epochs 2 --search-steps 20
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from hwnas.arch import Architecture, architecture_of, sample_architecture
from hwnas.data import load_dataset
from hwnas.errors import HwnasError
from hwnas.pipeline import default_core, export_trained, measure_file, stack_images
from hwnas.predictors import load_predictor
from hwnas.progress import progress_bar
from hwnas.search.latency import latency_model
from hwnas.spaces import get_space
from hwnas.train import TrainConfig, train_model

DATASET = "../shared/datasets/cifar10-train.tar.gz"  # relative to the repository root; or --dataset PATH


def predictor_for(path: str, space):
    """The predictor, with the lookup table's fallback regressor on (scaled widths are not in the table)."""
    pred = load_predictor(path)
    if getattr(pred, "fallback_name", None):
        pred.enable_fallback()
    return pred


def random_under_budget(space, pred, budget: float, n: int, seed: int) -> list[Architecture]:
    rng, found, seen = random.Random(seed), [], set()
    for _ in range(20000):
        arch = sample_architecture(space, rng)
        if tuple(arch.choices) in seen:
            continue
        seen.add(tuple(arch.choices))
        if pred.predict_ops(arch.ops()) <= budget:
            found.append(arch)
            if len(found) == n:
                return found
    raise HwnasError(f"found only {len(found)} random architectures under {budget} ms")


def mbv2_at_budget(space_name: str, params: dict, pred, budget: float) -> Architecture:
    """Uniform k3_e6 network, width bisected (to 1/64 steps) so the predicted latency is <= budget."""
    def arch_at(width: float) -> Architecture:
        space = get_space(space_name, dict(params, width_mult=width))
        return architecture_of(space, ["k3_e6"] * len(space.positions))

    lo, hi = 0.1, 3.0
    if pred.predict_ops(arch_at(hi).ops()) <= budget:
        return arch_at(hi)
    if pred.predict_ops(arch_at(lo).ops()) > budget:
        raise HwnasError(f"even width 0.1 of the uniform network is over {budget} ms")
    for _ in range(8):
        mid = round((lo + hi) / 2, 4)
        if pred.predict_ops(arch_at(mid).ops()) <= budget:
            lo = mid
        else:
            hi = mid
    return arch_at(lo)


def searched(space, args, budget: float, out: Path) -> Architecture:
    from hwnas.search import SearchConfig, run_search

    result = run_search(SearchConfig(
        space=space.name, space_params=space_overrides(space), dataset=args.dataset, predictor=args.predictor,
        budget_ms=budget, mode=args.mode, epochs=args.search_epochs, warmup_epochs=max(1, args.search_epochs // 3),
        batch_size=args.batch_size, max_steps=args.search_steps, limit_train=args.limit_train,
        limit_val=args.limit_val, seed=args.seed, out=str(out), resume=True, device="cpu", workers=args.workers))
    return result.arch


def space_overrides(space) -> dict:
    from hwnas.spaces import PRESETS

    return {k: v for k, v in space.params.items() if PRESETS[space.name].get(k) != v}


def evaluate_model(arch: Architecture, label: str, args, pred, budget: float, out: Path, splits, plain,
                   converter) -> dict:
    """Train with the shared recipe, export fp32 TFLite (self-checked), time it; one result row."""
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                      seed=args.seed, num_workers=args.workers)
    t0 = time.time()
    result = train_model(arch, splits, config=cfg, out_dir=out / "train", resume=True, progress=args.progress)
    exported = export_trained(arch, result.model, out / "export", stack_images(plain.val, 50, seed=1),
                              stack_images(plain.train, 50, seed=2), quants=("fp32",), onnx=False,
                              progress=lambda *_: None, converter=converter)
    timing = measure_file(exported.get("tflite", "fp32").path, "tflite", 1, default_core())
    cost = arch.cost()
    return {"budget_ms": budget, "model": label, "choices": arch.choices, "space_params": space_overrides(arch.space),
            "val_acc": result.val_acc, "measured_ms": round(timing.median_ms, 4),
            "spread_ms": round(timing.spread_ms, 4), "predicted_ms": round(pred.predict_ops(arch.ops()), 4),
            "mflops": round(cost.flops / 1e6, 3), "mparams": round(cost.params / 1e6, 4),
            "seconds": round(time.time() - t0, 1)}


def run_budget(budget, space, args, pred, out, splits, plain, converter, rows, done, results_path) -> None:
    """The three kinds of model at one budget; rows already in results.jsonl are skipped."""
    tag = f"b{budget:g}"
    jobs = [("searched", lambda: searched(space, args, budget, out / tag / "search"))]
    jobs.append(("mbv2-uniform", lambda: mbv2_at_budget(space.name, space_overrides(space), pred, budget)))
    seed = args.seed + 1000 * int(budget * 1000)  # a different random sample at each budget
    for i, arch in enumerate(random_under_budget(space, pred, budget, args.random, seed)):
        jobs.append((f"random-{i}", lambda a=arch: a))
    for label, make in progress_bar(jobs, desc=f"budget {budget:g} ms", enabled=args.progress):
        if (budget, label) in done:
            continue
        arch = make()
        row = evaluate_model(arch, label, args, pred, budget, out / tag / label, splits, plain, converter)
        print(json.dumps(row))
        with open(results_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        rows.append(row)
        done.add((budget, label))


def write_table(rows: list[dict], path: Path, args) -> None:
    lines = ["| budget ms | model | val acc | measured ms (LiteRT fp32, 1 thread) | predicted ms | MFLOPs | "
             "M params | within budget +5% |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["budget_ms"], r["model"])):
        ok = "yes" if r["measured_ms"] <= 1.05 * r["budget_ms"] else "no"
        lines.append(f"| {r['budget_ms']:.3f} | {r['model']} | {r['val_acc']:.2%} | {r['measured_ms']:.3f} ± "
                     f"{r['spread_ms']:.3f} | {r['predicted_ms']:.3f} | {r['mflops']:.2f} | {r['mparams']:.3f} | {ok} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--predictor", required=True, help="this CPU's LiteRT fp32 1-thread predictor (.json)")
    p.add_argument("--dataset", default=DATASET, help=f"CIFAR-10 archive or folder (default {DATASET})")
    p.add_argument("--space", default="proxyless-tiny")
    p.add_argument("--budgets", default="0.25,0.5",
                   help="two budgets: fractions (0..1) of the way from the fastest to the slowest predicted "
                        "architecture, or ms values with an 'ms' suffix (e.g. 0.8ms,1.5ms)")
    p.add_argument("--limit-train", type=int, default=5000)
    p.add_argument("--limit-val", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--random", type=int, default=10, help="random architectures per budget (default 10)")
    p.add_argument("--mode", default="proxyless")
    p.add_argument("--search-epochs", type=int, default=6)
    p.add_argument("--search-steps", type=int, default=None, help="search steps per epoch")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0: torch's default)")
    p.add_argument("--out", default="runs/cifar10_budgets")
    p.add_argument("--table", default="runs/cifar10_budgets/table.md")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    space = get_space(args.space, {"num_classes": 10})
    pred = predictor_for(args.predictor, space)
    lat = latency_model(space, args.predictor)
    budgets = []
    for item in args.budgets.split(","):
        item = item.strip()
        budgets.append(float(item[:-2]) if item.endswith("ms")
                       else round(lat.min_ms + float(item) * (lat.max_ms - lat.min_ms), 4))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    rows = [json.loads(x) for x in results_path.read_text().splitlines()] if results_path.exists() else []
    done = {(r["budget_ms"], r["model"]) for r in rows}

    res = space.params["resolution"]
    splits = load_dataset(args.dataset, res, seed=args.seed, limit_train=args.limit_train, limit_val=args.limit_val)
    plain = load_dataset(args.dataset, res, seed=args.seed, augment=False, limit_train=args.limit_train,
                         limit_val=args.limit_val)
    print(f"{splits.name}: {len(splits.train)} train / {len(splits.val)} val; budgets {budgets} ms "
          f"(space {lat.min_ms:.3f}-{lat.max_ms:.3f} ms predicted)")

    from hwnas.export.tflite import TFLiteConverter

    converter = TFLiteConverter(log_path=out / "tflite-worker.log").start()  # one TensorFlow import for all
    try:
        for budget in budgets:
            run_budget(budget, space, args, pred, out, splits, plain, converter, rows, done, results_path)
    finally:
        converter.close()
    # best of the random ones per budget, as its own row
    summary = [r for r in rows if not r["model"].startswith("random-")]
    for budget in budgets:
        randoms = [r for r in rows if r["budget_ms"] == budget and r["model"].startswith("random-")]
        if randoms:
            best = max(randoms, key=lambda r: r["val_acc"])
            summary.append(dict(best, model=f"best of {len(randoms)} random ({best['model']})"))
    write_table(summary, Path(args.table), args)
    print(Path(args.table).read_text())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HwnasError as exc:
        print(f"cifar10_budgets: error: {exc}", file=sys.stderr)
        sys.exit(2)
