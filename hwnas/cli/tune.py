"""``hwnas tune ARCH.json``: random search over learning rate and weight decay."""

from __future__ import annotations

from pathlib import Path

from hwnas.arch import Architecture
from hwnas.data import DEFAULT_DATASET, load_dataset
from hwnas.errors import HwnasError
from hwnas.outputs import check_writable_folder
from hwnas.threads import TORCH_THREADS, TORCH_THREADS_HELP, use_torch_threads
from hwnas.progress import add_progress_argument
from hwnas.tune import DEFAULT_GRID, TuneConfig, best_trial, parse_grid, run_tune

GRID_TEXT = ",".join(f"{v:g}" for v in DEFAULT_GRID)


def _tune(args) -> int:
    arch = Architecture.load(args.arch)
    lrs = parse_grid(args.lr_grid, "learning-rate")
    wds = parse_grid(args.wd_grid, "weight-decay", allow_zero=True)
    trials = args.trials if args.trials is not None else min(8, len(lrs) * len(wds))
    cfg = TuneConfig(lrs=lrs, weight_decays=wds, trials=trials, epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
                     optimizer=args.optimizer, seed=args.seed)
    cfg.check()
    if args.epochs < 1:
        raise HwnasError(f"--epochs must be positive, got {args.epochs}")
    use_torch_threads(args.threads)
    out = check_writable_folder(args.out if args.out else Path("runs") / "tune" / Path(args.arch).stem)
    splits = load_dataset(args.dataset, arch.space.params["resolution"], seed=args.seed,
                          limit_train=args.limit_train, limit_val=args.limit_val)
    if splits.num_classes != arch.space.params["num_classes"]:
        raise HwnasError(f"dataset {splits.name} has {splits.num_classes} classes, the architecture's space has "
                         f"{arch.space.params['num_classes']}")
    n = cfg.trials or len(cfg.lrs) * len(cfg.weight_decays)
    print(f"tuning {args.arch} on {splits.name}: {n} of {len(cfg.lrs)}x{len(cfg.weight_decays)} (lr, weight decay) "
          f"points, {cfg.epochs} epoch(s) each -> {out}")
    trials = run_tune(arch, splits, cfg, out, resume=args.resume, progress=not args.no_progress)
    best = best_trial(trials)
    print(f"{len(trials)} trials; log {out / 'trials.jsonl'}; plot {out / 'tune.png'}")
    print(f"best trial {best['trial']}: lr {best['lr']:g}, weight decay {best['weight_decay']:g}, "
          f"validation accuracy {best['val_acc']:.4f}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("tune", help="random search over learning rate x weight decay for one architecture")
    p.add_argument("arch", help="architecture JSON file")
    p.add_argument("--lr-grid", default=GRID_TEXT, help=f"learning rates, comma-separated (default {GRID_TEXT})")
    p.add_argument("--wd-grid", default=GRID_TEXT, help=f"weight decays, comma-separated (default {GRID_TEXT})")
    p.add_argument("--trials", type=int, default=None,
                   help="grid points to try, in random order (default 8, or the whole grid when smaller)")
    p.add_argument("--dataset", default=DEFAULT_DATASET, help="'digits' (default, embedded) or a dataset path")
    p.add_argument("--epochs", type=int, default=2, help="epochs per trial (default 2)")
    p.add_argument("--max-steps", type=int, default=20, help="cap on steps per epoch (default 20)")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="default sgd")
    p.add_argument("--limit-train", type=int, default=None, help="use only this many training images")
    p.add_argument("--limit-val", type=int, default=None, help="use only this many validation images")
    p.add_argument("--seed", type=int, default=0, help="random seed: trial order, initialisation (default 0)")
    p.add_argument("--threads", type=int, default=TORCH_THREADS, help=TORCH_THREADS_HELP)
    p.add_argument("--out", default=None, help="output folder (default runs/tune/<arch name>)")
    p.add_argument("--resume", action="store_true", help="continue the trials logged in --out")
    add_progress_argument(p)
    p.set_defaults(func=_tune)
