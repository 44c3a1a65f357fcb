"""``hwnas profile``: time every unique operator of a space into latency_data/<device>.csv.

Example::

    taskset -c 1 hwnas profile --space proxyless-tiny --runtime tflite
    hwnas profile --space proxyless-cifar --runtime onnxruntime --cpu 1
    hwnas profile --space proxyless-tiny --runtime adb-tflite --serial R58M... --taskset f0

Resumes by default: rows already in the file for the same operator, runtime,
dtype and threads are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

from hwnas.cli.space import add_space_arguments, space_from_args
from hwnas.errors import HwnasError
from hwnas.latency_data import DTYPES, default_device_name, describe_this_device
from hwnas.progress import add_progress_argument
from hwnas.runners import RUNNER_NAMES, TimingPolicy, get_runner
from hwnas.threads import check_threads
from hwnas.runners.adb import DELEGATES

LATENCY_DIR = Path("latency_data")


def add_runner_arguments(parser) -> None:
    """Runtime, dtype, threads, device and timing options shared by ``profile`` and ``measure``."""
    parser.add_argument("--runtime", choices=RUNNER_NAMES, default="tflite", help="runtime to time on")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32", help="fp32 or int8 (post-training quantized)")
    parser.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    parser.add_argument("--device", help=f"device name for the output files (default: this machine, "
                                         f"{default_device_name()}; for adb, the phone's model and SoC)")
    parser.add_argument("--no-xnnpack", action="store_true", help="tflite: plain builtin kernels, no XNNPACK")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (median and IQR over them)")
    parser.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto",
                        help="cpu: CPU time of the inference thread (robust to other jobs on a shared machine); "
                             "wall: elapsed time; auto (default): cpu for 1 thread, wall otherwise")
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU core (e.g. 1) while timing")
    add_progress_argument(parser)
    adb = parser.add_argument_group("adb-tflite (Android phone)")
    adb.add_argument("--adb", default="adb", help="adb client (default: adb on PATH)")
    adb.add_argument("--serial", help="device serial when several are connected")
    adb.add_argument("--benchmark-binary", default="/data/local/tmp/hwnas/benchmark_model",
                     help="benchmark_model path on the phone (put it there with "
                          "'python tools/phone.py setup --binary FILE'; see tools/README.md)")
    adb.add_argument("--taskset", help="CPU mask for taskset on the phone, e.g. f0 (big cores)")
    adb.add_argument("--num-runs", type=int, default=50, help="benchmark_model --num_runs")
    adb.add_argument("--warmup-runs", type=int, default=10, help="benchmark_model --warmup_runs")
    adb.add_argument("--delegate", choices=DELEGATES, default="default",
                     help="benchmark_model delegate: xnnpack (--use_xnnpack=true), gpu (--use_gpu=true), nnapi "
                          "(--use_nnapi=true), cpu (builtin kernels, --use_xnnpack=false) or default (the "
                          "binary's own choice); recorded in the device description")
    adb.add_argument("--cooldown", type=float, default=0.0, metavar="SECONDS",
                     help="wait this long before every benchmark_model run (thermal recovery; default 0)")
    adb.add_argument("--max-temp", type=float, default=None, metavar="C",
                     help="before every run, wait until the hottest CPU thermal zone is at or below C degrees")


def check_runner_options(args) -> None:
    """--threads and --repeats, checked before anything is timed."""
    check_threads(args.threads, minimum=1)
    if args.repeats < 1:
        raise HwnasError(f"--repeats must be at least 1, got {args.repeats}")


def runner_and_device(args):
    """The runner and the device description the options ask for."""
    check_runner_options(args)
    if args.cpu is not None:
        try:
            os.sched_setaffinity(0, {args.cpu})
        except (OSError, AttributeError) as exc:
            raise HwnasError(f"--cpu {args.cpu}: cannot pin to this core ({exc})") from None
    if args.runtime == "adb-tflite":
        from hwnas.runners.adb import Adb

        delegate = args.delegate
        if args.no_xnnpack:
            if delegate not in ("default", "cpu"):
                raise HwnasError(f"--no-xnnpack contradicts --delegate {delegate}")
            delegate = "cpu"
        client = Adb(args.adb, args.serial)
        client.check()
        runner = get_runner("adb-tflite", args.threads, binary=args.benchmark_binary, taskset=args.taskset,
                            num_runs=args.num_runs, warmup_runs=args.warmup_runs, repeats=args.repeats,
                            delegate=delegate, cooldown=args.cooldown, max_temp=args.max_temp, adb_client=client)
        device = client.info()
        if args.device:
            device["name"] = args.device
        device["runtimes"] = {"adb-tflite": client.binary_version(args.benchmark_binary)}
    else:
        options = {"xnnpack": not args.no_xnnpack} if args.runtime == "tflite" else {}
        runner = get_runner(args.runtime, args.threads, TimingPolicy(repeats=args.repeats, clock=args.clock),
                            **options)
        device = describe_this_device(args.device)
    device["runners"] = {runner.name: runner.describe()}
    return runner, device


def _run(args) -> int:
    from hwnas.profiler import profile_ops

    space = space_from_args(args)
    if args.limit is not None and args.limit < 1:
        raise HwnasError("--limit must be at least 1")
    runner, device = runner_and_device(args)
    out = Path(args.out) if args.out else LATENCY_DIR / f"{device['name']}.csv"
    result = profile_ops(space, runner, out, device, args.dtype, args.limit, progress=not args.no_progress)
    print(f"{result.path}: {result.measured} operators measured, {result.skipped} already there "
          f"({result.total} in {space.name} on {runner.name} {args.dtype}, {args.threads} thread(s))")
    return 0


def register(sub) -> None:
    parser = sub.add_parser("profile", help="time every unique operator of a space into latency_data/<device>.csv")
    add_space_arguments(parser)
    add_runner_arguments(parser)
    parser.add_argument("--out", help="output CSV (default latency_data/<device>.csv); resumed when it exists")
    parser.add_argument("--limit", type=int, help="profile only the first N operators (quick checks)")
    parser.set_defaults(func=_run)
