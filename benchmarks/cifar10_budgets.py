"""CIFAR-10, the honest benchmark: does one search land on its latency budget, and is its child more accurate
than random children and MobileNetV2-style networks of the same measured latency?

Data: one fixed-seed permutation of the dataset's images gives three disjoint parts: ``--train`` images for
search and training (hwnas.data's CIFAR augmentation: random crop + flip), ``--selection`` images used only to
pick the best random child (and as the search's and trainings' per-epoch validation, reported only), and
``--test`` images used only for the reported accuracies (no augmentation on either). The index lists go to
``OUT/splits.json``.

Budgets (``--budgets``): predicted ms of ``--predictor`` (this CPU's LiteRT fp32 1-thread table), e.g.
``0.35,0.5,0.7``, or ``N%``: N percent of the way from the fastest to the slowest predicted child.

Models. At every budget B the child of a search with seed 0 is exported and measured (the budget-hit table:
measured / B, target 0.90-1.00x). At each of ``--accuracy-budgets``, trained from scratch with one recipe:

* the searched children of search seeds 0 and 1;
* ``--random`` children drawn uniformly from the whole space (stage widths included) among those predicted in
  [0.90 B, 1.00 B] (rejection sampling); the one most accurate on the selection images is marked best;
* MobileNetV2-style networks (k3_e6 everywhere, no skipped block, one global ``width_mult``, stage widths 1)
  sized by MEASURED latency: a ladder of widths (multiples of ``--mbv2-step`` around the width predicted at B,
  re-centred with the measured/predicted ratio until it brackets B) is exported and timed before any other
  work, the widest measuring <= B is trained, and the next one above B too (over budget), so the table
  brackets B.

Jobs: every search and every training runs in a subprocess of this script with one torch thread, ``--jobs``
at a time. A finished job writes ``OUT/jobs/NAME/result.json`` and is skipped when the command runs again; an
interrupted one resumes from its checkpoint. The main process exports each model once to fp32 TFLite
(self-checked against PyTorch) and scores the trained ones on the test images with LiteRT.

Session level (``--relevel N``, default 6): before any job, N children predicted near each budget are
exported and timed now (:mod:`hwnas.search.session_level`); that budget's search and random children use the
predictions times median(measured / predicted), so they aim at milliseconds as this machine measures them today
(``OUT/levels.json``). The MobileNetV2 ladder needs none: it is sized by measurement.

Issue 20's additions (each adds rows): ``--search-seeds N`` searches per accuracy budget; ``--train-seeds N``
training seeds of each MobileNetV2 width and of the best random child (the training-seed spread of two
architectures). The searched or proxy child of seed s is trained with training seed s, so two seeds that derive
the same child still count as two trainings (runs D and E trained every model with seed 0); ``--inherited``: each searched child
also trained from its supernet's weights; ``--long-epochs N``: MobileNetV2 at each budget also trained N
epochs, the inherited children's control (they saw the supernet's images as well); ``--proxy flops``: children derived with no supernet by a zero-cost proxy
(:func:`hwnas.search.derive.proxy_child`, in the search's band), one per search seed; ``--variant
NAME:KEY=VALUE,...``: the search run again with other settings (fields of :class:`hwnas.search.SearchConfig`,
e.g. ``weight_sampling=band,derive=evolution``), one per search seed at ``--variant-budgets``, its children
trained as the searched ones and compared with everything (own rows); ``--searches-last``: the
models that need no search are trained before the searches. Every model's per-image test correctness is kept
(``test_correct.npy``), and each budget's table ends with paired comparisons (:mod:`hwnas.paired`: bootstrap over
the test images of the difference of mean accuracy, exact McNemar), the searched children's percentile among
the random ones, and the training-seed spread (``OUT/comparisons.json``).

Timing: after all training, every exported model is timed with LiteRT, 1 thread, pinned to one core, in
``--rounds`` rounds, each in a fresh random order, nothing else of the benchmark running: latency = median of
the round medians, spread = their IQR.

Outputs: ``OUT/results.jsonl`` (one line per table row), the Markdown ``--table``, the plot
``OUT/accuracy_vs_latency.png``, and in ``--models-dir`` (its earlier .tflite files replaced) the fp32 .tflite
of the models a reader needs to re-score the claims (every searched child, MobileNetV2 at the bracketing
widths, the best random child of each budget, every random child of the first accuracy budget; training seed
0) with a README (preprocessing, label order, the test images, how to re-score).

The defaults are the full size: about 1 h 40 min - 2 h on a 2-core CPU with one accuracy budget (4 searches
of ~12 min and 14 trainings of ~10 min, two at a time; see docs/cifar10.md)::

    nice -n 5 .venv/bin/python benchmarks/cifar10_budgets.py --dataset ../shared/datasets/cifar10-train.tar.gz \\
        --predictor PREDICTOR.json --budgets 0.35,0.5,0.7 --accuracy-budgets 0.5
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file from anywhere
    sys.path.insert(0, str(ROOT))

from hwnas.arch import Architecture, architecture_of  # noqa: E402
from hwnas.errors import HwnasError, run_script  # noqa: E402

RANDOM_BAND = (0.90, 1.00)  # random children: predicted latency within this fraction of the budget
HIT_BAND = (0.90, 1.00)  # the budget-hit target: measured / budget
MAX_DRAWS = 2_000_000  # rejection sampling of random children gives up after this many draws
MAX_LADDER_ROUNDS = 4  # ladder timings before giving up bracketing the budget


# -- settings ----------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="the CIFAR-10 training images: ImageFolder .tar.gz or folder")
    p.add_argument("--predictor", required=True, help="this CPU's LiteRT fp32 1-thread latency table (.json)")
    p.add_argument("--space", default="proxyless-tiny")
    p.add_argument("--budgets", required=True,
                   help="comma-separated budgets: ms (0.35,0.5,0.7) or N%% of the way from the fastest to the "
                        "slowest predicted child (20%%,35%%,50%%)")
    p.add_argument("--accuracy-budgets", default=None,
                   help="the budgets (one or two of --budgets, same syntax) of the accuracy comparison "
                        "(default: the middle one; 'none': the budget-hit table only)")
    p.add_argument("--relevel", type=int, default=6,
                   help="children timed at each budget before any job for the session level: searches and "
                        "random children use predictions x median(measured / predicted) (6; 0: off)")
    p.add_argument("--train", type=int, default=10000, help="images for search and training (default 10000)")
    p.add_argument("--selection", type=int, default=1000, help="images to pick the best random child (1000)")
    p.add_argument("--test", type=int, default=4000, help="images for the reported accuracies (4000)")
    p.add_argument("--seed", type=int, default=0, help="data permutation, random children, training seed")
    p.add_argument("--epochs", type=int, default=10, help="training epochs of every model (10)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--search-epochs", type=int, default=6, help="search epochs (6)")
    p.add_argument("--search-warmup-epochs", type=int, default=2, help="epochs training the largest child alone")
    p.add_argument("--search-child-warmup-epochs", type=int, default=0,
                   help="sandwich epochs before architecture steps start")
    p.add_argument("--search-steps", type=int, default=40,
                   help="search steps per epoch (40; the weight part of --train at batch 128 has 62)")
    p.add_argument("--random", type=int, default=10, help="random children per accuracy budget (10)")
    p.add_argument("--search-seeds", type=int, default=2,
                   help="searches (seeds 0..N-1) per accuracy budget, each child trained (2); seed 0 elsewhere")
    p.add_argument("--train-seeds", type=int, default=1,
                   help="training seeds of each MobileNetV2 width and of the best random child: the seed "
                        "spread of one architecture (1)")
    p.add_argument("--proxy", default=None,
                   help="also derive children with no supernet by a zero-cost proxy (flops, params, mac, synflow): "
                        "hwnas.search.derive.proxy_child in the search's band, one per --search-seeds seed (own rows)")
    p.add_argument("--proxy-children", type=int, default=2000, help="children scored per proxy derivation (2000)")
    p.add_argument("--variant", default=None, metavar="NAME:KEY=VALUE,...",
                   help="also run the search with other settings (hwnas.search.SearchConfig fields), one per "
                        "--search-seeds seed at each of --variant-budgets, e.g. 'band-evo:weight_sampling=band,"
                        "derive=evolution'; its children are trained as the searched ones (own rows, compared)")
    p.add_argument("--variant-budgets", default=None,
                   help="the accuracy budgets the variant runs at (default: all of --accuracy-budgets)")
    p.add_argument("--searches-last", action="store_true",
                   help="train the models that need no search (proxy, random, MobileNetV2) before the searches run")
    p.add_argument("--inherited", action="store_true",
                   help="also train every searched child starting from its supernet's weights (own rows)")
    p.add_argument("--long-epochs", type=int, default=0,
                   help="also train MobileNetV2 at each budget this many epochs, each training seed (own rows): "
                        "the control of the inherited children, which saw the supernet's images too (0: off)")
    p.add_argument("--mbv2-ladder", type=int, default=4, help="widths in the first MobileNetV2 ladder (4)")
    p.add_argument("--mbv2-step", type=float, default=0.125, help="MobileNetV2 ladder width step (0.125)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (5)")
    p.add_argument("--quiet-load", type=float, default=1.5,
                   help="timing (session level, ladder, final) waits until the 1-minute load average is at most "
                        "this (1.5)")
    p.add_argument("--quiet-wait", type=float, default=30, help="minutes to wait for that, then time anyway (30)")
    p.add_argument("--jobs", type=int, default=2, help="searches/trainings run at a time, 1 thread each (2)")
    p.add_argument("--out", default="runs/cifar10_budgets")
    p.add_argument("--table", default=None, help="Markdown table (default OUT/table.md)")
    p.add_argument("--models-dir", default="docs/cifar10/models",
                   help="receives the fp32 .tflite of the models needed to re-score the claims (its earlier "
                        ".tflite files replaced) and a README")
    p.add_argument("--job", default=None, help=argparse.SUPPRESS)  # internal: run one job (a subprocess)
    args = p.parse_args(argv)
    for name in ("train", "selection", "test", "epochs", "batch_size", "search_epochs", "random", "rounds",
                 "jobs", "search_seeds", "train_seeds"):
        if getattr(args, name) < 1:
            raise HwnasError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.mbv2_ladder < 2:
        raise HwnasError(f"--mbv2-ladder must be at least 2, got {args.mbv2_ladder}")
    if not 0 < args.mbv2_step <= 1:
        raise HwnasError(f"--mbv2-step must be in (0, 1], got {args.mbv2_step}")
    if args.proxy is not None:
        from hwnas.search.proxies import PROXIES

        if args.proxy not in PROXIES:
            raise HwnasError(f"--proxy must be one of {', '.join(PROXIES)}, got {args.proxy!r}")
    if not 0 < args.quiet_load < math.inf or not 0 <= args.quiet_wait < math.inf:
        raise HwnasError(f"--quiet-load must be a positive number and --quiet-wait 0 or more minutes, got "
                         f"{args.quiet_load:g} and {args.quiet_wait:g}")
    if args.proxy_children < 1:
        raise HwnasError(f"--proxy-children must be at least 1, got {args.proxy_children}")
    args.variant_options = parse_variant(args.variant) if args.variant else None
    if args.relevel < 0:
        raise HwnasError(f"--relevel must be 0 or more, got {args.relevel}")
    if args.long_epochs < 0:
        raise HwnasError(f"--long-epochs must be 0 (off) or more, got {args.long_epochs}")
    if args.search_steps < 1:
        raise HwnasError(f"--search-steps must be at least 1, got {args.search_steps}")
    args.table = args.table or str(Path(args.out) / "table.md")
    return args


def parse_variant(text: str) -> tuple[str, dict]:
    """``NAME:KEY=VALUE,...`` -> (NAME, {field: value}), each KEY a field of the search's config, each VALUE
    read as that field's type; the settings the benchmark sets itself (budget, seeds, schedule) are refused."""
    from dataclasses import fields

    from hwnas.search.config import SearchConfig

    name, _, rest = text.partition(":")
    if not name or not name.replace("-", "").isalnum():
        raise HwnasError(f"--variant {text!r}: give NAME:KEY=VALUE,... with a NAME of letters, digits and '-'")
    kinds = {f.name: type(getattr(SearchConfig(), f.name)) for f in fields(SearchConfig)}
    fixed = {"space", "dataset", "predictor", "budget_ms", "latency_level", "epochs", "warmup_epochs",
             "child_warmup_epochs", "batch_size", "max_steps", "seed", "out", "resume", "progress", "device",
             "threads"}
    options = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key not in kinds or key in fixed:
            why = "set by the benchmark" if key in fixed else "not a search setting" if eq else "no '='"
            raise HwnasError(f"--variant {text!r}: {item!r}: {why} (KEY=VALUE, KEY a field of SearchConfig)")
        kind = kinds[key]
        try:
            options[key] = ({"true": True, "false": False}[value.lower()] if kind is bool
                            else kind(value) if kind in (int, float, str) else float(value))
        except (KeyError, ValueError):
            raise HwnasError(f"--variant {text!r}: {key}={value!r} is not a {kind.__name__}") from None
    SearchConfig(budget_ms=1.0, **options).check()  # an unknown choice is refused now, with the field named
    return name, options


def result_settings(args) -> dict:
    """Every setting that changes a result: a run folder holds the results of one set of them."""
    keep = ("dataset", "predictor", "space", "train", "selection", "test", "seed", "epochs", "batch_size", "lr",
            "weight_decay", "label_smoothing", "search_epochs", "search_warmup_epochs",
            "search_child_warmup_epochs", "search_steps", "mbv2_step", "relevel")
    return {k: getattr(args, k) for k in keep}


def variant_budgets_of(args, acc_budgets, fastest: float, slowest: float) -> list[float]:
    """The accuracy budgets the ``--variant`` search runs at (none without a variant)."""
    if not args.variant_options:
        return []
    if args.variant_budgets is None:
        return list(acc_budgets)
    chosen = parse_budgets(args.variant_budgets, fastest, slowest, "--variant-budgets")
    if any(b not in acc_budgets for b in chosen):
        raise HwnasError(f"--variant-budgets must be among --accuracy-budgets ({', '.join(map(str, acc_budgets))} "
                         f"ms), got {', '.join(map(str, chosen))} ms")
    return chosen


def check_run_folder(out: Path, settings: dict) -> None:
    """Refuse to mix results of other settings into ``out``; record the settings of a new folder."""
    path = out / "settings.json"
    if path.exists():
        saved = json.loads(path.read_text())
        changed = [k for k in settings if saved.get(k) != settings[k]]
        if changed:
            raise HwnasError(f"{path}: this run folder holds results of other settings ("
                             + ", ".join(f"{k}={saved.get(k)!r} there, {settings[k]!r} now" for k in changed)
                             + "); use another --out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n")


def parse_budgets(text: str, fastest: float, slowest: float, what: str) -> list[float]:
    """``0.5`` (ms) or ``35%`` (of the way from the fastest to the slowest predicted child), comma-separated."""
    budgets = []
    for item in (s.strip() for s in text.split(",")):
        try:
            value = (fastest + float(item[:-1]) / 100 * (slowest - fastest)) if item.endswith("%") else float(item)
        except ValueError:
            raise HwnasError(f"{what}: {item!r} is neither a number of ms nor a percentage like 35%") from None
        if not 0 < value < math.inf:
            raise HwnasError(f"{what}: {item!r} is not a positive budget")
        budgets.append(round(value, 4))
    if len(set(budgets)) != len(budgets):
        raise HwnasError(f"{what}: {text!r} names a budget twice")
    return budgets


def ms_tag(budget: float) -> str:
    return f"{budget:g}ms"


# -- data ----------------------------------------------------------------------------------------------
def whole_dataset(path: str, resolution: int, augment: bool):
    """Every image of the dataset, with hwnas.data's CIFAR transforms (augmented or not)."""
    from hwnas.data import image_dataset

    return image_dataset(path, resolution, augment=augment).train.dataset  # the Subset's base: all images


def split_indices(n: int, args) -> dict[str, list[int]]:
    """Disjoint train / selection / test image indices from one permutation fixed by ``args.seed``."""
    need = args.train + args.selection + args.test
    if need > n:
        raise HwnasError(f"{args.dataset}: {n} images, fewer than --train + --selection + --test = {need}")
    order = np.random.default_rng(args.seed).permutation(n).tolist()
    a, b = args.train, args.train + args.selection
    return {"train": order[:a], "selection": order[a:b], "test": order[b:need]}


class Data:
    """The three image sets of one run (loaded once per process)."""

    def __init__(self, args, resolution: int):
        from torch.utils.data import Subset

        augmented = whole_dataset(args.dataset, resolution, augment=True)
        plain = whole_dataset(args.dataset, resolution, augment=False)
        self.classes = list(plain.classes)
        self.indices = split_indices(len(plain), args)
        self.train = Subset(augmented, self.indices["train"])
        self.selection = Subset(plain, self.indices["selection"])
        self.test = Subset(plain, self.indices["test"])
        self.plain = plain
        self.name = Path(args.dataset).name

    def splits(self):
        """The search's and trainings' view: train images, selection images as (reported-only) validation."""
        from torch.utils.data import Subset

        from hwnas.data import Splits

        return Splits(self.train, self.selection, len(self.classes), self.name,
                      Subset(self.plain, self.indices["train"]))

    def relative_paths(self, which: str) -> list[str]:
        samples = getattr(self.plain, "samples", None)
        if samples is None:  # torchvision's CIFAR-10 files: positions in its training batches
            return [str(i) for i in self.indices[which]]
        root = Path(self.plain.root)
        return [Path(samples[i][0]).relative_to(root).as_posix() for i in self.indices[which]]


# -- architectures ---------------------------------------------------------------------------------------
def random_children(table, budget: float, n: int, seed: int) -> list:
    """``n`` distinct children drawn uniformly from the space among those predicted in RANDOM_BAND x budget."""
    from hwnas.search.band import sample_children_in_band

    low, high = RANDOM_BAND[0] * budget, RANDOM_BAND[1] * budget
    found = sample_children_in_band(table, low, high, n, [seed, int(round(budget * 1e4))], MAX_DRAWS)
    if len(found) < n:
        raise HwnasError(f"only {len(found)} distinct children of {MAX_DRAWS} random draws are predicted in "
                         f"[{low:.4f}, {high:.4f}] ms (budget {budget:g} ms); choose another budget or fewer --random")
    return found


def mbv2(space_name: str, width: float) -> Architecture:
    """k3_e6 at every position, no skipped block, one global width multiplier, stage widths 1."""
    from hwnas.spaces import get_space

    space = get_space(space_name, {"width_mult": round(width, 4)})
    return architecture_of(space, ["k3_e6"] * len(space.positions))


def width_at(space_name: str, predict, budget: float) -> float:
    """The MobileNetV2 width predicted at ``budget`` (bisection; clipped to the allowed widths)."""
    from hwnas.spaces import MAX_WIDTH_MULT

    lo, hi = 0.05, MAX_WIDTH_MULT
    if predict(mbv2(space_name, hi)) <= budget:
        return hi
    if predict(mbv2(space_name, lo)) >= budget:
        return lo
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if predict(mbv2(space_name, mid)) <= budget else (lo, mid)
    return lo


def first_ladder(width: float, step: float, n: int) -> list[float]:
    """``n`` multiples of ``step`` around ``width`` (half below or at it, half above)."""
    from hwnas.spaces import MAX_WIDTH_MULT

    k0 = math.floor(width / step + 1e-9)
    ks = range(k0 - (n // 2 - 1), k0 + n - n // 2 + 1)
    return [round(k * step, 4) for k in ks if 0 < k * step <= MAX_WIDTH_MULT][:n]


# -- jobs (subprocesses of this script) -------------------------------------------------------------------
def job_dir(out: Path, name: str) -> Path:
    return out / "jobs" / name


def job_result(out: Path, name: str) -> dict | None:
    path = job_dir(out, name) / "result.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def run_job(args, name: str) -> None:
    """One search or training (this process is a subprocess started by :func:`run_jobs`)."""
    from hwnas.threads import use_torch_threads

    use_torch_threads(1)
    out = Path(args.out)
    folder = job_dir(out, name)
    spec = json.loads((folder / "job.json").read_text())
    t0 = time.time()
    if spec["kind"] == "search":
        from hwnas.search import SearchConfig, run_search
        from hwnas.spaces import get_space

        space = get_space(args.space)
        data = Data(args, space.params["resolution"])
        cfg = SearchConfig(space=args.space, dataset=args.dataset, predictor=args.predictor,
                           budget_ms=spec["budget_ms"], latency_level=spec["level"], epochs=args.search_epochs,
                           warmup_epochs=args.search_warmup_epochs,
                           child_warmup_epochs=args.search_child_warmup_epochs, batch_size=args.batch_size,
                           max_steps=args.search_steps, seed=spec["seed"], out=str(folder / "search"), resume=True,
                           progress=False, device="cpu", threads=1, **spec.get("options", {}))
        res = run_search(cfg, splits=data.splits())
        keep = ("predicted_latency_ms", "band_ms", "min_latency_ms", "max_latency_ms", "val_acc_supernet_child",
                "epochs_done")
        result = {"arch": res.arch.to_dict(), **{k: res.summary.get(k) for k in keep}}
    else:
        from hwnas.train import TrainConfig, evaluate, train_model

        arch = Architecture.from_dict(spec["arch"])
        data = Data(args, arch.space.params["resolution"])
        cfg = TrainConfig(epochs=spec.get("epochs", args.epochs), batch_size=args.batch_size, lr=args.lr,
                          weight_decay=args.weight_decay, label_smoothing=args.label_smoothing,
                          seed=args.seed + spec.get("train_seed", 0))
        res = train_model(arch, data.splits(), config=cfg, out_dir=folder / "train", resume=True, progress=False,
                          init_weights=spec.get("init"))
        test_acc, _ = evaluate(res.model, data.test)
        result = {"selection_acc": res.val_acc, "test_acc_torch": test_acc, "weights": str(res.weights_path),
                  "train_seconds": round(sum(r["seconds"] for r in res.history), 1)}
    result["seconds"] = round(time.time() - t0, 1)  # this attempt
    write_json(folder / "result.json", result)


def run_jobs(phase: str, jobs: dict[str, dict], argv: list[str], out: Path, parallel: int, on_done) -> None:
    """Run the jobs without a result yet, ``parallel`` subprocesses at a time; ``on_done(name, result)`` runs
    in this process for every job (done now or earlier) in completion order."""
    todo = []
    for name, spec in jobs.items():
        if job_result(out, name) is None:
            write_json(job_dir(out, name) / "job.json", spec)
            todo.append(name)
    print(f"{phase}: {len(jobs)} jobs, {len(jobs) - len(todo)} done earlier, {len(todo)} to run "
          f"({parallel} at a time, logs in {out / 'jobs'}/NAME/log.txt)", flush=True)
    for name in jobs:
        if name not in todo:
            on_done(name, job_result(out, name))
    if not todo:
        return
    script = str(Path(__file__).resolve())
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")

    def launch(name: str) -> tuple[int, float]:
        t0 = time.time()
        with open(job_dir(out, name) / "log.txt", "a") as log:
            rc = subprocess.run([sys.executable, script, *argv, "--job", name], stdout=log, stderr=subprocess.STDOUT,
                                env=env, stdin=subprocess.DEVNULL).returncode
        return rc, time.time() - t0

    failed = []
    with ThreadPoolExecutor(parallel) as pool:
        futures = {pool.submit(launch, name): name for name in todo}
        for i, future in enumerate(as_completed(futures), 1):
            name = futures[future]
            rc, seconds = future.result()
            result = job_result(out, name)
            if rc != 0 or result is None:
                tail = (job_dir(out, name) / "log.txt").read_text(errors="replace").strip().splitlines()[-1:]
                print(f"  {name}: FAILED (exit code {rc}): {' '.join(tail)}", flush=True)
                failed.append(name)
                continue
            print(f"  [{i}/{len(todo)}] {name}: done in {seconds:.0f} s", flush=True)
            on_done(name, result)
    if failed:
        raise HwnasError(f"{phase}: {len(failed)} job(s) failed ({', '.join(failed)}); see their log.txt, then run "
                         "the same command again (finished jobs are kept)")


# -- export, scoring, timing -----------------------------------------------------------------------------
class Exporter:
    """Exports models to fp32 TFLite through one conversion worker (started on first use)."""

    def __init__(self, out: Path, data: Data):
        self.out, self.data, self.conv = out, data, None
        self._check = self._test = None

    def export(self, name: str, arch: Architecture, weights: str | None) -> Path:
        """``OUT/models/NAME/NAME-fp32.tflite`` (made once): trained weights, or a fixed random init."""
        import torch

        from hwnas.builder import build_model
        from hwnas.export.trained import export_trained, stack_images
        from hwnas.weights import load_weights

        folder = self.out / "models" / name
        path = folder / f"{name}-fp32.tflite"
        if (folder / "export.json").exists() and path.exists():
            return path
        torch.manual_seed(0)
        model = build_model(arch)
        if weights:
            load_weights(model, weights)
        if self._check is None:
            self._check = stack_images(self.data.selection, 50, seed=1)
        if self.conv is None:
            from hwnas.export.tflite import TFLiteConverter

            self.conv = TFLiteConverter(log_path=self.out / "tflite-worker.log").start()
        export_trained(arch, model, folder, self._check, self._check, quants=("fp32",), onnx=False, stem=name,
                       progress=lambda *_: None, converter=self.conv)
        return path

    def test_correct(self, path: Path) -> np.ndarray:
        """Which test images a .tflite file classifies correctly (LiteRT, what anyone re-scoring gets)."""
        from hwnas.export.parity import run_tflite

        if self._test is None:
            xs, ys = zip(*(self.data.test[i] for i in range(len(self.data.test))))
            self._test = (np.stack([x.numpy() for x in xs]).astype(np.float32), np.array(ys))
        logits = run_tflite(path, self._test[0])
        return logits.argmax(1) == self._test[1]

    def close(self) -> None:
        if self.conv is not None:
            self.conv.close()
            self.conv = None


def time_interleaved(files: dict[str, Path], rounds: int, seed: int) -> dict[str, dict]:
    """LiteRT, 1 thread, pinned to one core: every file once per round, each round in a fresh random order
    (:func:`hwnas.timing_rounds.times_now`, absolute times: no drift correction; a round is its fastest repeat
    since 2026-12-07, before its median of repeats); ``measured_ms`` is the median over rounds, as in run F."""
    from hwnas.runners import get_runner
    from hwnas.timing_rounds import summarize, times_now

    per_round = times_now(files, get_runner("tflite", 1), rounds, seed, progress=False)
    print(f"  timed {len(files)} models x {rounds} rounds", flush=True)
    return {name: {"measured_ms": round(summarize(v)[0], 5), "spread_ms": round(summarize(v)[1], 5),
                   "rounds_ms": [round(x, 5) for x in v]} for name, v in per_round.items()}


# -- the protocol -----------------------------------------------------------------------------------------
class Clock:
    """Elapsed time per phase, printed as each one ends and added up over the invocations of one run folder
    (``OUT/elapsed.json``), so a resumed run reports all the time it took."""

    def __init__(self, out: Path):
        self.path = out / "elapsed.json"
        self.start = self.last = time.time()
        self.before = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.phases: dict[str, float] = {}

    def lap(self, phase: str) -> None:
        now = time.time()
        self.phases[phase] = now - self.last
        print(f"== phase {phase}: {now - self.last:.1f} s (total {now - self.start:.1f} s)", flush=True)
        self.last = now
        if self.path.parent.is_dir():
            write_json(self.path, self.totals())

    def totals(self) -> dict[str, float]:
        names = list(dict.fromkeys(list(self.before) + list(self.phases)))
        return {k: round(self.before.get(k, 0.0) + self.phases.get(k, 0.0), 1) for k in names}

    def summary(self) -> str:
        totals = self.totals()
        return (", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in totals.items())
                + f"; total {sum(totals.values()) / 60:.1f} min")


def bracket(timed: dict[float, dict], budget: float) -> tuple[float | None, float | None]:
    """(the widest width measuring <= budget, the next wider one measuring > budget); None where there is none."""
    under = [w for w, t in timed.items() if t["measured_ms"] <= budget]
    at = max(under) if under else None
    over = sorted(w for w, t in timed.items() if t["measured_ms"] > budget and (at is None or w > at))
    return at, over[0] if over else None


def mbv2_ladder(args, space_name: str, budget: float, predict, exporter: Exporter, out: Path) -> dict:
    """Export and time a ladder of MobileNetV2 widths until it brackets ``budget`` by measured latency.

    Returns {"widths": {width: {measured_ms, spread_ms, predicted_ms}}, "at": width <= B or None,
    "over": the next width > B or None}; kept in OUT/ladder-B.json and reused."""
    record = out / f"ladder-{ms_tag(budget)}.json"
    if record.exists():
        return json.loads(record.read_text())
    from hwnas.spaces import MAX_WIDTH_MULT

    step, n = args.mbv2_step, args.mbv2_ladder
    timed: dict[float, dict] = {}
    proposal = set(first_ladder(width_at(space_name, predict, budget), step, n))
    for attempt in range(MAX_LADDER_ROUNDS):
        widths = sorted(set(timed) | proposal)  # all ladder widths are timed together (interleaved)
        files = {f"{w:g}": exporter.export(f"ladder-w{w:g}", mbv2(space_name, w), None) for w in widths}
        load = wait_until_quiet(args, f"the MobileNetV2 ladder at {budget:g} ms")
        print(f"  MobileNetV2 ladder at {budget:g} ms: widths {', '.join(files)} (timing {args.rounds} rounds)",
              flush=True)
        for key, t in time_interleaved(files, args.rounds, args.seed + attempt).items():
            timed[float(key)] = dict(t, predicted_ms=round(predict(mbv2(space_name, float(key))), 5), load_average=load)
        at, over = bracket(timed, budget)
        if at is not None and over is not None:
            if over - at <= step + 1e-9:
                break
            proposal = {round(at + i * step, 4) for i in range(1, round((over - at) / step))}  # fill the gap
            continue
        # not bracketed: re-centre on the width whose predicted latency x (measured / predicted) is the budget
        ratio = statistics.median(t["measured_ms"] / t["predicted_ms"] for t in timed.values())
        proposal = set(first_ladder(width_at(space_name, predict, budget / ratio), step, n))
        if proposal <= set(timed):  # nothing new near the calibrated width: step outwards
            k = round((min(timed) if at is None else max(timed)) / step)
            proposal = {round((k - i if at is None else k + i) * step, 4) for i in range(1, n + 1)}
            proposal = {w for w in proposal if 0 < w <= MAX_WIDTH_MULT}
    at, over = bracket(timed, budget)
    result = {"budget_ms": budget, "widths": {f"{w:g}": timed[w] for w in sorted(timed)}, "at": at, "over": over}
    if at is None or over is None:
        print(f"  warning: the ladder does not bracket {budget:g} ms (at/under: {at}, over: {result['over']})",
              flush=True)
    write_json(record, result)
    return result


def wait_until_quiet(args, what: str) -> float:
    """Before timing: wait up to ``--quiet-wait`` minutes until the 1-minute load average is at most
    ``--quiet-load`` (other work on the machine reads as a slower model); returns the load average at the start,
    which is recorded with the timings. Timing goes on after the wait, with a warning."""
    t0, load = time.time(), os.getloadavg()[0]
    if load > args.quiet_load:
        print(f"  load average {load:.1f} > {args.quiet_load:g}: waiting up to {args.quiet_wait:g} min for a quiet "
              f"machine before timing {what}", flush=True)
    while load > args.quiet_load and time.time() - t0 < args.quiet_wait * 60:
        time.sleep(10)
        load = os.getloadavg()[0]
    if load > args.quiet_load:
        print(f"  warning: timing {what} at load average {load:.1f}; its latencies may read high", flush=True)
    return round(load, 2)


def session_levels(args, space, predictor, budgets, out: Path) -> dict[float, float]:
    """The session level at every budget (:mod:`hwnas.search.session_level`), timed before any job runs;
    kept in OUT/levels.json and reused (1.0 everywhere with --relevel 0)."""
    from hwnas.search.session_level import measure_session_level

    path = out / "levels.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    levels = {}
    for b in budgets:
        if args.relevel == 0:
            levels[b] = 1.0
            continue
        if ms_tag(b) not in saved:
            load = wait_until_quiet(args, "the session level")
            found = measure_session_level(space, predictor, b, "tflite", "fp32", 1, count=args.relevel,
                                          rounds=args.rounds, seed=args.seed, progress=False)
            print(f"  {b:g} ms: {found.describe()}", flush=True)
            saved[ms_tag(b)] = {"level": found.level, "models": found.models, "load_average": load}
            write_json(path, saved)
        levels[b] = saved[ms_tag(b)]["level"]
    return levels


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.job:
        run_job(args, args.job)
        return 0
    from hwnas.budget import check_budget
    from hwnas.search.band import BandDecoder
    from hwnas.search.config import SearchConfig
    from hwnas.children import child_arch, latency_table
    from hwnas.search.latency import load_latency_predictor
    from hwnas.predictors.leveled import LeveledPredictor
    from hwnas.spaces import get_space
    from hwnas.threads import use_torch_threads

    use_torch_threads(1)
    out = Path(args.out)
    clock = Clock(out)
    # -- prepare: every input checked before any long work ---------------------------------------------------
    space = get_space(args.space)
    predictor, _ = load_latency_predictor(space, args.predictor)
    table = latency_table(space, predictor)
    fastest, slowest = table.min(), table.max()
    budgets = parse_budgets(args.budgets, fastest, slowest, "--budgets")
    if args.accuracy_budgets is None:
        acc_budgets = [sorted(budgets)[len(budgets) // 2]]
    elif args.accuracy_budgets.strip().lower() == "none":
        acc_budgets = []
    else:
        acc_budgets = parse_budgets(args.accuracy_budgets, fastest, slowest, "--accuracy-budgets")
        missing = [b for b in acc_budgets if b not in budgets]
        if missing or len(acc_budgets) > 2:
            raise HwnasError(f"--accuracy-budgets must be one or two of --budgets ({', '.join(map(str, budgets))} "
                             f"ms), got {', '.join(map(str, acc_budgets))} ms")
    variant_budgets = variant_budgets_of(args, acc_budgets, fastest, slowest)  # refused now, not after hours
    band = (SearchConfig.band_low, SearchConfig.band_high)
    for b in budgets:
        check_budget(b, fastest, args.predictor, what=space.name, unit="child")
        BandDecoder(table, band[0] * b, band[1] * b)  # refuses a band no child reaches, naming the range
    if getattr(predictor, "fallback_name", None) and getattr(predictor, "fallback", None) is None:
        predictor.enable_fallback()  # MobileNetV2 widths outside the table

    def predict(arch: Architecture) -> float:
        return float(predictor.predict_ops(arch.ops()))

    data = Data(args, space.params["resolution"])
    if len(data.classes) != space.params["num_classes"]:
        raise HwnasError(f"{args.dataset}: {len(data.classes)} classes, space {space.name} has "
                         f"{space.params['num_classes']}")
    check_run_folder(out, result_settings(args))
    write_json(out / "splits.json", data.indices)
    print(f"{data.name}: {len(data.train)} train / {len(data.selection)} selection / {len(data.test)} test images; "
          f"{space.name} predicted {fastest:.4f}-{slowest:.4f} ms; budgets {', '.join(map(str, budgets))} ms "
          f"(accuracy at {', '.join(map(str, acc_budgets))} ms)", flush=True)

    clock.lap("prepare")
    levels = session_levels(args, space, predictor, budgets, out)
    leveled = {b: latency_table(space, LeveledPredictor(predictor, levels[b])) for b in budgets}
    for b in budgets:  # the searches' bands in this session's milliseconds: refused now if no child reaches one
        BandDecoder(leveled[b], band[0] * b, band[1] * b)
    clock.lap("session level")
    randoms = {b: [child_arch(space, c) for c in random_children(leveled[b], b, args.random, args.seed)]
               for b in acc_budgets}

    exporter = Exporter(out, data)
    try:
        # -- MobileNetV2 widths by measured latency (nothing else runs while they are timed) -----------------
        ladders = {b: mbv2_ladder(args, space.name, b, predict, exporter, out) for b in acc_budgets}
        clock.lap("mbv2 ladder")

        # -- the trainings that need no search: proxy children, random children, MobileNetV2 widths ----------
        rows: list[dict] = []  # one per table row; a model (job) may serve several rows
        trainings: dict[str, dict] = {}
        priority: dict[str, tuple] = {}  # training order: derived children and MobileNetV2 first, random last
        rank = {"proxy": 0, "searched": 0, "variant": 0, "mbv2": 1, "inherited": 2, "mbv2-long": 2, "random": 3}

        def add(row: dict, name: str, arch: Architecture, train_seed: int = 0, init: str | None = None,
                epochs: int | None = None) -> None:
            spec = {"kind": "train", "arch": arch.to_dict()}
            if train_seed:
                spec["train_seed"] = train_seed
            if init:
                spec["init"] = init
            if epochs:
                spec["epochs"] = epochs
            trainings.setdefault(name, spec)
            priority.setdefault(name, (rank[row["kind"]], train_seed, -predict(arch)))
            rows.append(dict(row, model=name, train_seed=train_seed))

        for b in acc_budgets:
            for s in range(args.search_seeds if args.proxy else 0):  # no supernet: the proxy's best in the band
                from hwnas.search.config import SearchConfig
                from hwnas.search.derive import proxy_child

                band = (SearchConfig.band_low * b, SearchConfig.band_high * b)
                found = proxy_child(leveled[b], *band, proxy=args.proxy, seed=s, children=args.proxy_children,
                                    log=out / f"proxy-{args.proxy}-{ms_tag(b)}-seed{s}.jsonl")
                add({"budget_ms": b, "kind": "proxy", "seed": s, "proxy": args.proxy, "band_ms": list(band),
                     "level": levels[b], "proxy_score": found.score, "proxy_children": found.scored,
                     "derive_seconds": round(found.seconds, 1)},
                    f"proxy-{args.proxy}-{ms_tag(b)}-seed{s}", child_arch(space, found.child), train_seed=s)
            for i, arch in enumerate(randoms[b]):
                add({"budget_ms": b, "kind": "random", "index": i}, f"random{i:02d}-{ms_tag(b)}", arch)
            ladder = ladders[b]
            for role in ("at", "over"):
                if ladder[role] is not None:
                    w = ladder[role]
                    for t in range(args.train_seeds):
                        add({"budget_ms": b, "kind": "mbv2", "width_mult": w, "over_budget": role == "over",
                             "ladder_ms": ladder["widths"][f"{w:g}"]["measured_ms"]},
                            f"mbv2-w{w:g}" + (f"-t{t}" if t else ""), mbv2(space.name, w), train_seed=t)
                        if args.long_epochs and role == "at":  # the inherited children's control
                            add({"budget_ms": b, "kind": "mbv2-long", "width_mult": w, "over_budget": False,
                                 "ladder_ms": ladder["widths"][f"{w:g}"]["measured_ms"], "epochs": args.long_epochs},
                                f"mbv2-w{w:g}-e{args.long_epochs}" + (f"-t{t}" if t else ""), mbv2(space.name, w),
                                train_seed=t, epochs=args.long_epochs)
        models: dict[str, dict] = {}

        def train_done(name: str, result: dict) -> None:
            arch = Architecture.from_dict(trainings[name]["arch"])
            path = exporter.export(name, arch, result["weights"])
            scored, correct = path.parent / "scored.json", path.parent / "test_correct.npy"
            if not (scored.exists() and correct.exists()):
                right = exporter.test_correct(path)
                np.save(correct, right)
                write_json(scored, {"test_acc": float(right.mean())})
            models[name] = dict(result, test_acc=json.loads(scored.read_text())["test_acc"])

        def ordered(names) -> dict[str, dict]:
            return {n: trainings[n] for n in sorted(names, key=lambda n: priority[n])}

        if args.searches_last:
            run_jobs("train (no search needed)", ordered(trainings), argv, out, args.jobs, train_done)

        # -- searches ----------------------------------------------------------------------------------------
        searches = {f"search-{ms_tag(b)}-seed{s}": {"kind": "search", "budget_ms": b, "seed": s, "level": levels[b]}
                    for b in budgets for s in range(args.search_seeds if b in acc_budgets else 1)}
        if args.variant_options:
            vname, options = args.variant_options
            searches.update({f"search-{vname}-{ms_tag(b)}-seed{s}": {"kind": "search", "budget_ms": b, "seed": s,
                                                                      "level": levels[b], "options": options}
                             for b in variant_budgets for s in range(args.search_seeds)})
        searched: dict[str, dict] = {}

        def search_done(name: str, result: dict) -> None:
            searched[name] = result
            spec = searches[name]
            if spec["budget_ms"] not in acc_budgets:  # budget hit only: the architecture's latency, untrained
                exporter.export(name, Architecture.from_dict(result["arch"]), None)

        run_jobs("search", searches, argv, out, args.jobs, search_done)
        clock.lap("search")

        # -- the searched children's trainings, then every training not done yet -----------------------------
        for b in budgets:
            for s in range(args.search_seeds):
                search = f"search-{ms_tag(b)}-seed{s}"
                if search not in searches:
                    continue
                row = {"budget_ms": b, "kind": "searched", "seed": s, "search": search, "level": levels[b],
                       "search_seconds": searched[search]["seconds"], "band_ms": searched[search]["band_ms"]}
                arch = Architecture.from_dict(searched[search]["arch"])
                if b in acc_budgets:
                    add(row, f"searched-{ms_tag(b)}-seed{s}", arch, train_seed=s)
                    if args.inherited:  # the same child, starting from the supernet's weights
                        add(dict(row, kind="inherited"), f"inherited-{ms_tag(b)}-seed{s}", arch, train_seed=s,
                            init=str(job_dir(out, search) / "search"))
                else:
                    rows.append(dict(row, model=search, trained=False))
                if b in variant_budgets:  # the variant's child of this seed, trained like the searched one
                    vname = args.variant_options[0]
                    vsearch = f"search-{vname}-{ms_tag(b)}-seed{s}"
                    add(dict(row, kind="variant", variant=vname, search=vsearch,
                             search_seconds=searched[vsearch]["seconds"], band_ms=searched[vsearch]["band_ms"]),
                        f"variant-{vname}-{ms_tag(b)}-seed{s}", Architecture.from_dict(searched[vsearch]["arch"]),
                        train_seed=s)
        run_jobs("train", ordered(trainings), argv, out, args.jobs, train_done)
        if args.train_seeds > 1:  # the seed spread of a second architecture: the best random child of each budget
            extra = []
            for b in acc_budgets:
                pool = [r for r in rows if r["kind"] == "random" and r["budget_ms"] == b]
                best = max(pool, key=lambda r: (models[r["model"]]["selection_acc"], -r["index"]))
                arch = Architecture.from_dict(trainings[best["model"]]["arch"])
                for t in range(1, args.train_seeds):
                    add({"budget_ms": b, "kind": "random", "index": best["index"]}, f"{best['model']}-t{t}", arch,
                        train_seed=t)
                    extra.append(f"{best['model']}-t{t}")
            run_jobs("train (seeds of the best random child)", {n: trainings[n] for n in extra}, argv, out,
                     args.jobs, train_done)
        clock.lap("train")
    finally:
        exporter.close()

    # -- timing: all exported models, interleaved ---------------------------------------------------------------
    files = {r["model"]: out / "models" / r["model"] / f"{r['model']}-fp32.tflite" for r in rows}
    timing_path = out / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    if set(timing.get("models", {})) != set(files) or timing.get("rounds") != args.rounds:
        print(f"timing {len(files)} models: LiteRT fp32, 1 thread, pinned to one core, {args.rounds} rounds",
              flush=True)
        load = wait_until_quiet(args, f"{len(files)} models")
        timing = {"rounds": args.rounds, "models": time_interleaved(files, args.rounds, args.seed),
                  "load_average": load}
        write_json(timing_path, timing)
    else:
        print(f"timing: done earlier ({timing_path})")
    clock.lap("timing")

    # -- report ------------------------------------------------------------------------------------------------
    results = []
    for row in rows:
        name = row["model"]
        arch = Architecture.from_dict(trainings[name]["arch"] if name in trainings else searched[name]["arch"])
        cost = arch.cost()
        r = dict(row, **timing["models"][name], predicted_ms=round(predict(arch), 5),
                 mflops=round(cost.flops / 1e6, 3), mparams=round(cost.params / 1e6, 4),
                 choices=list(arch.choices), stage_widths=list(arch.space.stage_widths),
                 width_mult=arch.space.params["width_mult"], file=str(files[name]))
        r["measured_over_budget"] = round(r["measured_ms"] / r["budget_ms"], 4)
        if name in models:
            m = models[name]
            r.update(selection_acc=m["selection_acc"], test_acc=m["test_acc"], test_acc_torch=m["test_acc_torch"],
                     test_se=math.sqrt(m["test_acc"] * (1 - m["test_acc"]) / len(data.test)),
                     train_seconds=m["train_seconds"])
        results.append(r)
    for b in acc_budgets:  # the best random child, chosen on the selection images only (first training seed)
        pool = [r for r in results if r["kind"] == "random" and r["budget_ms"] == b and not r.get("train_seed")]
        best = max(pool, key=lambda r: (r["selection_acc"], -r["index"]))
        for r in pool:
            r["best_random"] = r is best
    with open(out / "results.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in results)
    pairs = {b: comparisons(results, b) for b in acc_budgets}
    write_json(out / "comparisons.json", [c for b in acc_budgets for c in pairs[b]])
    table_text = write_table(results, budgets, acc_budgets, args, data, clock, Path(args.table), pairs)
    if acc_budgets:  # the budget-hit table alone has no accuracies to plot or models to publish
        plot(results, acc_budgets, out / "accuracy_vs_latency.png")
        publish_models(results, acc_budgets, Path(args.models_dir), data, args)
    clock.lap("report")
    print(table_text)
    print(f"elapsed (all invocations on {out}): {clock.summary()}")
    print(f"results: {out / 'results.jsonl'}, table: {args.table}, plot: {out / 'accuracy_vs_latency.png'}, "
          f"models: {args.models_dir}")
    return 0


# -- outputs ------------------------------------------------------------------------------------------------
def label(r: dict) -> str:
    seed = f", training seed {r['train_seed']}" if r.get("train_seed") else ""
    if r["kind"] == "searched":
        return f"searched (search seed {r['seed']})"
    if r["kind"] == "inherited":
        return f"searched, from supernet weights (search seed {r['seed']})"
    if r["kind"] == "variant":
        return f"searched, {r['variant']} (search seed {r['seed']})"
    if r["kind"] == "proxy":
        return f"{r['proxy']} proxy, no supernet (seed {r['seed']})"
    if r["kind"] == "random":
        return f"random {r['index']}" + (" **(best on selection)**" if r.get("best_random") else "") + seed
    if r["kind"] == "mbv2-long":
        return f"MobileNetV2 width {r['width_mult']:g}, {r['epochs']} epochs" + seed
    return (f"MobileNetV2 width {r['width_mult']:g}" + (" (over budget)" if r["over_budget"] else "")
            + f" (ladder: {r['ladder_ms']:.3f} ms)" + seed)


def test_correct(r: dict) -> np.ndarray:
    """The per-image correctness of a row's model on the test images (saved when it was scored)."""
    return np.load(Path(r["file"]).parent / "test_correct.npy", allow_pickle=False)


def comparisons(results: list[dict], budget: float) -> list[dict]:
    """The paired comparisons at one budget: the searched children (mean over search seeds) against
    MobileNetV2 at / over the budget (mean over training seeds), the best-on-selection random child, and the
    average random child; the inherited-weights children against the same children trained from scratch."""
    from hwnas.paired import mcnemar, paired_bootstrap

    at = [r for r in results if r["budget_ms"] == budget and "test_acc" in r]
    searched = [r for r in at if r["kind"] == "searched"]
    inherited = [r for r in at if r["kind"] == "inherited"]
    randoms = [r for r in at if r["kind"] == "random" and not r.get("train_seed")]
    best = [r for r in randoms if r.get("best_random")]
    best_seeds = [r for r in at if r["kind"] == "random" and best and r["index"] == best[0]["index"]]
    mbv2_at = [r for r in at if r["kind"] == "mbv2" and not r["over_budget"]]
    mbv2_over = [r for r in at if r["kind"] == "mbv2" and r["over_budget"]]
    mbv2_long = [r for r in at if r["kind"] == "mbv2-long"]

    def name(group: list[dict], what: str) -> str:
        return f"{what} ({len(group)} model{'s' if len(group) > 1 else ''})"

    proxy = [r for r in at if r["kind"] == "proxy"]
    variant = [r for r in at if r["kind"] == "variant"]
    pairs = []
    methods = [(searched, name(searched, "searched, mean of search seeds"))]
    if proxy:
        methods.append((proxy, name(proxy, f"{proxy[0]['proxy']} proxy, mean of seeds")))
    if variant:
        methods.append((variant, name(variant, f"searched, {variant[0]['variant']}, mean of search seeds")))
    baselines = [(mbv2_at, f"MobileNetV2 width {mbv2_at[0]['width_mult']:g}" if mbv2_at else ""),
                 (mbv2_over, f"MobileNetV2 width {mbv2_over[0]['width_mult']:g} (over budget)" if mbv2_over else ""),
                 (best, f"best of {len(randoms)} random (on selection)"),
                 (best_seeds, "the same random child, mean of training seeds"),
                 (randoms, f"average of {len(randoms)} random")]
    baselines = [(group, what) for group, what in baselines
                 if group and not (what.startswith("the same") and len(best_seeds) < 2)]
    for method, a in methods:
        if method:
            pairs += [(a, method, name(group, what), group) for group, what in baselines]
    for method, a in methods[1:]:
        if searched:
            pairs.append((a, method, methods[0][1], searched))
    for method, a in methods:  # a rule that needs no test image: run every seed, keep the best on selection
        if len(method) >= 2:
            pick = [max(method, key=lambda r: (r["selection_acc"], -r["seed"]))]
            label = a.rsplit(", mean", 1)[0] + f", best of {len(method)} seeds on selection (seed {pick[0]['seed']})"
            pairs += [(name(pick, label), pick, name(group, what), group) for group, what in baselines
                      if group is mbv2_at or group is best or group is best_seeds]
    if inherited:
        pairs.append((name(inherited, "supernet weights, mean"), inherited, name(searched, "from scratch, mean"),
                      searched))
    if inherited and mbv2_long:  # about as many training images seen on both sides
        pairs.append((name(inherited, "supernet weights, mean"), inherited,
                      name(mbv2_long, f"MobileNetV2 width {mbv2_long[0]['width_mult']:g}, "
                                      f"{mbv2_long[0]['epochs']} epochs, mean"), mbv2_long))
    out = []
    for a_name, a, b_name, b in pairs:
        res = paired_bootstrap([test_correct(r) for r in a], [test_correct(r) for r in b])
        only_a, only_b, p_mcnemar = mcnemar(test_correct(a[0]), test_correct(b[0]))
        out.append({"budget_ms": budget, "a": a_name, "b": b_name, "a_models": [r["model"] for r in a],
                    "b_models": [r["model"] for r in b], "a_acc": float(np.mean([r["test_acc"] for r in a])),
                    "b_acc": float(np.mean([r["test_acc"] for r in b])), "diff": res.diff, "low": res.low,
                    "high": res.high, "p_bootstrap": res.p, "mcnemar_first": [only_a, only_b, p_mcnemar],
                    "images": res.images})
    return out


def comparison_lines(results: list[dict], budget: float, pairs: list[dict]) -> list[str]:
    """Markdown: the paired comparisons, the searched children's percentile among the random ones, and the
    training-seed spread of every architecture trained with several seeds."""
    lines = ["", f"Paired comparisons at {budget:g} ms (the same {pairs[0]['images'] if pairs else 0} test images; "
             "difference of mean accuracy, 95% bootstrap interval over images, two-sided p; McNemar on the "
             "first model of each side):", "",
             "| A | B | A acc | B acc | A - B (points) | 95% interval | p (bootstrap) | McNemar: only A / only B, p |",
             "|---|---|---|---|---|---|---|---|"]
    for c in pairs:
        only_a, only_b, p = c["mcnemar_first"]
        lines.append(f"| {c['a']} | {c['b']} | {c['a_acc']:.2%} | {c['b_acc']:.2%} | {100 * c['diff']:+.2f} | "
                     f"[{100 * c['low']:+.2f}, {100 * c['high']:+.2f}] | {c['p_bootstrap']:.4f} | "
                     f"{only_a} / {only_b}, {p:.4f} |")
    at = [r for r in results if r["budget_ms"] == budget and "test_acc" in r]
    randoms = sorted(r["test_acc"] for r in at if r["kind"] == "random" and not r.get("train_seed"))
    searched = [r for r in at if r["kind"] in ("searched", "proxy", "variant")]
    if randoms and searched:
        what = {"searched": lambda r: "searched", "proxy": lambda r: r["proxy"] + " proxy",
                "variant": lambda r: r["variant"]}
        ranks = ", ".join(f"{what[r['kind']](r)} seed {r['seed']} "
                          f"{100 * np.mean([x < r['test_acc'] for x in randoms]):.0f}%"
                          for r in sorted(searched, key=lambda r: (r["kind"] != "searched", r["kind"], r["seed"])))
        lines += ["", f"Searched children's percentile among the {len(randoms)} random children (share of random "
                  f"children below, test accuracy; random: {randoms[0]:.2%}-{randoms[-1]:.2%}, mean "
                  f"{np.mean(randoms):.2%}): {ranks}."]
    by_arch: dict[str, list[dict]] = {}
    for r in at:
        if r["kind"] in ("mbv2", "random"):
            key = f"MobileNetV2 width {r['width_mult']:g}" if r["kind"] == "mbv2" else f"random {r['index']}"
            by_arch.setdefault(key, []).append(r)
    spread = [(k, v) for k, v in by_arch.items() if len(v) > 1]
    if spread:
        parts = []
        for k, v in spread:
            accs = [r["test_acc"] for r in sorted(v, key=lambda r: r["train_seed"])]
            parts.append(f"{k}: {', '.join(f'{a:.2%}' for a in accs)} (range {100 * (max(accs) - min(accs)):.2f} "
                         "points)")
        lines += ["", "Training-seed spread (one architecture, several training seeds): " + "; ".join(parts) + "."]
    return lines


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def timing_loads(out: Path) -> str:
    """One line: the 1-minute load average when each timing phase of the run started."""
    def read(path: Path) -> dict:
        return json.loads(path.read_text()) if path.exists() else {}

    levels = {k: v.get("load_average") for k, v in read(out / "levels.json").items()}
    ladders = {p.stem[len("ladder-"):]: max((w.get("load_average") or 0) for w in read(p)["widths"].values())
               for p in sorted(out.glob("ladder-*.json"))}
    final = read(out / "timing.json").get("load_average")

    def show(d: dict) -> str:
        return ", ".join(f"{k} {v if v is not None else '?'}" for k, v in d.items()) or "-"
    return (f"Load average (1 min) when timing started: session level {show(levels)}; MobileNetV2 ladder "
            f"{show(ladders)}; all models {final if final is not None else '?'}.")


def write_table(results: list[dict], budgets, acc_budgets, args, data: Data, clock: Clock, path: Path,
                pairs: dict[float, list[dict]]) -> str:
    n_test = len(data.test)
    lines = [f"CIFAR-10 budgets benchmark, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {cpu_name()}, "
             f"predictor `{Path(args.predictor).name}`; {len(data.train)} train / {len(data.selection)} selection / "
             f"{n_test} test images; {args.epochs} training epochs, search {args.search_epochs} epochs x "
             f"{args.search_steps} steps; LiteRT fp32, 1 thread, pinned, median of {args.rounds} "
             "interleaved rounds (± IQR).", "", timing_loads(Path(args.out)), "",
             f"Budget hit (target {HIT_BAND[0]:.2f}-{HIT_BAND[1]:.2f}x):", "",
             "| budget ms | searched child | predicted ms | session level | measured ms | measured / budget | within |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted((r for r in results if r["kind"] in ("searched", "variant")),
                    key=lambda r: (r["budget_ms"], r["kind"], r["seed"])):
        ok = HIT_BAND[0] <= r["measured_over_budget"] <= HIT_BAND[1]
        widths = ",".join(f"{w:g}" for w in r["stage_widths"])
        which = f"{r['variant']} " if r["kind"] == "variant" else ""
        lines.append(f"| {r['budget_ms']:g} | {which}seed {r['seed']}: `{' '.join(r['choices'])}` widths {widths} | "
                     f"{r['predicted_ms']:.3f} | {r['level']:.3f}x | {r['measured_ms']:.3f} ± {r['spread_ms']:.3f} | "
                     f"{r['measured_over_budget']:.2f}x | {'yes' if ok else 'no'} |")
    for b in acc_budgets:
        lines += ["", f"Accuracy at {b:g} ms (test: {n_test} images, ± standard error; trained {args.epochs} "
                  "epochs from scratch with one recipe unless the row says otherwise):", "",
                  "| model | test acc | selection acc | measured ms | predicted ms | MFLOPs | M params |",
                  "|---|---|---|---|---|---|---|"]
        order = {"searched": 0, "variant": 0.5, "inherited": 1, "proxy": 2, "random": 3, "mbv2": 4, "mbv2-long": 5}
        for r in sorted((r for r in results if r["budget_ms"] == b and "test_acc" in r),
                        key=lambda r: (order[r["kind"]], r.get("seed", 0), r.get("index", 0), r.get("width_mult"),
                                       r.get("train_seed", 0))):
            lines.append(f"| {label(r)} | {r['test_acc']:.2%} ± {r['test_se']:.2%} | {r['selection_acc']:.2%} | "
                         f"{r['measured_ms']:.3f} ± {r['spread_ms']:.3f} | {r['predicted_ms']:.3f} | "
                         f"{r['mflops']:.2f} | {r['mparams']:.3f} |")
        lines += comparison_lines(results, b, pairs.get(b, []))
    lines += ["", f"Elapsed (wall, all invocations): {clock.summary()}."]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def plot(results: list[dict], acc_budgets, path: Path) -> None:
    from hwnas.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"searched": ("*", "tab:red", 14, "searched"),
              "inherited": ("P", "tab:orange", 10, "searched, from supernet weights"),
              "variant": ("*", "tab:purple", 14, "searched, variant settings"),
              "proxy": ("D", "tab:green", 8, "proxy-derived, no supernet"),
              "random": ("o", "tab:gray", 6, "random (in band)"),
              "best": ("o", "black", 8, "best random (on selection)"), "mbv2": ("s", "tab:blue", 7, "MobileNetV2"),
              "mbv2-long": ("s", "tab:cyan", 7, "MobileNetV2, longer training")}
    seen = set()
    for r in results:
        if "test_acc" not in r:
            continue
        style = "best" if r.get("best_random") else r["kind"]
        marker, color, size, name = styles[style]
        ax.errorbar(r["measured_ms"], 100 * r["test_acc"], yerr=100 * r["test_se"], fmt=marker, color=color,
                    markersize=size, capsize=2, label=None if style in seen else name)
        seen.add(style)
    for b in acc_budgets:
        ax.axvline(b, color="black", linestyle="--", linewidth=1)
        ax.annotate(f"budget {b:g} ms", (b, 1), xycoords=("data", "axes fraction"), rotation=90, va="top",
                    ha="right", fontsize=8)
    ax.set_xlabel("measured latency (ms, LiteRT fp32, 1 thread)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("CIFAR-10: test accuracy vs measured latency")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def published(r: dict, acc_budgets) -> bool:
    """Whether a row's model is one a reader needs to re-score the claims: every searched child (variant
    included), MobileNetV2 at each bracketing width (training seed 0), the best-on-selection random child of
    each budget, and every random child of the first accuracy budget (for the percentile)."""
    if "test_acc" not in r:
        return False
    if r["kind"] in ("searched", "variant"):  # the child of search seed s is trained with training seed s
        return True
    if r.get("train_seed"):
        return False
    return r["kind"] == "mbv2" or (r["kind"] == "random" and (r.get("best_random", False)
                                                              or r["budget_ms"] == acc_budgets[0]))


def publish_models(results: list[dict], acc_budgets, folder: Path, data: Data, args) -> None:
    """Copy the .tflite of the models :func:`published` picks into ``folder`` (replacing the .tflite files of
    an earlier run there) with a README."""
    from hwnas.data import CIFAR_MEAN, CIFAR_STD

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.tflite"):
        old.unlink()
    listed = []
    for r in sorted((r for r in results if published(r, acc_budgets)), key=lambda r: (r["budget_ms"], r["model"])):
        derived = r["kind"] in ("searched", "inherited", "proxy", "variant")
        name = f"{r['kind']}{'-' + r['variant'] if r['kind'] == 'variant' else ''}-{ms_tag(r['budget_ms'])}" + (f"-seed{r['seed']}" if derived
                                                           else f"-{r['index']:02d}" if r["kind"] == "random" else
                                                           f"-w{r['width_mult']:g}"
                                                           + (f"-e{r['epochs']}" if r.get("epochs") else "")) + (
            f"-t{r['train_seed']}" if r.get("train_seed") and not derived else "")
        shutil.copyfile(r["file"], folder / f"{name}.tflite")
        listed.append(f"| `{name}.tflite` | {label(r)} | {r['budget_ms']:g} | {r['test_acc']:.2%} | "
                      f"{r['measured_ms']:.3f} |")
    (folder / "test_images.txt").write_text("\n".join(data.relative_paths("test")) + "\n")
    mean = ", ".join(f"{v}" for v in CIFAR_MEAN)
    std = ", ".join(f"{v}" for v in CIFAR_STD)
    classes = ", ".join(f'"{c}"' for c in data.classes)
    first = listed[0].split("`")[1] if listed else "MODEL.tflite"
    readme = f"""# CIFAR-10 models of the budgets benchmark

Written by `benchmarks/cifar10_budgets.py` (see docs/cifar10.md for the run). The models a reader needs
to re-score the run's claims: every searched child, MobileNetV2 at the widths bracketing each budget (training
seed 0), the best-on-selection random child of each budget and every random child of {acc_budgets[0]:g} ms,
exported to TFLite fp32 (checked against PyTorch: max |logit difference| <= 1e-4).

| file | model | budget ms | test acc | measured ms |
|---|---|---|---|---|
{chr(10).join(listed)}

Test accuracy is that of these files, run with LiteRT on the {len(data.test)} test images listed in
`test_images.txt` (paths relative to the class folders of the CIFAR-10 training images,
`{data.name}`); no model saw them during search, selection or training.

## Input and output

* input: one image, NHWC float32 `[1, 32, 32, 3]`, RGB;
* preprocessing: pixel / 255, then per channel `(x - mean) / std` with
  mean = ({mean}) and std = ({std}) (`hwnas.data.CIFAR_MEAN` / `CIFAR_STD`); no resizing (32x32 images);
* output: `[1, 10]` logits; class `i` is the `i`-th class folder name in sorted order:
  {classes}.

## Re-scoring

```python
from pathlib import Path

import numpy as np
from PIL import Image
from ai_edge_litert.interpreter import Interpreter

MEAN = np.array([{mean}], np.float32)
STD = np.array([{std}], np.float32)
CLASSES = [{classes}]
IMAGES = Path("cifar10-train")  # the extracted archive's folder that holds the class folders

interp = Interpreter(model_path="{first}", num_threads=1)
interp.allocate_tensors()
inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
correct = 0
names = Path("test_images.txt").read_text().split()
for name in names:
    x = (np.asarray(Image.open(IMAGES / name).convert("RGB"), np.float32) / 255 - MEAN) / STD
    interp.set_tensor(inp["index"], x[None])
    interp.invoke()
    correct += CLASSES[int(interp.get_tensor(out["index"])[0].argmax())] == name.split("/")[0]
print(f"test accuracy {{correct / len(names):.2%}}")
```
"""
    (folder / "README.md").write_text(readme)


if __name__ == "__main__":
    run_script(main, "cifar10_budgets: error")
