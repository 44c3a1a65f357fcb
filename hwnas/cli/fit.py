"""``hwnas fit``: fit the latency lookup table and regressor of one device/runtime/dtype."""

from __future__ import annotations

from pathlib import Path

from hwnas.errors import HwnasError
from hwnas.outputs import check_writable_folder
from hwnas.progress import add_progress_argument
from hwnas.spaces import DEFAULT_SPACE, PRESETS, get_space
from hwnas.threads import check_threads


def _adapt(args) -> int:
    """``hwnas fit --adapt TABLE --models N``: time N children here, rescale TABLE per operator group."""
    from hwnas.latency_data import describe_this_device
    from hwnas.predictors import load_predictor
    from hwnas.predictors.adapt_table import MIN_MODELS, adapt_table, random_children, time_children
    from hwnas.predictors.lut import LookupTable

    if args.models < MIN_MODELS:
        raise HwnasError(f"--models must be at least {MIN_MODELS}, got {args.models}")
    if args.rounds < 1:
        raise HwnasError(f"--rounds must be at least 1, got {args.rounds}")
    table = load_predictor(args.adapt)
    if not isinstance(table, LookupTable) or table.runtime == "adb-tflite":
        raise HwnasError(f"{args.adapt}: --adapt needs a CPU lookup table (type lut), got a {table.type_name} file "
                         f"for {table.device.get('name', '?')!r}")
    space = get_space(table.space or args.space)
    out_dir = check_writable_folder(args.out)
    device = describe_this_device(args.device)
    out = out_dir / f"{device['name']}-adapted-from-{Path(args.adapt).stem}.json"
    archs = random_children(space, args.models, args.seed)
    print(f"adapting {args.adapt} to {device['name']}: timing {len(archs)} children of {space.name} here "
          f"({table.runtime} {table.dtype}, {table.threads} thread(s), {args.rounds} interleaved rounds)")
    measured = time_children(archs, table.runtime, table.dtype, table.threads, args.rounds, args.seed,
                             progress=not args.no_progress)
    adapted = adapt_table(table, archs, measured, device, str(args.adapt))
    adapted.save(out)
    info = adapted.overhead["adapt"]
    scales = ", ".join(f"{g} {s:.2f}" for g, s in info["scales"].items())
    best = min(t["loo_mean_abs_rel_error"] for t in info["trials"])
    print(f"session level {info['session_level']:.3f}x; group scales ({scales}); lambda {info['lambda']:g}, "
          f"leave-one-out mean error {100 * best:.1f}%")
    print(f"wrote {out}")
    return 0


def _fit(args) -> int:
    from hwnas.latency_data import RUNTIMES, check_device_name, default_device_name
    from hwnas.predictors.fit import fit_device, output_stem, save
    from hwnas.predictors.regressor import METHODS

    if args.runtime not in RUNTIMES:
        raise HwnasError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {args.runtime!r}")
    check_threads(args.threads, minimum=1)
    out = check_writable_folder(args.out)
    if not 0 <= args.holdout < 1:
        raise HwnasError(f"--holdout must be in [0, 1), got {args.holdout}")
    if args.space not in PRESETS:
        raise HwnasError(f"unknown search space {args.space!r}; known: {', '.join(PRESETS)}")
    methods = args.methods.split(",") if args.methods else None
    for m in methods or []:
        if m not in METHODS:
            raise HwnasError(f"unknown method {m!r} in --methods; known: {', '.join(METHODS)}")
    device = check_device_name(args.device) if args.device else default_device_name()
    data_dir = Path(args.data)
    print(f"fitting {device} {args.runtime} {args.dtype} {args.threads} thread(s) from {data_dir}/ ...")
    result = fit_device(data_dir, device, args.runtime, args.dtype, args.threads, args.space,
                        args.holdout, methods, per_op=not args.constant_overhead, progress=not args.no_progress)
    stem = output_stem(device, args.runtime, args.dtype, args.threads, args.space, DEFAULT_SPACE)
    paths = save(result, out, stem)

    print(f"{result.n_op_rows} operators; grouped 5-fold cross-validation on unseen shapes:")
    print(f"  {'method':22s} {'RMSE ms':>9s} {'MAPE %':>8s} {'WAPE %':>8s}")
    for name, s in sorted(result.cv.items(), key=lambda kv: kv[1]["wape"]):
        mark = "  <- kept" if name == result.regressor.method else ""
        print(f"  {name:22s} {s['rmse_ms']:9.4f} {s['mape']:8.2f} {s['wape']:8.2f}{mark}")
    for label, pred in (("lookup table", result.lut), ("regressor", result.regressor)):
        print(f"{label}: overhead {pred.overhead_ms:+.4f} ms, scale {pred.scale:.3f}, "
              f"per operator {pred.per_op_ms:+.5f} ms "
              f"({pred.overhead['source']})")
    print(f"whole models: {len(result.fit_models)} used for the overhead, "
          f"{len(result.held_out_models)} held out for evaluation")
    for p in paths:
        print(f"wrote {p}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("fit", help="fit a latency lookup table + regressor from latency_data/",
                       description="Fit the lookup table and the best cross-validated regressor for one "
                                   "device/runtime/dtype; write predictors/<device>-<runtime>-<dtype>.json "
                                   "(table, naming its fallback regressor) and ...-regressor.json/.skops.")
    p.add_argument("--device", help="device name: latency_data/<device>.csv (default: this machine's name)")
    p.add_argument("--runtime", default="tflite", help="tflite | onnxruntime | adb-tflite (default tflite)")
    p.add_argument("--dtype", default="fp32", help="fp32 | int8 (default fp32)")
    p.add_argument("--threads", type=int, default=1, help="thread count of the rows to use (default 1)")
    p.add_argument("--space", default=DEFAULT_SPACE,
                   help=f"space the predictor is for (whole-model rows of it fit the overhead; default {DEFAULT_SPACE})")
    p.add_argument("--holdout", type=float, default=0.5,
                   help="share of whole-model rows kept out of fitting, for evaluation (default 0.5)")
    p.add_argument("--constant-overhead", action="store_true",
                   help="fit only a constant whole-model overhead (no scale or per-operator correction)")
    p.add_argument("--methods", help="comma-separated regressor methods to compare (default: all)")
    p.add_argument("--data", default="latency_data", help="folder of latency tables (default latency_data/)")
    p.add_argument("--out", default="predictors", help="output folder (default predictors/)")
    p.add_argument("--adapt", metavar="TABLE", default=None,
                   help="instead: adapt this committed lookup table to this machine from --models timed children "
                        "(writes OUT/<this device>-adapted-from-<table>.json)")
    p.add_argument("--models", type=int, default=20, help="children timed for --adapt (default 20)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds for --adapt (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of the children drawn for --adapt (default 0)")
    add_progress_argument(p)
    p.set_defaults(func=lambda args: _adapt(args) if args.adapt else _fit(args))
