"""``hwnas profile``: time every unique operator of a space into latency_data/<device>.csv.

Example::

    hwnas profile --space proxyless-tiny --runtime tflite --models 40 --rounds 5 --cpu 1
    taskset -c 1 hwnas profile --space proxyless-tiny --runtime tflite
    hwnas profile --space proxyless-cifar --runtime onnxruntime --cpu 1
    hwnas profile --space proxyless-tiny --runtime adb-tflite --serial R58M... --taskset f0

With ``--rounds``/``--models`` (interleaved, :mod:`hwnas.timing_rounds`): the
operators and that many whole models are exported once, then timed together in
rounds; rows are written when the rounds are done (a rerun resumes from the round
log). Without: one pass over the operators, rows already in the file for the same
operator, runtime, dtype and threads skipped.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from hwnas.cli.space import add_space_arguments, space_from_args
from hwnas.errors import HwnasError
from hwnas.latency_data import DTYPES, check_device_name, default_device_name, describe_this_device
from hwnas.outputs import check_writable_file, check_writable_folder
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
    """--threads, --device, --repeats, --cooldown and --max-temp, checked before anything is timed."""
    check_threads(args.threads, minimum=1)
    if args.device is not None:
        check_device_name(args.device)
    if args.repeats < 1:
        raise HwnasError(f"--repeats must be at least 1, got {args.repeats}")
    if not 0 <= args.cooldown < math.inf:
        raise HwnasError(f"--cooldown must be a finite number of seconds >= 0, got {args.cooldown}")
    if args.max_temp is not None and not math.isfinite(args.max_temp):
        raise HwnasError(f"--max-temp must be a finite number of degrees, got {args.max_temp}")


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
    if args.rounds is not None or args.models is not None:
        return _run_interleaved(args, space)
    runner, device = runner_and_device(args)
    out = Path(args.out) if args.out else LATENCY_DIR / f"{device['name']}.csv"
    check_outputs(out)
    result = profile_ops(space, runner, out, device, args.dtype, args.limit, progress=not args.no_progress)
    print(f"{result.path}: {result.measured} operators measured, {result.skipped} already there "
          f"({result.total} in {space.name} on {runner.name} {args.dtype}, {args.threads} thread(s))")
    return 0


def check_outputs(*tables: Path, models_dir: Path | None = None) -> None:
    """The latency tables (and the models' folder) can be written: checked before anything is timed or written."""
    for table in tables:
        check_writable_file(table)
    if models_dir is not None:
        check_writable_folder(models_dir, "--models-dir")


def models_table(ops_csv: Path) -> Path:
    """``x/dev.csv`` -> ``x/dev-models.csv``."""
    return ops_csv.with_name(f"{ops_csv.stem}-models.csv")


def _run_interleaved(args, space) -> int:
    import statistics

    from hwnas.timing_rounds import profile_interleaved

    rounds = DEFAULT_ROUNDS if args.rounds is None else args.rounds
    models = args.models or 0
    if rounds < 1:
        raise HwnasError(f"--rounds must be at least 1, got {rounds}")
    if models < 0:
        raise HwnasError(f"--models must be 0 or more, got {models}")
    runner, device = runner_and_device(args)
    out = Path(args.out) if args.out else LATENCY_DIR / f"{device['name']}.csv"
    models_dir = Path(args.models_dir) if args.models_dir else out.parent / "models" / space.name
    check_outputs(out, models_table(out), models_dir=models_dir)
    result = profile_interleaved(space, runner, device, args.dtype, models, rounds, out, models_table(out),
                                 models_dir, Path(args.cache).expanduser(), seed=args.seed, limit=args.limit,
                                 new_session=args.new_session, progress=not args.no_progress)
    for path, (added, replaced, same) in result.written.items():
        print(f"{path}: {added} rows added, {replaced} replaced, {same} unchanged")
    rel = sorted(result.rel_spread)
    print(f"{len(result.op_rows)} operators and {len(result.model_rows)} whole models of {space.name} on {runner.name} "
          f"{args.dtype}, {args.threads} thread(s), {rounds} interleaved rounds; spread across rounds (IQR/median): "
          f"median {statistics.median(rel):.2%}, worst {rel[-1]:.2%}")
    return 0


DEFAULT_ROUNDS = 5


def register(sub) -> None:
    parser = sub.add_parser("profile", help="time every unique operator of a space into latency_data/<device>.csv")
    add_space_arguments(parser)
    add_runner_arguments(parser)
    parser.add_argument("--out", help="output CSV (default latency_data/<device>.csv); resumed when it exists")
    parser.add_argument("--limit", type=int, help="profile only the first N operators (quick checks)")
    rounds = parser.add_argument_group(
        "interleaved rounds (recommended for a predictor: operators and whole models timed together)")
    rounds.add_argument("--rounds", type=int, help=f"time everything in this many rounds, each in a new random "
                                                   f"order (default {DEFAULT_ROUNDS} when --models is given)")
    rounds.add_argument("--models", type=int, help="also time this many whole models of the space (uniform samples "
                                                   "and samples near the fastest architecture) into "
                                                   "<out>-models.csv, for the predictor's calibration")
    rounds.add_argument("--seed", type=int, default=0, help="sampling seed of the whole models (default 0)")
    rounds.add_argument("--models-dir", help="where the models' architecture JSONs go "
                                             "(default: models/<space> beside --out)")
    rounds.add_argument("--cache", default=str(Path("~/.cache/hwnas/rounds")),
                        help="exported files and the round log, to resume (default ~/.cache/hwnas/rounds)")
    rounds.add_argument("--new-session", action="store_true",
                        help="time again from round 1 (the previous round log is kept beside the new one)")
    parser.set_defaults(func=_run)
