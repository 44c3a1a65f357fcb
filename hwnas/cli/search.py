"""``hwnas search``: architecture search under a latency budget.

``--strategy gradient`` (default) trains a supernet (ProxylessNAS, DARTS, SNAS
modes) with :func:`hwnas.search.run_search`; the sample-based strategies run
:func:`hwnas.strategies.runner.run_strategy` and ``--space darts-cell`` runs
:func:`hwnas.cells.search.search_cells`, each with a typed config built here.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys

from hwnas.cli.space import add_space_arguments, parse_overrides
from hwnas.data import DEFAULT_DATASET
from hwnas.errors import HwnasError
from hwnas.outputs import check_writable_folder
from hwnas.spaces import DEFAULT_SPACE
from hwnas.search.config import CONTROLS, DERIVATIONS, SUPERNETS
from hwnas.search.weight_sampling import WEIGHT_SAMPLINGS
from hwnas.supernet.mixed_op import MODES
from hwnas.threads import TORCH_THREADS, TORCH_THREADS_HELP, check_threads, use_torch_threads

STRATEGIES = ("gradient", "random", "evolution", "rl", "progressive")
CELL_SPACE = "darts-cell"

# --fast: small settings for the embedded default (proxyless-tiny + digits) that finish in minutes on a CPU.
FAST = {"epochs": 8, "warmup_epochs": 2, "child_warmup_epochs": 1, "batch_size": 32, "max_steps": 30}
FULL = {"epochs": 30, "warmup_epochs": 5, "child_warmup_epochs": 5, "batch_size": 64, "max_steps": None}


def _module(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise HwnasError(f"{what} is not available in this installation ({module} is missing)") from None
        raise


def _band(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH fractions of the budget, e.g. 0.93,0.97; got {text!r}")
    return low, high


def default_supernet(space_name: str, params: dict, darts_order: int) -> str:
    """'entangled' where it applies (:func:`why_not_entangled`, first-order), else 'separate' with a note saying why."""
    from hwnas.spaces import get_space
    from hwnas.supernet.entangled import why_not_entangled

    reason = why_not_entangled(get_space(space_name, params))
    if reason:
        print(f"note: {reason}; searching with the separate-weights supernet", file=sys.stderr)
        return "separate"
    if darts_order != 1:
        print("note: second-order DARTS runs on the separate-weights supernet", file=sys.stderr)
        return "separate"
    return "entangled"


def config_from_args(args):
    """The :class:`SearchConfig` described by the parsed options."""
    from hwnas.search import SearchConfig

    preset = FAST if args.fast else FULL
    pick = lambda name: getattr(args, name) if getattr(args, name) is not None else preset[name]  # noqa: E731
    if args.child_warmup_epochs is None:  # the preset's, but always leaving one epoch of architecture steps
        args.child_warmup_epochs = max(0, min(preset["child_warmup_epochs"],
                                              pick("epochs") - pick("warmup_epochs") - 1))
    if args.supernet_type is None:
        args.supernet_type = default_supernet(args.space, parse_overrides(args.set), args.darts_order)
    return SearchConfig(
        space=args.space, space_params=parse_overrides(args.set), dataset=args.dataset, predictor=args.predictor,
        budget_ms=args.budget_ms, latency_level=args.latency_level, relevel=args.relevel, mode=args.mode,
        darts_order=args.darts_order, epochs=pick("epochs"),
        warmup_epochs=pick("warmup_epochs"), child_warmup_epochs=pick("child_warmup_epochs"),
        batch_size=pick("batch_size"), max_steps=pick("max_steps"), supernet=args.supernet_type, control=args.control,
        target_fraction=args.target_fraction, band_low=args.band[0], band_high=args.band[1],
        arch_fraction=args.arch_fraction, distill=not args.no_distill, weight_sampling=args.weight_sampling,
        derive=args.derive,
        derive_children=args.derive_children, derive_short_children=args.derive_short_children,
        derive_short_epochs=args.derive_short_epochs,
        limit_train=args.limit_train, limit_val=args.limit_val, seed=args.seed, lr_w=args.lr, lr_alpha=args.lr_alpha,
        lambda_lat=args.lambda_lat, eta_flops=args.eta_flops, eta_mac=args.eta_mac, eta_params=args.eta_params,
        budget_on=args.budget_on, fit_budget=not args.no_fit_budget, device=args.device, out=args.out,
        resume=args.resume,
        progress=not args.no_progress, threads=args.threads, stop_after=args.stop_after)


def _size_head_for_dataset(args) -> None:
    """Without ``--set num_classes=N``, size the classifier for the dataset's classes (and say so)."""
    from hwnas.data import dataset_classes

    overrides = parse_overrides(args.set)
    if "num_classes" in overrides:
        return
    if args.space == CELL_SPACE:
        from hwnas.cells.space import DEFAULTS as params
    else:
        from hwnas.spaces import get_space

        params = get_space(args.space, overrides).params
    classes = dataset_classes(args.dataset)
    if classes != params["num_classes"]:
        print(f"note: {args.space} has {params['num_classes']} classes, dataset {args.dataset} has {classes}; "
              f"searching with num_classes={classes}")
        args.set = [*(args.set or []), f"num_classes={classes}"]


def _run(args) -> tuple[int, dict | None]:
    """Run the search; (exit code, the run's summary: derived.json, summary.json or gap.json)."""
    _size_head_for_dataset(args)
    if args.space == CELL_SPACE:
        cells = _module("hwnas.cells.search", "the DARTS cell space")
        cfg = cell_config_from_args(args)
        check_writable_folder(cfg.out_dir)
        cells.search_cells(cfg, predictor=_cell_predictor(cfg.predictor))
        return 0, _read_summary(cfg.out_dir / "gap.json")
    if args.strategy != "gradient":
        runner = _module("hwnas.strategies.runner", f"strategy {args.strategy!r}")
        run = strategy_run_from_args(args, runner.StrategyRun)
        code = int(runner.run_strategy(run) or 0)
        return code, _read_summary(run.out_dir / "summary.json")
    from hwnas.search import run_search

    config = config_from_args(args)
    check_writable_folder(config.out_dir)
    result = run_search(config)
    s = result.summary
    if s.get("ranks", 1) > 1:
        print(f"{s['ranks']} ranks; largest alpha difference between ranks {s['alpha_max_rank_difference']:g}")
    print(f"run folder: {result.out_dir}")
    return 0, s


def cell_config_from_args(args):
    """The :class:`hwnas.cells.search.CellSearchConfig` of ``hwnas search --space darts-cell`` options.

    ``--mode darts|snas``, ``--darts-order``, ``--lr`` (weights), ``--lr-alpha``; the
    resource term: ``--eta-flops/--eta-mac/--eta-params X`` (unit-free here: X times the
    expected cost over the costliest child's), ``--constraint mild|moderate|aggressive``
    (a preset eta on that kind, flops by default), or ``--predictor P --lambda-lat X``
    (latency). ``--fast``: 2 epochs of at most 5 steps.
    """
    from hwnas.cells.derive import RULES
    from hwnas.cells.search import CellSearchConfig

    mode = getattr(args, "mode", None) or "darts"
    if mode not in RULES:
        raise HwnasError(f"--space darts-cell searches with --mode darts or snas, not {mode!r}")
    values = {"mode": mode}
    names = {"darts_order": "darts_order", "dataset": "dataset", "epochs": "epochs", "batch_size": "batch_size",
             "max_steps": "max_steps", "limit_train": "limit_train", "limit_val": "limit_val", "seed": "seed",
             "lr": "lr_w", "lr_w": "lr_w", "lr_alpha": "lr_alpha", "predictor": "predictor", "out": "out",
             "resume": "resume"}
    for arg, name in names.items():
        value = getattr(args, arg, None)
        if value is not None:
            values[name] = value
    if getattr(args, "fast", False):
        values.setdefault("epochs", 2)
        values.setdefault("max_steps", 5)
    for kind in ("flops", "mac", "params"):
        value = getattr(args, f"eta_{kind}", None)
        if value:
            values["resource"], values["eta"] = kind, value
            break
    if getattr(args, "constraint", None):
        values.setdefault("resource", "flops")
        values["eta"] = args.constraint
    if getattr(args, "predictor", None) and getattr(args, "lambda_lat", None):
        values["resource"], values["eta"] = "latency", args.lambda_lat
    if getattr(args, "device", "cpu") == "cuda":
        raise HwnasError("the darts-cell search runs on the CPU only (--device cpu)")
    use_torch_threads(getattr(args, "threads", TORCH_THREADS))
    cfg = CellSearchConfig(**values, space_params=parse_overrides(getattr(args, "set", None)))
    cfg.progress = not getattr(args, "no_progress", False)
    return cfg


def _cell_predictor(path: str | None):
    """The cell search's latency predictor, loaded once here (None without --predictor)."""
    from hwnas.predictors import load_predictor

    return load_predictor(path) if path else None


def strategy_run_from_args(args, run_class):
    """The :class:`hwnas.strategies.runner.StrategyRun` of ``hwnas search --strategy ...``; its predictor loaded once."""
    import dataclasses

    from hwnas.cli.space import space_from_args
    from hwnas.search.latency import load_latency_predictor

    space = space_from_args(args)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(run_class)
             if f.name not in ("space", "predictor", "predictor_path", "progress") and getattr(args, f.name, None)
             is not None}
    predictor = load_latency_predictor(space, args.predictor)[0] if args.predictor else None
    return run_class(space=space, predictor=predictor, predictor_path=args.predictor,
                     progress=not args.no_progress, **given)


def _read_summary(path) -> dict | None:
    from hwnas.jsonfile import read_json

    return read_json(path, "search summary") if path.exists() else None


def check_options(args) -> None:
    """What every strategy needs of the options, checked before any work: finite numbers, a positive
    --stop-after, a GPU for --device cuda, and no gradient-only option given to another strategy."""
    from hwnas.search.config import check_cuda

    for name, value in vars(args).items():
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, float) and not math.isfinite(v):
                raise HwnasError(f"--{name.replace('_', '-')} must be a finite number, got {v!r}")
    if args.strategy != "gradient" and args.evaluations < 1:
        raise HwnasError(f"--evaluations must be at least 1, got {args.evaluations}")
    if args.stop_after is not None and args.stop_after < 1:
        raise HwnasError(f"--stop-after must be a positive number of epochs, got {args.stop_after}")
    check_cuda(args.device, "--device")
    if args.relevel and args.latency_level != 1.0:  # (the search itself sets the level it measures)
        raise HwnasError(f"give either --relevel {args.relevel} (measure the level now) or --latency-level "
                         f"{args.latency_level:g} (a level measured earlier), not both")
    if args.strategy != "gradient" or args.space == CELL_SPACE:
        what = f"--strategy {args.strategy}" if args.strategy != "gradient" else f"--space {CELL_SPACE}"
        for option, given in (("--relevel", args.relevel != 0), ("--latency-level", args.latency_level != 1.0)):
            if given:
                raise HwnasError(f"{option} is for the gradient search of a block space; {what} does not use it")


def _search(args) -> int:
    from hwnas.cli.jsonout import messages_to_stderr, print_json
    from hwnas.search.latency import check_budget_value

    check_threads(args.threads)
    check_budget_value(args.budget_ms)
    check_budget_value(args.budget_mflops, "--budget-mflops")
    check_options(args)
    if args.predictor:
        from hwnas.predictors import warn_if_other_device

        warn_if_other_device(args.predictor)
    with messages_to_stderr(args.json):
        code, summary = _run(args)
    if args.json:
        print_json(summary)
    return code


def register(sub) -> None:
    p = sub.add_parser("search", help="search an architecture under a latency budget (supernet or sampling)")
    add_space_arguments(p, default=DEFAULT_SPACE)
    p.add_argument("--strategy", choices=STRATEGIES, default="gradient",
                   help="gradient (supernet, default) or a sample-based strategy")
    p.add_argument("--dataset", default=DEFAULT_DATASET,
                   help="'digits' (default, embedded) or a dataset path (folder, .tar.gz, CIFAR-10 python)")
    p.add_argument("--predictor", default=None,
                   help="latency predictor file (default: analytic FLOPs/MAC proxy, see docs/search.md)")
    p.add_argument("--budget-ms", type=float, default=None, help="latency budget in ms for the derived model")
    p.add_argument("--relevel", type=int, default=0, metavar="N",
                   help="gradient: before searching, time N children predicted near the budget on this machine "
                        "now and multiply every prediction by median(measured / predicted), so the derived "
                        "child lands on the budget as measured today (needs --predictor, --budget-ms; ~5 s a child)")
    p.add_argument("--latency-level", type=float, default=1.0, metavar="X",
                   help="gradient: multiply every prediction by X (a session level measured earlier)")
    p.add_argument("--mode", choices=MODES, default="proxyless", help="gradient mode (default proxyless)")
    p.add_argument("--darts-order", type=int, choices=(1, 2), default=1,
                   help="darts: 1 first order, 2 second order (finite-difference Hessian-vector product)")
    p.add_argument("--fast", action="store_true",
                   help=f"small defaults that finish in minutes on a CPU: {FAST}")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"epochs (default {FULL['epochs']}, --fast {FAST['epochs']})")
    p.add_argument("--warmup-epochs", type=int, default=None,
                   help=f"epochs training only the weights (default {FULL['warmup_epochs']}, --fast "
                        f"{FAST['warmup_epochs']})")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"batch size per process (default {FULL['batch_size']}, --fast {FAST['batch_size']})")
    p.add_argument("--max-steps", type=int, default=None,
                   help=f"cap on steps per epoch (default: the whole split; --fast {FAST['max_steps']})")
    p.add_argument("--limit-train", type=int, default=None, help="use only this many training images")
    p.add_argument("--limit-val", type=int, default=None, help="use only this many validation images")
    p.add_argument("--lr", type=float, default=0.05, help="weight learning rate (SGD, cosine; default 0.05)")
    p.add_argument("--lr-alpha", type=float, default=0.02, help="architecture learning rate (Adam; default 0.02)")
    p.add_argument("--lambda-lat", type=float, default=None,
                   help="weight of the latency term (default 1 with --budget-ms, 0 without)")
    p.add_argument("--eta-flops", type=float, default=0.0, help="weight of E[FLOPs] in M multiply-adds")
    p.add_argument("--eta-mac", type=float, default=0.0, help="weight of E[MAC] in M elements")
    p.add_argument("--eta-params", type=float, default=0.0, help="weight of E[params] in M")
    p.add_argument("--constraint", choices=("mild", "moderate", "aggressive"), default=None,
                   help="darts-cell: SNAS resource constraint preset on the --eta-* kind (default flops)")
    p.add_argument("--supernet-type", choices=SUPERNETS, default=None,
                   help="entangled (default: one shared largest block per position, candidates and stage widths "
                        "are crops and slices of it) or separate (one block per candidate, fixed widths; the "
                        "default for non-proxyless spaces and second-order DARTS, which entangled cannot do)")
    p.add_argument("--control", choices=CONTROLS, default="tilt",
                   help="entangled: budget control: tilt (default: the sampled distribution's expected latency is "
                        "held at --target-fraction x budget every step), absolute (TuNAS |E[LAT]/T - 1|) or hinge")
    p.add_argument("--target-fraction", type=float, default=0.95,
                   help="entangled: expected latency target as a fraction of the budget (default 0.95)")
    p.add_argument("--band", type=_band, default=(0.93, 0.97), metavar="LOW,HIGH",
                   help="the derived child's predicted latency lies in [LOW, HIGH] x budget (default 0.93,0.97); "
                        "it is the most probable such child (exact dynamic programme)")
    p.add_argument("--child-warmup-epochs", type=int, default=None,
                   help=f"entangled: sandwich epochs (largest + sampled child) before architecture steps (default "
                        f"{FULL['child_warmup_epochs']}, --fast {FAST['child_warmup_epochs']}, fewer when --epochs "
                        "leaves no epoch for architecture steps)")
    p.add_argument("--derive", choices=DERIVATIONS, default="argmax",
                   help="entangled, with a budget: how the child is chosen after the supernet is trained: argmax "
                        "(default: the most probable child of the band), evolution (children of the band scored "
                        "by the supernet, hwnas.search.derive), short (candidates of the band trained stand-alone "
                        "for a few epochs, hwnas.search.short_training) or the evolution scored by a zero-cost "
                        "proxy (flops, params, mac, synflow: hwnas.search.proxies, seconds); docs/search.md "
                        "compares them")
    p.add_argument("--derive-children", type=int, default=500,
                   help="evolution or proxy: children scored (default 500)")
    p.add_argument("--derive-short-children", type=int, default=12,
                   help="short: candidates of the band trained stand-alone (default 12)")
    p.add_argument("--derive-short-epochs", type=int, default=2,
                   help="short: epochs each candidate is trained (default 2)")
    p.add_argument("--arch-fraction", type=float, default=0.2,
                   help="entangled: share of the training images kept for architecture steps (default 0.2)")
    p.add_argument("--weight-sampling", choices=WEIGHT_SAMPLINGS, default="alpha",
                   help="entangled: the child each weight step trains beside the largest: alpha (default: drawn "
                        "from the architecture distribution), uniform (every decision uniform) or band (uniform "
                        "over the children predicted in [0.85, 1] x budget); hwnas.search.weight_sampling")
    p.add_argument("--no-distill", action="store_true",
                   help="entangled: sampled children learn from the labels, not from the largest child")
    p.add_argument("--budget-on", choices=("derived", "expected"), default="derived",
                   help="separate: latency the budget hinge sees: the argmax child's (straight-through, default) "
                        "or E[LAT]")
    p.add_argument("--no-fit-budget", action="store_true",
                   help="separate: keep the argmax child even when it is not in the budget band")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda when available")
    p.add_argument("--threads", type=int, default=TORCH_THREADS, help=TORCH_THREADS_HELP)
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", default=None, help="run folder (default runs/search/<space>-<mode>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--stop-after", type=int, default=None, metavar="EPOCHS",
                   help="stop after this many finished epochs (continue later with --resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    p.add_argument("--json", action="store_true",
                   help="print the run's summary (derived.json; summary.json of sample-based strategies, gap.json "
                        "of darts-cell) as JSON on stdout, messages on stderr")
    # --- arguments of the sample-based strategies (hwnas.strategies.runner) go below this line ---
    p.add_argument("--evaluations", type=int, default=30,
                   help="sample-based: number of architectures to evaluate (default 30)")
    p.add_argument("--evaluator", choices=("oneshot", "proxy"), default="proxy",
                   help="sample-based: 'proxy' (train each child briefly, see --proxy-*; default) or 'oneshot' "
                        "(shared supernet weights, BN recalibrated per child; needs a well-trained supernet)")
    p.add_argument("--supernet", default=None,
                   help="sample-based, oneshot: trained weight-entangled supernet (.safetensors, or a gradient "
                        "run's folder / checkpoint.pt); default: train one with the sandwich rule (--supernet-steps)")
    p.add_argument("--supernet-steps", type=int, default=300,
                   help="sample-based, oneshot without --supernet: sandwich-rule training steps, the first "
                        "quarter on the largest child alone (default 300)")
    p.add_argument("--calib-batches", type=int, default=4,
                   help="sample-based, oneshot: training batches to re-estimate BN statistics per child (default 4)")
    p.add_argument("--proxy-epochs", type=int, default=1, help="sample-based, proxy: epochs per child (default 1)")
    p.add_argument("--proxy-steps", type=int, default=40,
                   help="sample-based, proxy: steps per epoch per child (default 40, batch 32 unless --batch-size)")
    p.add_argument("--proxy-lr", type=float, default=0.1, help="sample-based, proxy: peak learning rate (default 0.1)")
    p.add_argument("--proxy-width-mult", type=float, default=None,
                   help="sample-based, proxy: train a copy with channels scaled by this factor")
    p.add_argument("--budget-mflops", type=float, default=None,
                   help="sample-based: budget in M multiply-adds instead of --budget-ms")
    p.add_argument("--over-budget", choices=("penalty", "reject"), default="penalty",
                   help="sample-based: 'penalty' = MnasNet reward acc*(cost/budget)^w above the budget (default), "
                        "'reject' = score 0 without evaluating")
    p.add_argument("--penalty-weight", type=float, default=-0.07, help="sample-based: w of the penalty (default -0.07)")
    p.add_argument("--population", type=int, default=None, help="evolution: population size (default 16)")
    p.add_argument("--sample-size", type=int, default=None, help="evolution: tournament size (default 4)")
    p.add_argument("--controller-lr", type=float, default=None, help="rl: controller Adam learning rate (default 0.005)")
    p.add_argument("--beam", type=int, default=None, help="progressive: top K kept per level (default 8)")
    p.add_argument("--surrogate", choices=("ridge", "forest"), default=None,
                   help="progressive: surrogate regressor (default ridge)")
    # --- arguments of the DARTS cell search (hwnas.cells.search) go below this line ---
    p.set_defaults(func=_search)
