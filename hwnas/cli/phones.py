"""``hwnas phones import|fit``: public phone measurements -> latency data -> whole-model predictors."""

from __future__ import annotations

from pathlib import Path

from hwnas.outputs import check_writable_file, check_writable_folder
from hwnas.progress import add_progress_argument


def _import(args) -> int:
    from hwnas.phones import import_phone_csv

    check_writable_folder(args.out)
    written = import_phone_csv(args.csv, args.out, args.space)
    models = [p for p in written if p.name.endswith("-models.csv")]
    print(f"wrote {len(models)} devices to {args.out}: " + ", ".join(p.name[: -len("-models.csv")] for p in models))
    return 0


def _fit(args) -> int:
    from threadpoolctl import threadpool_limits

    from hwnas.progress import progress_bar

    from hwnas.latency_data import device_file, read_device
    from hwnas.phones import describe_settings, fit_phone_predictor, read_whole_model_data

    check_writable_file(args.out)
    choices, y = read_whole_model_data(args.models, args.space)
    dev_path = device_file(args.models)
    device = read_device(dev_path) if dev_path.exists() else {"name": Path(args.models).stem}
    steps = 4 * 4 * ((args.test_from is not None) + 1)  # forward folds x (drift, loss) settings per fit
    with threadpool_limits(1), progress_bar(total=steps, desc=f"fit {device['name']}", unit="fit",
                                            enabled=not args.no_progress) as bar:
        predictor, evaluation = fit_phone_predictor(choices, y, device, args.test_from, args.space, bar)
    predictor.save(args.out)
    print(f"{device['name']}: fitted on all {len(y)} rows with the settings selected on them: "
          f"{describe_settings(predictor.meta['settings'])}; wrote {args.out}")
    if evaluation:
        print(f"held-out evaluation ({evaluation['split']}), a separate fit on the train rows with the settings "
              f"selected on those rows: {describe_settings(evaluation['settings'])}")
        print(f"  {'predictor':24s} {'RMSE ms':>8s} {'+-5%':>6s} {'+-10%':>6s} {'Spearman':>8s}")
        for name, m in evaluation["metrics"].items():
            print(f"  {name:24s} {m['rmse_ms']:8.3f} {m['within_5']:6.3f} {m['within_10']:6.3f} {m['spearman']:8.4f}")
    return 0


def _adapt(args) -> int:
    from hwnas.errors import HwnasError
    from hwnas.phones import read_phone_csv
    from hwnas.predictors.few_shot import adapt, check_samples, load_sources
    from hwnas.spaces import get_space

    out = check_writable_file(args.out)
    table = read_phone_csv(args.samples, args.space)
    columns = list(table.latency)
    column = args.column or (columns[0] if len(columns) == 1 else None)
    if column not in table.latency:
        raise HwnasError(f"{args.samples}: {'column ' + repr(column) + ' not found' if column else 'several latency columns'}"
                         f"; pass --column, one of {', '.join(columns)}")
    check_samples(len(table.arch_ids), str(args.samples))
    name = args.name or out.stem
    sources = load_sources(args.sources, args.space, exclude_name=name, exclude_path=out)
    device = {"name": name, "description": f"few-shot predictor from {len(table.arch_ids)} measured architectures",
              "measured": f"column {column} of {Path(args.samples).name}", "source_file": Path(args.samples).name}
    predictor = adapt(get_space(args.space), sources, table.choices, table.latency[column], device,
                      where=str(args.samples), progress=not args.no_progress)
    predictor.save(out)
    fs = predictor.meta["few_shot"]
    shares = ", ".join(f"{k} {v:.2f}" for k, v in fs["shares"].items() if v > 0.005)
    structure = ", ".join(f"{k} {v:.2f}" for k, v in fs["structure"].items() if v > 0.005)
    top = fs["members"][0]
    print(f"{name}: adapted from {fs['samples']} samples ({column}) and {len(fs['sources'])} source tables "
          f"({', '.join(fs['sources'])}); shares {shares or 'none'}; structure {structure or 'none'}; "
          f"a weighted mean of {len(fs['members'])} fits, the heaviest ({top['weight']:.2f}) "
          f"{'+'.join([top['base']] + top['deviations'])}, its leave-one-out mean error "
          f"{100 * fs['loo_mean_abs_rel_error']:.1f}%; {_stage_text(fs['stage_scales'])}; wrote {out}")
    return 0


def _stage_text(refined: dict) -> str:
    if not refined:
        return "no stage scales"
    scales = " ".join(f"{v:.2f}" for v in refined["scales"].values())
    return f"stage scales {scales} (samples' noise {100 * refined['noise']:.1f}%)"


def register(sub) -> None:
    parser = sub.add_parser("phones", help="import public phone latencies of the FBNet space; fit predictors")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("import", help="turn fbnet_cifar100_latency.csv into <device>-models.csv + device JSON")
    p.add_argument("csv", help="the source CSV (arch_id,ops,<device>_ms,...)")
    p.add_argument("--out", default="latency_data/phones", help="output folder (default: latency_data/phones)")
    p.add_argument("--space", default="fbnet-cifar100", help="space the ops strings belong to")
    p.set_defaults(func=_import)
    p = actions.add_parser("fit", help="fit a whole_model predictor from <device>-models.csv")
    p.add_argument("models", help="a <device>-models.csv written by 'hwnas phones import' (or measured)")
    p.add_argument("--out", required=True, help="predictor JSON to write, e.g. predictors/phones/pixel2.json")
    p.add_argument("--test-from", type=int, default=None, metavar="N",
                   help="first evaluate on rows >= N fitted on rows < N (stored in the file), then fit on all rows")
    p.add_argument("--space", default="fbnet-cifar100", help="space of the rows (default: fbnet-cifar100)")
    add_progress_argument(p)
    p.set_defaults(func=_fit)
    p = actions.add_parser("adapt", help="few-shot predictor for a new device from 5-20 measured architectures")
    p.add_argument("samples", help="CSV in the shared phones format (arch_id,ops,<device>_ms), 5-20 rows in the "
                   "order they were measured, oldest first (the level follows the latest ones)")
    p.add_argument("--out", required=True, help="predictor JSON to write, e.g. predictors/phones/mydevice.json")
    p.add_argument("--sources", default="predictors/phones",
                   help="folder (or one file) of known devices' whole_model predictors (default: predictors/phones)")
    p.add_argument("--column", default=None, help="latency column of the samples (needed when there are several)")
    p.add_argument("--name", default=None, help="device name (default: the --out file name)")
    p.add_argument("--space", default="fbnet-cifar100", help="space of the samples (default: fbnet-cifar100)")
    add_progress_argument(p)
    p.set_defaults(func=_adapt)
