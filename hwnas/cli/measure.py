"""``hwnas measure``: time whole models.

Two forms::

    hwnas measure MODEL.tflite|MODEL.onnx [...]          # time model files: median, fastest repeat, spread
    hwnas measure --archs 120 --space proxyless-tiny --runtime tflite [--seed 0]
        # sample 120 architectures (seeded), save them under latency_data/models/<space>/,
        # export whole networks, time them, append to latency_data/<device>-models.csv (resumable)
"""

from __future__ import annotations

from pathlib import Path

from hwnas.cli.jsonout import add_json_argument, messages_to_stderr, print_json
from hwnas.cli.profile import (LATENCY_DIR, add_runner_arguments, check_outputs, check_runner_options,
                               runner_and_device)
from hwnas.cli.space import add_space_arguments, space_from_args
from hwnas.errors import HwnasError


def _files(args) -> list[dict]:
    from hwnas.runners import TimingPolicy, get_runner

    if args.runtime == "adb-tflite":
        phone, _ = runner_and_device(args)
    elif args.cpu is not None:
        runner_and_device(args)  # pins this process to the core
    results = []
    for model in args.models:
        path = Path(model)
        if not path.is_file():
            raise HwnasError(f"{path}: no such model file")
        if args.runtime == "adb-tflite":
            runner = phone
        elif path.suffix.lower() in (".tflite", ".onnx"):
            name = "tflite" if path.suffix.lower() == ".tflite" else "onnxruntime"
            options = {"xnnpack": not args.no_xnnpack} if name == "tflite" else {}
            runner = get_runner(name, args.threads, TimingPolicy(repeats=args.repeats, clock=args.clock),
                                **options)
        else:
            raise HwnasError(f"{path}: expected a .tflite or .onnx model file")
        timing = runner.time(path)
        print(f"{path}: {timing.median_ms:.4f} ms median, {timing.fastest_ms:.4f} ms fastest repeat, "
              f"spread (IQR) {timing.spread_ms:.4f} ms "
              f"[{runner.name}, {args.threads} thread(s), {runner.clock} clock, {timing.repeats} repeats x "
              f"{timing.iters} iters]")
        results.append({"file": str(path), "median_ms": timing.median_ms, "fastest_ms": timing.fastest_ms,
                        "spread_ms": timing.spread_ms,
                        "runtime": runner.name, "threads": args.threads, "clock": runner.clock,
                        "repeats": timing.repeats, "iters": timing.iters})
    return results


def _archs(args) -> dict:
    from hwnas.profiler import measure_archs

    if args.archs < 1:
        raise HwnasError("--archs must be at least 1")
    space = space_from_args(args)
    runner, device = runner_and_device(args)
    out = Path(args.out) if args.out else LATENCY_DIR / f"{device['name']}-models.csv"
    models_dir = Path(args.models_dir) if args.models_dir else LATENCY_DIR / "models" / space.name
    check_outputs(out, models_dir=models_dir)
    result = measure_archs(space, runner, args.archs, out, device, models_dir, args.dtype, args.seed,
                           progress=not args.no_progress)
    print(f"{result.path}: {result.measured} models measured, {result.skipped} already there "
          f"({result.total} sampled from {space.name}, seed {args.seed}, {runner.name} {args.dtype})")
    return {"csv": str(result.path), "measured": result.measured, "skipped": result.skipped, "sampled": result.total,
            "space": space.name, "seed": args.seed, "runtime": runner.name, "dtype": args.dtype,
            "device": device["name"]}


def _run(args) -> int:
    check_runner_options(args)
    if args.archs is not None:
        if args.models:
            raise HwnasError("give either model files or --archs N, not both")
        if not args.space:
            raise HwnasError("--archs needs --space")
        work = _archs
    elif not args.models:
        raise HwnasError("give model files to time, or --archs N --space S to sample architectures")
    else:
        work = _files
    with messages_to_stderr(args.json):
        result = work(args)
    if args.json:
        print_json(result)
    return 0


def register(sub) -> None:
    parser = sub.add_parser("measure", help="time whole models (files, or N sampled architectures of a space)")
    parser.add_argument("models", nargs="*", metavar="MODEL", help=".tflite or .onnx files to time")
    parser.add_argument("--archs", type=int, help="sample and measure this many architectures of --space")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed for --archs (default 0)")
    add_space_arguments(parser, default="")
    add_runner_arguments(parser)
    parser.add_argument("--out", help="output CSV for --archs (default latency_data/<device>-models.csv)")
    parser.add_argument("--models-dir", help="where --archs saves architecture JSONs "
                                             "(default latency_data/models/<space>)")
    add_json_argument(parser)
    parser.set_defaults(func=_run)
