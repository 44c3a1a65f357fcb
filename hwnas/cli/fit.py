"""``hwnas fit``: fit the latency lookup table and regressor of one device/runtime/dtype."""

from __future__ import annotations

from pathlib import Path

from hwnas.errors import HwnasError
from hwnas.outputs import check_writable_folder
from hwnas.progress import add_progress_argument
from hwnas.spaces import DEFAULT_SPACE, PRESETS
from hwnas.threads import check_threads


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
    add_progress_argument(p)
    p.set_defaults(func=_fit)
