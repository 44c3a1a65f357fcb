"""Profile sampled kernels on this machine's LiteRT (fp32, 1 thread): export, time in interleaved rounds, write a CSV.

    python -m hwnas.kernels.profile --out latency_data/kernels/<device>-tflite-fp32-t1.csv [--rounds 3]

Each spec of :func:`hwnas.kernels.sample.sample_specs` becomes a one-kernel
TFLite model (converted in the TensorFlow worker process, cached by a digest of
the spec), then all are timed together in rounds, each round in a fresh random
order (:mod:`hwnas.timing_rounds`: the round log is append-only, so a killed run
resumes where it stopped, and each timing is corrected for the machine's drift).
The CSV (type, spec, ms, iqr_ms, rounds) is written once every round is done.
It prints its wall time at the end: 586 kernels x 3 rounds took 744 s on a 2-core
machine shared with 3 other jobs, the 400 kernels of 14 real networks 689 s at load 12-15
(docs/predictors.md). ``--adaptive`` samples again
the kernel types a fitted predictor predicts worst; ``--from-models`` profiles the
kernels of real model files (:func:`model_specs`) instead of sampled ones.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
from pathlib import Path

from hwnas.errors import HwnasError
from hwnas.kernels.sample import nchwc_block, sample_specs
from hwnas.progress import progress_bar
from hwnas.runners.base import TimingPolicy

POLICY = TimingPolicy(warmup_ms=20, repeats=3, repeat_ms=20, min_iters=5, max_iters=200, retries=1)


def spec_name(spec: dict) -> str:
    return f"kernel-{spec['type']}-" + hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def export_specs(specs: list[dict], cache: Path, progress: bool = True) -> dict[str, Path]:
    """Each spec converted once into ``cache`` (files there are reused); name -> file."""
    from hwnas.export.tflite import TFLiteConverter

    files = {spec_name(s): cache / f"{spec_name(s)}.tflite" for s in specs}
    todo = [s for s in specs if not files[spec_name(s)].exists()]
    if todo:
        with TFLiteConverter(cache / "convert.log") as conv:
            for spec in progress_bar(todo, desc="export kernels", unit="file", enabled=progress):
                tmp = cache / f"tmp-{spec_name(spec)}.tflite"
                conv.convert_spec({"kernel": spec}, tmp)
                os.replace(tmp, files[spec_name(spec)])
    return files


def read_rows(path: str | Path) -> list[dict]:
    """The rows of a kernel CSV: ``{"type", "spec", "ms", "iqr_ms", "rounds"}`` (and ``nchwc_block`` where the
    table records it); HwnasError naming a bad line."""
    rows = []
    try:
        with open(path, newline="") as f:
            for i, rec in enumerate(csv.DictReader(f), start=2):
                try:
                    rows.append({"type": rec["type"], "spec": json.loads(rec["spec"]), "ms": float(rec["ms"]),
                                 "iqr_ms": float(rec["iqr_ms"]), "rounds": int(rec["rounds"])})
                    if rec.get("nchwc_block"):  # ONNX Runtime tables since the block is recorded
                        rows[-1]["nchwc_block"] = int(rec["nchwc_block"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise HwnasError(f"{path}:{i}: not a kernel row ({exc})") from None
    except OSError as exc:
        raise HwnasError(f"{path}: cannot read the kernel table ({exc.strerror or exc})") from None
    return rows


ADAPTIVE_WAPE = 15.0  # a kernel type whose cross-validated WAPE is above this gets as many new samples again
GROUP_OF = {"conv": "conv", "conv1x1": "conv1x1", "gconv": "gconv", "mul_se": "mul_se"}


def adaptive_counts(predictor_json: Path) -> dict[str, int]:
    """Adaptive sampling: per kernel type of a fitted predictor whose best CV WAPE exceeds ADAPTIVE_WAPE, as many
    new configurations as it was fitted on (drawn with another seed)."""
    from hwnas.jsonfile import read_json

    types = read_json(predictor_json, "kernel predictor").get("types", {})
    return {GROUP_OF.get(t, t): info["rows"] for t, info in types.items()
            if min(info["cv_wape"].values()) > ADAPTIVE_WAPE}


def distinct_specs(specs) -> list[dict]:
    """``specs`` without repeats (equal dicts, in any key order), first occurrence kept, in order."""
    out, seen = [], set()
    for spec in specs:
        key = json.dumps(spec, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(dict(spec))
    return out


def model_specs(paths: list[Path], limit: int | None = None, seed: int = 0) -> list[dict]:
    """The distinct kernel specs of real model files (their kernels as :func:`hwnas.kernels.detect.detect` cuts a
    .tflite file, :func:`hwnas.kernels.onnx_detect.detect_onnx` an .onnx one), to be profiled alone: samples where
    real networks have their kernels (at most ``limit``, drawn at random with ``seed``); HwnasError on a bad file."""
    from hwnas.kernels.detect import detect
    from hwnas.kernels.onnx_detect import detect_onnx
    from hwnas.modelgraph import read_model

    graphs = [read_model(path) for path in paths]
    specs = distinct_specs(k.spec for g in graphs
                           for k in (detect_onnx(g, nchwc_block()) if g.format == "onnx" else detect(g)).kernels)
    if limit is not None and len(specs) > limit:
        import random

        keep = set(random.Random(seed).sample(range(len(specs)), limit))
        specs = [s for i, s in enumerate(specs) if i in keep]
    return specs


def retime_specs(paths: list[Path]) -> list[dict]:
    """The distinct kernel specs of kernel CSVs (:func:`read_rows`), in file order, to be timed again together;
    HwnasError naming a bad file or line."""
    specs = distinct_specs(row["spec"] for path in paths for row in read_rows(path))
    if not specs:
        raise HwnasError(f"{', '.join(map(str, paths))}: no kernel rows to time again")
    return specs


def profile(out: Path, cache_root: Path, rounds: int, seed: int, progress: bool = True,
            counts: dict | None = None, specs: list[dict] | None = None) -> list[dict]:
    from hwnas.latency_data import describe_this_device
    from hwnas.runners.tflite import TFLiteRunner
    from hwnas.timing_rounds import cache_folder, file_latencies, time_rounds

    runner = TFLiteRunner(threads=1, policy=POLICY)
    device = describe_this_device()
    cache = cache_folder(cache_root, device, runner)
    specs = list(specs) if specs is not None else sample_specs(seed, counts)
    if not any(s["type"] == "empty" for s in specs):
        specs.append({"type": "empty", "h": 1, "c": 1})  # the invoke cost, in this session too
    files = export_specs(specs, cache, progress)
    print(f"time: {len(files)} kernels x {rounds} rounds (log {cache / 'rounds.jsonl'})", file=sys.stderr)
    latency = file_latencies(time_rounds(files, runner, rounds, cache / "rounds.jsonl", seed, progress))
    rows = []
    for spec in specs:
        ms, iqr, _ = latency[spec_name(spec)]
        rows.append({"type": spec["type"], "spec": json.dumps(spec, sort_keys=True), "ms": f"{ms:.6f}",
                     "iqr_ms": f"{iqr:.6f}", "rounds": rounds})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["type", "spec", "ms", "iqr_ms", "rounds"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out)
    return rows
