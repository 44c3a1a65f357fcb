#!/usr/bin/env python3
"""Profile an Android phone over adb (see tools/README.md for the steps).

    python tools/phone.py check                      # model, SoC, ABI, core clusters + masks, governors, temps
    python tools/phone.py setup --binary PATH --version LABEL   # push benchmark_model, name its build
    python tools/phone.py profile --space proxyless-tiny [--taskset 70] [--dtype int8] [--delegate xnnpack]
    python tools/phone.py measure --space proxyless-tiny --archs 50 [--taskset 70] [--cooldown 2]

``profile`` and ``measure`` run ``hwnas profile`` / ``hwnas measure --archs`` with
``--runtime adb-tflite``: the .tflite files are converted here, pushed one by one
and timed on the phone with benchmark_model; rows go to
latency_data/<phone>.csv (and <phone>-models.csv) in the same format as the
local tables, so the same predictors can be fitted on them. Runs resume.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hwnas.errors import HwnasError  # noqa: E402
from hwnas.runners.adb import (DELEGATES, REMOTE_DIR, VERSION_SUFFIX, Adb, benchmark_command,  # noqa: E402
                               describe_clusters, parse_benchmark_output)

REMOTE_BINARY = f"{REMOTE_DIR}/benchmark_model"


def check(args) -> int:
    client = Adb(args.adb, args.serial)
    serial = client.check()
    info = client.info()
    print(f"phone {serial}: {info['manufacturer']} {info['model']}, SoC {info['cpu']}, {info['cores']} cores "
          f"(CPU parts {', '.join(info['cpu_parts']) or 'unknown'}), {info['os']}, ABI {info['abi']}")
    print(f"device name for latency_data: {info['name']}")
    clusters = info["clusters"]
    if clusters:
        print(f"core clusters (by cpuinfo_max_freq): {describe_clusters(clusters)}")
        for line in mask_advice(clusters):
            print(f"  {line}")
        governors = {c["mask"]: client.read(f"/sys/devices/system/cpu/cpu{c['cores'][0]}/cpufreq/scaling_governor")
                     for c in clusters}
        print("governors: " + ", ".join(f"mask {m} {g or 'unreadable'}" for m, g in governors.items()))
    else:
        print("core clusters: unknown (cpufreq not readable); see tools/README.md for common SoCs")
    temps = client.cpu_temperatures()
    if temps:
        print("CPU thermal zones: " + ", ".join(f"{k} {v:.1f} C" for k, v in sorted(temps.items())))
    if args.json:
        print(json.dumps(info, indent=2))
    return 0


def mask_advice(clusters: list[dict]) -> list[str]:
    """Which --taskset masks to use, from the clusters (slowest first)."""
    if len(clusters) == 1:
        return [f"one cluster: --taskset {clusters[0]['mask']} (or none)"]
    fastest = clusters[-1]
    big = format(sum(int(c["mask"], 16) for c in clusters[1:]), f"0{len(clusters[0]['mask'])}x")
    lines = [f"fastest cluster ({len(fastest['cores'])} core(s)): --taskset {fastest['mask']}",
             f"all but the little cores: --taskset {big}"]
    if len(clusters) >= 3:
        lines.append(f"middle (big) cluster: --taskset {clusters[-2]['mask']}; 1 thread: pin to one cluster and keep "
                     "it for every table of this phone")
    return lines


def setup(args) -> int:
    binary = Path(args.binary)
    if not binary.is_file():
        raise HwnasError(f"{binary}: no such file (get TFLite's benchmark_model for the phone's ABI: tools/README.md)")
    client = Adb(args.adb, args.serial)
    client.check()
    client.shell("mkdir", "-p", REMOTE_DIR)
    client.push(binary, REMOTE_BINARY)
    client.shell("chmod", "755", REMOTE_BINARY)
    with tempfile.TemporaryDirectory() as tmp:
        label = Path(tmp) / "version"
        label.write_text(args.version + "\n")
        client.push(label, REMOTE_BINARY + VERSION_SUFFIX)
    local = hashlib.sha256(binary.read_bytes()).hexdigest()
    version = client.binary_version(REMOTE_BINARY)
    if "sha256" in version and local[:16] not in version:
        raise HwnasError(f"the binary on the phone ({version}) differs from {binary} (sha256 {local[:16]}); "
                         "push again")
    print(f"pushed {binary} to {REMOTE_BINARY}; recorded as: {version}")
    if args.model:
        client.push(args.model, f"{REMOTE_DIR}/smoke.tflite")
        proc = client.shell(*benchmark_command(REMOTE_BINARY, f"{REMOTE_DIR}/smoke.tflite", num_runs=5,
                                               warmup_runs=1, delegate=args.delegate), check=False)
        result = parse_benchmark_output(proc.stdout + proc.stderr)
        print(f"smoke test: {args.model} runs in {result.inference_avg_us / 1000:.3f} ms (avg of 5, delegate "
              f"{args.delegate})")
    return 0


def hwnas_argv(args, command: str) -> list[str]:
    """The ``hwnas`` command line that profile/measure run."""
    argv = [command]
    if command == "measure":
        argv += ["--archs", str(args.archs), "--seed", str(args.seed)]
    argv += ["--space", args.space]
    for pair in args.set or []:
        argv += ["--set", pair]
    argv += ["--runtime", "adb-tflite", "--dtype", args.dtype, "--threads", str(args.threads),
             "--adb", args.adb, "--benchmark-binary", REMOTE_BINARY, "--num-runs", str(args.num_runs),
             "--warmup-runs", str(args.warmup_runs), "--repeats", str(args.repeats), "--delegate", args.delegate,
             "--cooldown", str(args.cooldown)]
    for flag, value in (("--serial", args.serial), ("--taskset", args.taskset), ("--device", args.device),
                        ("--out", args.out), ("--max-temp", args.max_temp)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adb", default="adb", help="adb client (default: adb on PATH)")
    parser.add_argument("--serial", help="phone serial when several are connected")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("check", help="check the phone is there; print model, SoC, cores")
    p.add_argument("--json", action="store_true", help="also print the full device description")
    p.set_defaults(func=check)
    p = sub.add_parser("setup", help="push benchmark_model to the phone")
    p.add_argument("--binary", required=True, help="local benchmark_model binary for the phone's ABI")
    p.add_argument("--version", required=True, metavar="LABEL",
                   help="where the binary comes from, e.g. 'nightly 2026-11-30' or 'v2.16.1 bazel'; recorded with "
                        "its SHA-256 in every table measured with it")
    p.add_argument("--model", help="a .tflite file for a smoke test")
    p.add_argument("--delegate", choices=DELEGATES, default="default", help="delegate for the smoke test")
    p.set_defaults(func=setup)
    for name in ("profile", "measure"):
        p = sub.add_parser(name, help=f"hwnas {name} on the phone")
        p.add_argument("--space", required=True)
        p.add_argument("--set", action="append", metavar="FIELD=VALUE")
        p.add_argument("--dtype", choices=("fp32", "int8"), default="fp32")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--taskset", help="CPU mask on the phone, e.g. f0 for the big cores of a 4+4 SoC "
                                         "(tools/phone.py check prints the masks of this phone)")
        p.add_argument("--delegate", choices=DELEGATES, default="default",
                       help="benchmark_model delegate (xnnpack, gpu, nnapi, cpu = builtin kernels)")
        p.add_argument("--cooldown", type=float, default=0.0, metavar="SECONDS",
                       help="wait before every benchmark_model run (default 0)")
        p.add_argument("--max-temp", type=float, default=None, metavar="C",
                       help="wait before every run until the hottest CPU thermal zone is at or below C")
        p.add_argument("--num-runs", type=int, default=50)
        p.add_argument("--warmup-runs", type=int, default=10)
        p.add_argument("--repeats", type=int, default=3, help="benchmark_model runs per model")
        p.add_argument("--device", help="device name (default: from the phone's model and SoC)")
        p.add_argument("--out", help="output CSV")
        if name == "measure":
            p.add_argument("--archs", type=int, required=True)
            p.add_argument("--seed", type=int, default=0)
        p.set_defaults(func=lambda args, name=name: _hwnas(args, name))
    return parser


def _hwnas(args, command: str) -> int:
    from hwnas.cli import main

    argv = hwnas_argv(args, command)
    print("hwnas " + " ".join(argv), flush=True)
    return main(argv)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HwnasError as exc:
        print(f"phone: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
