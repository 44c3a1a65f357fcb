"""Does the supernet rank children as stand-alone training does? (issue 20, Deliver 1)

The weight-entangled supernet is trained with the search's own schedule (``hwnas.search.run_search``: largest
child warm-up, then sandwich + architecture steps at the budget) on the training images of the CIFAR-10
budgets benchmark (``benchmarks/cifar10_budgets.py``: one permutation fixed by ``--seed`` gives 10,000 train /
1,000 selection / 4,000 test images), at every length of ``--lengths``: length L runs ``L x --search-epochs``
epochs of ``--search-steps`` steps with ``L x --search-warmup-epochs`` warm-up epochs (the same schedule
shape, L times the steps). Every length is its own search folder with its per-epoch checkpoint, so a stopped
run continues where it was.

Ground truth: the models of an earlier run of the budgets benchmark whose stand-alone test accuracies are known
(``--truth``, a JSON list of {name, test_acc, predicted_ms, in_band, and either choices + stage_widths or a
.tflite path}; a .tflite is read back into its architecture with :mod:`hwnas.modelgraph`). A model that is not a
child of the supernet (MobileNetV2 at a global width multiplier: wider stem and head) is scored as its nearest
child (same blocks, stage widths with the nearest channel counts) and marked as a proxy.

Every child is scored with inherited weights: its BatchNorm statistics re-estimated on ``--bn-images``
training images (no augmentation), then accuracy on the ranking images: the 1,000 selection images plus
``--extra-images`` more taken from the permutation after train + selection + test (disjoint from the test
images). Scores are appended to ``OUT/scores.jsonl`` as they are made (a rerun skips what is there).

Zero-cost proxies rank the same models beside the supernet (:mod:`hwnas.search.proxies`: MFLOPs, params, memory
access, synflow at initialisation; and the truth file's predicted ms), computed on the network that was trained
(MobileNetV2 at its own width multiplier, not its nearest child). ``--proxies-only`` ranks by the proxies alone:
no dataset, no supernet training (seconds); ``--supernet-scores`` adds the supernet rows of an earlier run
(its ``OUT/scores.jsonl``) to that table.

Report: Kendall tau and Spearman rho (scipy.stats) between each ranker (supernet accuracy at every length, every
proxy) and stand-alone test accuracy, over the in-band children and over all models, the top-3 overlap, a
Markdown table (``OUT/table.md``) and a plot (``OUT/ranking.png``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file from anywhere
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))

from hwnas.errors import HwnasError, run_script  # noqa: E402


if TYPE_CHECKING:
    from hwnas.children import Child

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=None, help="the CIFAR-10 training images (.tar.gz or folder)")
    p.add_argument("--predictor", default=None, help="the latency table the search used (.json)")
    p.add_argument("--proxies-only", action="store_true",
                   help="rank the --truth models by the zero-cost proxies alone (no dataset, no supernet training)")
    p.add_argument("--supernet-scores", default=None, metavar="JSONL",
                   help="with --proxies-only: also rank by the supernet scores of an earlier run (its scores.jsonl)")
    p.add_argument("--truth", default=None, help="JSON list of the stand-alone models and their test accuracy")
    p.add_argument("--truth-run", default=None, metavar="DIR",
                   help="take the truth from a cifar10_budgets.py run folder at --budget (written to OUT/truth.json)")
    p.add_argument("--space", default="proxyless-tiny")
    p.add_argument("--budget", type=float, default=0.5, help="the search's budget, ms (0.5)")
    p.add_argument("--level", type=float, default=1.0, help="the search's session level (1.0)")
    p.add_argument("--lengths", default="1,3",
                   help="supernet lengths, multiples of the search's steps (1,3; none: no supernet)")
    p.add_argument("--search-epochs", type=int, default=6)
    p.add_argument("--search-warmup-epochs", type=int, default=2)
    p.add_argument("--search-steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--weight-sampling", choices=("alpha", "uniform", "band"), default="alpha",
                   help="the child each sandwich weight step trains (hwnas.search.weight_sampling; default alpha, "
                        "the search's own); not alpha: the supernet folders are named supernet-Lx-SAMPLING")
    p.add_argument("--seed", type=int, default=0, help="data permutation and search seed (0)")
    p.add_argument("--train", type=int, default=10000)
    p.add_argument("--selection", type=int, default=1000)
    p.add_argument("--test", type=int, default=4000)
    p.add_argument("--extra-images", type=int, default=2000,
                   help="ranking images beyond the selection split, after train + selection + test (2000)")
    p.add_argument("--bn-images", type=int, default=2048, help="training images to re-estimate BatchNorm (2048)")
    p.add_argument("--train-only", action="store_true", help="train the supernets, score nothing")
    p.add_argument("--evolve", type=int, default=0, metavar="N",
                   help="also derive by supernet accuracy at the longest length: N children of the search's band "
                        "(hwnas.search.derive; scored on 2 BN batches and the first 500 ranking images, the best 5 "
                        "re-scored as the table's models are); 0: off")
    p.add_argument("--short-epochs", type=int, default=0, metavar="E",
                   help="also rank by short stand-alone training: every model trained from scratch E epochs with "
                        "the budgets benchmark's recipe, scored on the selection images (0: off)")
    p.add_argument("--short-jobs", type=int, default=2, help="short trainings at a time, 1 thread each (2)")
    p.add_argument("--out", default="runs/supernet_ranking")
    args = p.parse_args(argv)
    try:
        args.lengths = [] if args.lengths.strip().lower() == "none" else [int(v) for v in args.lengths.split(",")]
    except ValueError:
        raise HwnasError(f"--lengths: {args.lengths!r} is not a comma-separated list of integers") from None
    if not args.proxies_only and (args.dataset is None or args.predictor is None):
        raise HwnasError("--dataset and --predictor are needed to train the supernet (or give --proxies-only)")
    if args.truth and args.truth_run:
        raise HwnasError("give --truth or --truth-run, not both")
    if args.supernet_scores and not args.proxies_only:
        raise HwnasError("--supernet-scores goes with --proxies-only (a training run scores its own supernets)")
    if args.lengths and min(args.lengths) < 1:
        raise HwnasError(f"--lengths must be positive integers or none, got {args.lengths}")
    if not args.lengths and not args.short_epochs and not args.proxies_only:
        raise HwnasError("--lengths none leaves nothing to rank: give --short-epochs E (or --proxies-only)")
    if args.short_epochs < 0 or args.short_jobs < 1:
        raise HwnasError(f"--short-epochs must be 0 or more and --short-jobs at least 1, got {args.short_epochs} "
                         f"and {args.short_jobs}")
    for name in ("search_epochs", "search_steps", "batch_size", "bn_images"):
        if getattr(args, name) < 1:
            raise HwnasError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    return args


def load_data(args, resolution: int):
    """The budgets benchmark's train split (augmented), and the plain BN and ranking images."""
    from torch.utils.data import Subset

    from cifar10_budgets import Data

    data = Data(SimpleNamespace(dataset=args.dataset, train=args.train, selection=args.selection,
                                test=args.test, seed=args.seed), resolution)
    n = len(data.plain)
    start = args.train + args.selection + args.test
    if start + args.extra_images > n:
        raise HwnasError(f"{args.dataset}: {n} images, too few for {args.extra_images} --extra-images")
    import numpy as np

    order = np.random.default_rng(args.seed).permutation(n).tolist()
    assert order[:args.train] == data.indices["train"]  # the same permutation as the budgets benchmark
    rank_idx = data.indices["selection"] + order[start:start + args.extra_images]
    bn_idx = data.indices["train"][:args.bn_images]
    return data, Subset(data.plain, bn_idx), Subset(data.plain, rank_idx)


def train_supernet(args, data, length: int):
    """The supernet of one length (trained now, or loaded from its finished checkpoint)."""
    from hwnas.search import SearchConfig, run_search

    cfg = SearchConfig(space=args.space, dataset=args.dataset, predictor=args.predictor, budget_ms=args.budget,
                       latency_level=args.level, epochs=length * args.search_epochs,
                       warmup_epochs=length * args.search_warmup_epochs, batch_size=args.batch_size,
                       max_steps=args.search_steps, seed=args.seed, weight_sampling=args.weight_sampling,
                       out=str(Path(args.out) / supernet_folder(args, length)),
                       resume=True, progress=True, device="cpu", threads=1)
    t0 = time.time()
    res = run_search(cfg, splits=data.splits())
    return res, time.time() - t0


def load_truth(path: str, space) -> list[dict]:
    """The stand-alone models: each with its child of the supernet (``proxy``: the nearest child, not the model)."""
    from hwnas.arch import architecture_of
    from hwnas.jsonfile import read_json
    from hwnas.children import child_of

    rows = read_json(path, "ground-truth file")
    if not isinstance(rows, list) or not rows:
        raise HwnasError(f"{path}: expected a JSON list of models")
    for i, row in enumerate(rows):
        missing = [k for k in ("name", "test_acc", "in_band") if k not in row]
        if missing:
            raise HwnasError(f"{path}: model {i} has no field {missing[0]!r}")
        if "width_mult" in row:  # MobileNetV2: k3_e6 everywhere at the stage widths nearest its channels
            row["stage_widths"] = nearest_stage_widths(space, row["width_mult"])
            row["choices"] = ["k3_e6"] * len(space.positions)
            row["proxy"] = True
        try:
            arch = architecture_of(space.at_widths(row["stage_widths"]), row["choices"])
            row["child"] = child_of(space, arch)
        except (KeyError, HwnasError) as exc:
            raise HwnasError(f"{path}: model {row['name']!r}: {exc}") from None
        row.setdefault("proxy", False)
    return rows


def truth_from_run(run: Path, budget_ms: float, space) -> list[dict]:
    """The ground-truth rows of one budget of a ``cifar10_budgets.py`` run folder (``--truth-run``).

    Every model trained from scratch at that budget: the random children, the searched children (one per search
    seed), the zero-cost proxy's children, and the MobileNetV2 widths of the budget's ladder (not children of
    the supernet: out of band). ``test_acc`` is the mean over the training seeds that finished (``train_seeds``
    says how many); ``predicted_ms`` is the run's predictor at the run's session level for that budget.
    """
    from hwnas.arch import architecture_of
    from hwnas.jsonfile import read_json
    from hwnas.search.latency import load_latency_predictor

    run = Path(run)
    tag = f"{budget_ms:g}ms"
    settings = read_json(run / "settings.json", "benchmark settings")
    levels = read_json(run / "levels.json", "session levels")
    if tag not in levels:
        raise HwnasError(f"{run / 'levels.json'}: no session level for budget {tag} (has {', '.join(levels)})")
    predictor, _ = load_latency_predictor(space, settings["predictor"], quiet=True, level=levels[tag]["level"])
    ladder = read_json(run / f"ladder-{tag}.json", "MobileNetV2 ladder")
    at = re.escape(tag)
    patterns = {"random": rf"random\d+-{at}", "searched": rf"searched-{at}-seed\d+",
                "proxy": rf"proxy-\w+-{at}-seed\d+", "mbv2": r"mbv2-w([\d.]+)"}  # mbv2-w1.125-e11: another recipe
    groups: dict[str, list[Path]] = {}
    kind_of: dict[str, str] = {}
    if not (run / "jobs").is_dir():
        raise HwnasError(f"{run}: no jobs/ folder (not a cifar10_budgets.py run folder?)")
    for job in sorted((run / "jobs").iterdir()):
        base = re.sub(r"-t\d+$", "", job.name)  # extra training seeds join their model
        for kind, pattern in patterns.items():
            m = re.fullmatch(pattern, base)
            if m and (kind != "mbv2" or m.group(1) in ladder["widths"]) and (job / "result.json").exists():
                groups.setdefault(base, []).append(job)
                kind_of[base] = kind
    rows = []
    for base, jobs in groups.items():
        arch_json = read_json(jobs[0] / "job.json", "job")["arch"]
        accs = [read_json(j / "result.json", "job result")["test_acc_torch"] for j in jobs]
        row = {"name": base, "test_acc": sum(accs) / len(accs), "train_seeds": len(accs)}
        if kind_of[base] == "mbv2":
            w = base[len("mbv2-w"):]
            row.update(kind="mbv2", width_mult=float(w), in_band=False, predicted_ms=ladder["widths"][w]["predicted_ms"])
        else:
            widths = arch_json["space_params"]["stage_widths"]
            arch = architecture_of(space.at_widths(widths), arch_json["choices"])
            row.update(kind=kind_of[base], in_band=True, choices=arch_json["choices"], stage_widths=widths,
                       predicted_ms=round(float(predictor.predict_ops(arch.ops())), 4))
        rows.append(row)
    if not rows:
        raise HwnasError(f"{run}: no finished training of budget {tag} in jobs/")
    return rows


def mobilenetv2(space, width_mult: float):
    """The MobileNetV2-style network of the budgets benchmark: k3_e6 everywhere at a global ``width_mult``."""
    from hwnas.arch import architecture_of
    from hwnas.spaces import get_space

    wide = get_space(space.name, dict(space.params, width_mult=width_mult, width_choices=[1.0], stage_widths=None))
    return architecture_of(wide, ["k3_e6"] * len(wide.positions))


def nearest_stage_widths(space, width_mult: float) -> list[float]:
    """Per stage, the width choice whose channel count is nearest that of a global ``width_mult``."""
    from hwnas.spaces import make_divisible

    wide = mobilenetv2(space, width_mult).space
    out = []
    for s, (channels, _, _) in enumerate(space.params["stages"]):
        target = wide.positions[[p.stage for p in wide.positions].index(s)].ops[0].c_out
        out.append(min(space.width_choices, key=lambda w: (abs(make_divisible(channels * w) - target), w)))
    return out


def child_of_ops(space, ops) -> "Child | None":
    """The child of ``space`` whose network has exactly the operators ``ops`` (e.g. a .tflite read back with
    :mod:`hwnas.modelgraph`; stem and head included), or None. Where two children are the same network (a zero
    position that could sit in two places of a stage, two width choices rounded to the same channel count), the
    first is returned: the narrower width, the zero last."""
    import itertools

    from hwnas.children import Child

    def key(op):
        return (op.kind, op.c_in, op.c_out, op.kernel, op.stride, op.expand, op.h)

    want = [key(op) for op in ops]
    for widths in itertools.product(range(len(space.width_choices)), repeat=space.num_stages):
        at = space.at_widths([space.width_choices[w] for w in widths])
        if [key(op) for op in at.stem] != want[:len(at.stem)] or [key(op) for op in at.head] != want[-len(at.head):]:
            continue
        picks = _match(at.positions, want[len(at.stem):len(want) - len(at.head)], key)
        if picks is not None:
            return Child(widths, tuple(picks))
    return None


def _match(positions, rest: list, key) -> list[int] | None:
    """Candidate indices of ``positions`` whose non-zero operators are exactly ``rest`` (an operator before a zero)."""
    if not positions:
        return [] if not rest else None
    pos = positions[0]
    options = [c for c, op in enumerate(pos.ops) if not op.is_identity and rest and key(op) == rest[0]][:1]
    options += [c for c, op in enumerate(pos.ops) if op.kind == "zero"][:1]
    for c in options:
        tail = _match(positions[1:], rest if pos.ops[c].kind == "zero" else rest[1:], key)
        if tail is not None:
            return [c] + tail
    return None


def proxy_scores(space, truth: list[dict], seed: int = 0) -> dict[str, dict[str, float]]:
    """Every zero-cost ranker's value for every model (on the network trained: MobileNetV2 at its width)."""
    from hwnas.children import child_arch
    from hwnas.search.proxies import PROXIES, UNITS, proxy_of

    out = {"predicted ms": {r["name"]: r["predicted_ms"] for r in truth}}
    archs = {r["name"]: mobilenetv2(space, r["width_mult"]) if "width_mult" in r else child_arch(space, r["child"])
             for r in truth}
    for name in PROXIES:
        out[UNITS[name]] = {model: proxy_of(arch, name, seed) for model, arch in archs.items()}
    return out


def rank_stats(pairs: list[tuple[float, float]]) -> dict:
    """Kendall tau, Spearman rho (with p-values) and top-3 overlap of (supernet acc, stand-alone acc) pairs."""
    from scipy.stats import kendalltau, spearmanr

    sup, true = zip(*pairs)
    tau, p_tau = kendalltau(sup, true)
    rho, p_rho = spearmanr(sup, true)
    top = lambda v: set(sorted(range(len(v)), key=lambda i: -v[i])[:3])  # noqa: E731
    return {"n": len(pairs), "tau": float(tau), "p_tau": float(p_tau), "rho": float(rho), "p_rho": float(p_rho),
            "top3": len(top(sup) & top(true))}


def score_all(args, length: int, net, truth: list[dict], bn_set, rank_set, log: Path) -> dict[str, float]:
    """Supernet accuracy of every model's child at this length (appended to ``log``; earlier ones kept)."""
    from hwnas.jsonfile import read_jsonl
    from hwnas.search.derive import supernet_scorer

    done = {r["name"]: r["supernet_acc"] for r in read_jsonl(log, "a score") if r["length"] == length}
    score = supernet_scorer(net, bn_set, rank_set, calib_batches=-(-args.bn_images // args.batch_size),
                            batch_size=args.batch_size, seed=args.seed)
    for row in truth:
        if row["name"] in done:
            continue
        t0 = time.time()
        done[row["name"]] = acc = score(row["child"])
        with open(log, "a") as f:
            f.write(json.dumps({"length": length, "name": row["name"], "supernet_acc": acc,
                                "seconds": round(time.time() - t0, 1)}) + "\n")
        print(f"  {length}x {row['name']}: supernet accuracy {acc:.4f} ({time.time() - t0:.0f} s)", flush=True)
    return done


SHORT_SEED = 1000  # short trainings use training seed --seed + this


def trained_arch(space, row: dict):
    """The network a truth model was trained as: MobileNetV2 at its width multiplier, else its child."""
    from hwnas.arch import architecture_of

    if "width_mult" in row:
        return mobilenetv2(space, row["width_mult"])
    return architecture_of(space.at_widths(row["stage_widths"]), row["choices"])


def _short_train(args, row: dict, folder: str) -> tuple[str, float, float]:
    """One short stand-alone training (run in a worker process): (name, selection accuracy, seconds)."""
    from hwnas.spaces import get_space
    from hwnas.threads import use_torch_threads
    from hwnas.train import TrainConfig, train_model

    from cifar10_budgets import Data

    use_torch_threads(1)
    space = get_space(args.space)
    arch = trained_arch(space, row)
    data = Data(SimpleNamespace(dataset=args.dataset, train=args.train, selection=args.selection, test=args.test,
                                seed=args.seed), space.params["resolution"])
    # the budgets benchmark's recipe (its defaults), fewer epochs; another training seed than the stand-alone
    # truth's, so the two share no initialisation or batch order
    cfg = TrainConfig(epochs=args.short_epochs, batch_size=128, lr=0.1, weight_decay=5e-4, label_smoothing=0.1,
                      seed=args.seed + SHORT_SEED)
    t0 = time.time()
    res = train_model(arch, data.splits(), config=cfg, out_dir=folder, resume=True, progress=False)
    return row["name"], float(res.val_acc), time.time() - t0


def short_train_scores(args, truth: list[dict], out: Path) -> dict[str, float]:
    """``--short-epochs E``: every truth model trained E epochs from scratch, ``--short-jobs`` at a time, its
    selection accuracy appended to ``OUT/short-Eep.jsonl`` when done (a rerun keeps those; an interrupted
    training resumes from its checkpoint in ``OUT/short-Eep/NAME``)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from hwnas.jsonfile import read_jsonl

    log = out / f"short-{args.short_epochs}ep.jsonl"
    done = {r["name"]: r["selection_acc"] for r in read_jsonl(log, "a short training")} if log.exists() else {}
    todo = [row for row in truth if row["name"] not in done]
    print(f"short training ({args.short_epochs} epochs): {len(truth)} models, {len(truth) - len(todo)} done "
          f"earlier, {args.short_jobs} at a time", flush=True)
    context = multiprocessing.get_context("spawn")  # fresh interpreters: one torch thread each
    with ProcessPoolExecutor(args.short_jobs, mp_context=context) as pool:
        futures = [pool.submit(_short_train, args, {k: v for k, v in row.items() if k != "child"},
                               str(out / f"short-{args.short_epochs}ep" / row["name"])) for row in todo]
        for i, future in enumerate(as_completed(futures), 1):
            name, acc, seconds = future.result()
            done[name] = acc
            with open(log, "a") as f:
                f.write(json.dumps({"name": name, "epochs": args.short_epochs, "selection_acc": acc,
                                    "seconds": round(seconds, 1)}) + "\n")
            print(f"  [{i}/{len(todo)}] {name}: {acc:.4f} on selection after {args.short_epochs} epochs "
                  f"({seconds:.0f} s)", flush=True)
    return done


def supernet_folder(args, length: int) -> str:
    sampling = getattr(args, "weight_sampling", "alpha")
    return f"supernet-{length}x" + ("" if sampling == "alpha" else f"-{sampling}")


def supernet_label(args, length: int) -> str:
    sampling = getattr(args, "weight_sampling", "alpha")
    return (f"supernet {length}x ({length * args.search_epochs * args.search_steps} steps"
            + ("" if sampling == "alpha" else f", {sampling} sampling") + ")")


def read_supernet_scores(args, path: str, truth: list[dict]) -> dict[str, dict[str, float]]:
    """The supernet rankers of an earlier run's scores.jsonl (every model of ``truth`` must be there)."""
    from hwnas.jsonfile import read_jsonl

    got: dict[int, dict[str, float]] = {}
    for r in read_jsonl(path, "a score"):
        got.setdefault(int(r["length"]), {})[r["name"]] = float(r["supernet_acc"])
    for length, scores in got.items():
        missing = [t["name"] for t in truth if t["name"] not in scores]
        if missing:
            raise HwnasError(f"{path}: no {length}x score for model {missing[0]!r}")
    return {supernet_label(args, length): got[length] for length in sorted(got)}


def report(args, truth: list[dict], rankers: dict[str, dict[str, float]], notes: dict[str, str],
           header: str) -> tuple[str, dict]:
    """The ranking table (every ranker, in band and over all models) and the per-model values."""
    lines = [header, "",
             "| ranker | models | Kendall tau (p) | Spearman rho (p) | top-3 overlap | its pick: test acc (rank) |",
             "|---|---|---|---|---|---|"]
    stats = {}
    for ranker, got in rankers.items():
        for label, rows in (("in band", [r for r in truth if r["in_band"]]), ("all", truth)):
            st = rank_stats([(got[r["name"]], r["test_acc"]) for r in rows])
            stats[(ranker, label)] = st
            pick = max(rows, key=lambda r: got[r["name"]])
            rank = 1 + sum(r["test_acc"] > pick["test_acc"] for r in rows)
            lines.append(f"| {ranker} | {label} ({st['n']}) | {st['tau']:+.2f} ({st['p_tau']:.4f}) | "
                         f"{st['rho']:+.2f} ({st['p_rho']:.4f}) | {st['top3']}/3 | {pick['name']}: "
                         f"{pick['test_acc']:.2%} ({rank} of {len(rows)}) |")
    lines += ["", "| model | stand-alone test acc | " + " | ".join(rankers) + " |",
              "|---|---|" + "---|" * len(rankers)]
    for r in sorted(truth, key=lambda r: -r["test_acc"]):
        nearest = r["proxy"] and any(ranker.startswith("supernet") for ranker in rankers)
        name = r["name"] + (" (supernet: nearest child)" if nearest else "")
        lines.append(f"| {name} | {r['test_acc']:.2%} | " + " | ".join(
            f"{got[r['name']]:.2%}" if ranker.startswith("supernet") else f"{got[r['name']]:.4g}"
            for ranker, got in rankers.items()) + " |")
    for ranker, note in notes.items():
        lines.append(f"\n{ranker}: {note}")
    return "\n".join(lines) + "\n", stats


def plot(truth: list[dict], rankers: dict[str, dict[str, float]], stats: dict, path: Path) -> None:
    """One panel per ranker: its value against stand-alone test accuracy."""
    from hwnas.plots import pyplot, save_figure

    plt = pyplot()
    cols = min(4, len(rankers))
    rows_n = -(-len(rankers) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.8 * rows_n), squeeze=False)
    colors = {"searched": "tab:red", "random": "tab:blue", "proxy": "tab:orange", "mbv2": "tab:green"}
    for ax in axes.flat[len(rankers):]:
        ax.set_visible(False)
    for ax, (ranker, got) in zip(axes.flat, rankers.items()):
        scale = 100 if ranker.startswith("supernet") else 1
        for kind, color in colors.items():
            rows = [r for r in truth if r.get("kind") == kind]
            ax.scatter([scale * got[r["name"]] for r in rows], [100 * r["test_acc"] for r in rows], c=color,
                       label=kind + (" (nearest child)" if kind == "mbv2" and scale == 100 else ""), s=18)
        st = stats[(ranker, "in band")]
        ax.set_title(f"{ranker}\nin band tau {st['tau']:+.2f}, rho {st['rho']:+.2f}", fontsize=9)
        ax.set_xlabel(ranker + (" accuracy (%)" if scale == 100 else ""), fontsize=8)
        ax.set_ylabel("stand-alone test accuracy (%)", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path)


def evolve(args, res, bn_set, rank_set, out: Path) -> str:
    """The child of the band that :func:`hwnas.search.derive.evolve_in_band` picks on this supernet."""
    from torch.utils.data import Subset

    from hwnas.children import child_arch, latency_table
    from hwnas.search.derive import evolve_in_band, supernet_scorer
    from hwnas.search.latency import load_latency_predictor

    net = res.supernet
    predictor, _ = load_latency_predictor(net.space, args.predictor, level=args.level)
    table = latency_table(net.space, predictor)
    low, high = res.summary["band_ms"]
    small = supernet_scorer(net, bn_set, Subset(rank_set, range(500)), 2, args.batch_size, args.seed)
    full = supernet_scorer(net, bn_set, rank_set, -(-args.bn_images // args.batch_size), args.batch_size, args.seed)
    found = evolve_in_band(net, table, low, high, small, full, out / f"derive-{args.lengths[-1]}x.jsonl",
                           children=args.evolve, seed=args.seed, progress=True)
    arch = child_arch(net.space, found.child)
    return (f"evolution over {found.scored} children of the band [{low:.3f}, {high:.3f}] ms: `{' '.join(arch.choices)}` "
            f"widths {','.join(f'{w:g}' for w in arch.space.stage_widths)}, {found.latency_ms:.3f} ms, supernet "
            f"accuracy {found.supernet_acc:.2%} (scored as the models above), {found.seconds / 60:.1f} min")


def main(argv=None) -> int:
    from hwnas.spaces import get_space
    from hwnas.threads import use_torch_threads

    args = parse_args(sys.argv[1:] if argv is None else argv)
    use_torch_threads(1)
    space = get_space(args.space)
    if args.truth_run:  # the run's models at this budget, kept beside the report
        Path(args.out).mkdir(parents=True, exist_ok=True)
        args.truth = str(Path(args.out) / "truth.json")
        Path(args.truth).write_text(json.dumps(truth_from_run(Path(args.truth_run), args.budget, space), indent=1))
    truth = load_truth(args.truth, space) if args.truth else None  # checked before any long work
    if truth is None and not args.train_only:
        raise HwnasError("--truth is needed to score (or give --train-only)")
    if args.proxies_only:
        return rank_by_proxies(args, space, truth)
    data, bn_set, rank_set = load_data(args, space.params["resolution"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{data.name}: {len(data.train)} train / {len(rank_set)} ranking / {len(bn_set)} BN images", flush=True)
    scores, notes = {}, {}
    for length in args.lengths:
        res, seconds = train_supernet(args, data, length)
        print(f"supernet {length}x: {res.summary['epochs_done']} epochs ({seconds / 60:.1f} min this run)", flush=True)
        if args.train_only:
            continue
        t0 = time.time()
        scores[length] = score_all(args, length, res.supernet, truth, bn_set, rank_set, out / "scores.jsonl")
        from hwnas.jsonfile import read_jsonl

        epochs = read_jsonl(out / supernet_folder(args, length) / "metrics.jsonl", "an epoch")
        arch = res.arch
        notes[supernet_label(args, length)] = (f"argmax child of the band `{' '.join(arch.choices)}` widths "
                         f"{','.join(f'{w:g}' for w in arch.space.stage_widths)} (its supernet accuracy on the "
                         f"search's {args.selection:,} selection images after the last epoch: {epochs[-1]['val_acc']:.2%}); "
                         f"supernet training {sum(e['seconds'] for e in epochs) / 60:.0f} min (sum of epoch times), "
                         f"scoring {time.time() - t0:.0f} s (this invocation)")
    if args.train_only:
        return 0
    if args.evolve and args.lengths:
        notes[supernet_label(args, args.lengths[-1])] += "; " + evolve(args, res, bn_set, rank_set, out)
    rankers = {supernet_label(args, length): got for length, got in scores.items()}
    if args.short_epochs:
        t0 = time.time()
        label = f"stand-alone {args.short_epochs} epochs"
        rankers[label] = short_train_scores(args, truth, out)
        notes[label] = (f"each model trained {args.short_epochs} epochs from scratch on the {len(data.train):,} "
                        f"training images (training seed {args.seed + SHORT_SEED}), accuracy on the {args.selection:,} "
                        f"selection images; "
                        f"{time.time() - t0:.0f} s this invocation ({args.short_jobs} at a time)")
    rankers.update(proxy_scores(space, truth, args.seed))
    header = (f"Supernet ranking, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: supernet accuracy on "
              f"{len(rank_set)} held-out images (BatchNorm re-estimated per child on {args.bn_images} training "
              f"images) and zero-cost proxies against stand-alone test accuracy of {len(truth)} models.")
    return write_report(args, truth, rankers, notes, header, out)


def write_report(args, truth, rankers, notes, header, out: Path) -> int:
    text, stats = report(args, truth, rankers, notes, header)
    (out / "table.md").write_text(text)
    plot(truth, rankers, stats, out / "ranking.png")
    print(text)
    return 0


def rank_by_proxies(args, space, truth: list[dict]) -> int:
    """``--proxies-only``: the table of the zero-cost rankers (and an earlier run's supernet scores)."""
    t0 = time.time()
    rankers = read_supernet_scores(args, args.supernet_scores, truth) if args.supernet_scores else {}
    rankers.update(proxy_scores(space, truth, args.seed))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = (f"Ranking by zero-cost proxies, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
              f"{len(truth)} models of {Path(args.truth).name} against their stand-alone test accuracy"
              + (f"; supernet scores from {Path(args.supernet_scores).name}" if args.supernet_scores else "")
              + f" ({time.time() - t0:.1f} s).")
    return write_report(args, truth, rankers, {}, header, out)


if __name__ == "__main__":
    run_script(main, "error")
