"""``hwnas kernels profile|fit|calibrate``: kernel predictors for models that are not from a search space."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from hwnas.errors import HwnasError
from hwnas.progress import add_progress_argument
from hwnas.runners.base import STATISTICS


def _profile(args) -> int:
    from hwnas.kernels.profile import (
        adaptive_counts,
        model_specs,
        profile,
        retime_specs,
    )

    if args.runtime == "onnxruntime":
        from hwnas.kernels.onnx_profile import profile
    if args.rounds < 1:
        raise HwnasError(f"--rounds must be at least 1, got {args.rounds}")
    if sum(bool(x) for x in (args.adaptive, args.from_models, args.retime, args.types is not None)) > 1:
        raise HwnasError("--adaptive, --from-models, --retime and --types exclude each other")
    start = time.time()
    counts = adaptive_counts(args.adaptive) if args.adaptive else None
    if args.types is not None:  # an empty list is refused, never read as "every type"
        counts = _type_counts(args.types, args.runtime)
    if counts:
        print(f"{'adaptive ' if args.adaptive else ''}sampling: {counts}", file=sys.stderr)
    if args.max_kernels is not None and args.max_kernels < 1:
        raise HwnasError(f"--max-kernels must be at least 1, got {args.max_kernels}")
    want = ".onnx" if args.runtime == "onnxruntime" else ".tflite"
    for path in args.from_models or []:
        if path.suffix != want:
            raise HwnasError(f"{path}: --runtime {args.runtime} profiles the kernels of {want} files")
    specs = model_specs(args.from_models, args.max_kernels, args.seed) if args.from_models else None
    if specs:
        print(f"{len(specs)} distinct kernels in {len(args.from_models)} model files", file=sys.stderr)
    if args.retime:
        specs = retime_specs(args.retime)
        print(f"{len(specs)} distinct kernels in {len(args.retime)} kernel CSVs, timed again", file=sys.stderr)
    rows = profile(args.out, args.cache, args.rounds, args.seed, not args.no_progress, counts, specs)
    print(f"{len(rows)} kernels -> {args.out}; wall time {time.time() - start:.0f} s", file=sys.stderr)
    return 0


def _type_counts(types: str, runtime: str) -> dict[str, int]:
    """``--types conv,pad``: the runtime's sampling counts of these kernel types only (e.g. types new to it)."""
    from hwnas.kernels.onnx_kernels import ONNX_COUNTS
    from hwnas.kernels.sample import COUNTS

    table = ONNX_COUNTS if runtime == "onnxruntime" else COUNTS
    names = [t.strip() for t in types.split(",") if t.strip()]
    unknown = [t for t in names if t not in table]
    if unknown or not names:
        what = f"unknown kernel type(s) {', '.join(unknown)}" if unknown else "no kernel type given"
        raise HwnasError(f"--types {types!r}: {what} for {runtime}; known: {', '.join(table)}")
    return {t: table[t] for t in names}


def _fit(args) -> int:
    from hwnas.kernels.predictor import fit_kernels
    from hwnas.kernels.profile import read_rows
    from hwnas.latency_data import describe_this_device

    predictor = fit_kernels([r for path in args.kernels for r in read_rows(path)], describe_this_device(),
                            runtime=args.runtime, relative=args.runtime == "onnxruntime")
    predictor.save(args.out)
    print(f"-> {args.out} (overhead {predictor.overhead_ms:.4f} ms)")
    return 0


def _calibrate(args) -> int:
    from hwnas.kernels.calibrate import calibrate
    from hwnas.kernels.predictor import KernelPredictor
    from hwnas.outputs import check_writable_file

    if KernelPredictor.load(args.predictor).runtime == "onnxruntime":  # a bad file: refused here, before any work
        from hwnas.kernels.onnx_calibrate import calibrate

    if args.rounds < 1:
        raise HwnasError(f"--rounds must be at least 1, got {args.rounds}")
    if args.out is not None:
        check_writable_file(args.out)  # before ~1 min of timing
    start = time.time()
    print(json.dumps(calibrate(args.predictor, args.cache, args.rounds, args.out, args.retime, args.statistic),
                     indent=1))
    print(f"wall time {time.time() - start:.0f} s", file=sys.stderr)
    return 0


RUNTIMES = ("tflite", "onnxruntime")


def register(sub) -> None:
    from hwnas.kernels.profile import ADAPTIVE_WAPE

    parser = sub.add_parser("kernels", help="profile sampled kernels, fit and calibrate a kernel predictor")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("profile", help="time sampled single kernels (LiteRT or ONNX Runtime, fp32, 1 thread) "
                                           "into a CSV")
    p.add_argument("--runtime", choices=RUNTIMES, default="tflite", help="runtime to profile (default tflite)")
    p.add_argument("--out", required=True, type=Path, help="kernel CSV to write")
    p.add_argument("--cache", type=Path, default=Path("runs/kernel-cache"), help="exported kernels and round log")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled configurations (default 0)")
    p.add_argument("--adaptive", type=Path, metavar="PREDICTOR.json",
                   help="sample again (use another --seed and --out) the kernel types this fitted predictor "
                        f"predicts worst (cross-validated WAPE above {ADAPTIVE_WAPE:g}%%)")
    p.add_argument("--from-models", nargs="+", type=Path, metavar="MODEL.tflite",
                   help="profile the distinct kernels of these real networks (never the zoo's; .tflite, or .onnx with "
                        "--runtime onnxruntime) instead of sampled ones")
    p.add_argument("--max-kernels", type=int, help="with --from-models: at most this many, drawn at random (--seed)")
    p.add_argument("--retime", nargs="+", type=Path, metavar="KERNELS.csv",
                   help="time the kernels of these CSVs again, together (e.g. on a quiet machine), into --out")
    p.add_argument("--types", metavar="TYPE,...",
                   help="sample only these kernel types (e.g. types new to a predictor; fit with its other CSVs)")
    add_progress_argument(p)
    p.set_defaults(func=_profile)
    p = actions.add_parser("fit", help="fit one regressor per kernel type from kernel CSVs")
    p.add_argument("kernels", nargs="+", help="kernel CSVs written by 'hwnas kernels profile'")
    p.add_argument("--runtime", choices=RUNTIMES, default="tflite", help="runtime the CSVs were timed on")
    p.add_argument("--out", required=True, type=Path, help="kernel predictor JSON to write")
    p.set_defaults(func=_fit)
    p = actions.add_parser("calibrate", help="fit the whole-network terms of a kernel predictor (in place, or "
                                             "into --out)")
    p.add_argument("predictor", type=Path, help="kernel predictor JSON (rewritten with its calibration unless --out)")
    p.add_argument("--out", type=Path, help="write the calibrated predictor here instead of rewriting PREDICTOR")
    p.add_argument("--cache", type=Path, default=Path("runs/kernel-calibration"), help="exported networks")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default 3)")
    p.add_argument("--retime", action="store_true",
                   help="time the networks again now (the cache's round log is set aside; without it an earlier "
                        "timing there is reused): the terms follow the machine's state, calibrate on the day")
    p.add_argument("--statistic", choices=STATISTICS, default="fastest",
                   help="a network's ms from its rounds: the fastest round (default; steadier on a shared VM, and "
                        "what the main job measures) or the drift-corrected median; stored with the terms")
    p.set_defaults(func=_calibrate)
