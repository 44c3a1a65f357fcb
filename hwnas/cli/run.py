"""``hwnas run [--config FILE]``: the main job, end to end.

With no arguments: the embedded default (proxyless-tiny space, digits dataset,
LiteRT fp32 on one thread of this CPU, an automatic budget). Re-running with the
same run folder resumes: finished stages are reused. ``--dataset PATH`` and
``--set SECTION.FIELD=VALUE`` override fields of the config.
"""

from __future__ import annotations

from hwnas.pipeline import run_pipeline
from hwnas.run_config import default_config, load_config, set_field, validate_config
from hwnas.progress import add_progress_argument
from hwnas.search.latency import check_budget_value
from hwnas.threads import check_threads


def _run(args) -> int:
    cfg = load_config(args.config) if args.config else default_config()
    where = args.config or "defaults"
    if args.out:
        cfg["run"]["out"] = args.out
    if args.budget_ms is not None:
        check_budget_value(args.budget_ms)
        cfg["latency"]["budget_ms"] = args.budget_ms
    if args.threads is not None:
        cfg["run"]["threads"] = check_threads(args.threads)
    for pair in args.set or []:
        set_field(cfg, pair)
    if args.dataset:
        cfg["data"]["dataset"] = args.dataset
    cfg = validate_config(cfg, where)
    report = run_pipeline(cfg, fresh=args.fresh, where=where, progress=not args.no_progress,
                          dataset_from_cli=bool(args.dataset))
    print()
    print(report.text)
    return 0


def register(sub) -> None:
    p = sub.add_parser("run", help="the main job: predictor, search, train, export, measure, report")
    p.add_argument("--config", default=None, help="TOML run config (see configs/default.toml); default: built-in")
    p.add_argument("--dataset", default=None, metavar="PATH",
                   help="dataset (overrides data.dataset): 'digits', a folder, a .tar.gz or a CIFAR-10 python "
                        "folder; a relative path is relative to the current folder")
    p.add_argument("--out", default=None, help="run folder (overrides run.out; default runs/main)")
    p.add_argument("--budget-ms", type=float, default=None, help="latency budget in ms (overrides latency.budget_ms)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for search and training (overrides run.threads, default 1; "
                        "0: torch's own choice)")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override a config field, e.g. --set train.epochs=2 (repeatable; see configs/default.toml)")
    p.add_argument("--fresh", action="store_true", help="delete the run folder first instead of resuming")
    add_progress_argument(p)
    p.set_defaults(func=_run)
