"""Profile sampled kernels on this machine's ONNX Runtime (CPU EP, fp32, 1 thread): build, time in rounds, write a CSV.

    hwnas kernels profile --runtime onnxruntime --out latency_data/kernels/<device>-onnxruntime-fp32-t1.csv

Each spec of :func:`hwnas.kernels.onnx_kernels.sample_onnx_specs` becomes a
one-kernel ONNX model (``onnx.helper``, milliseconds each, cached by a digest of
the spec); ORT's optimised graph of it says whether ORT wrapped the kernel in
NCHWc layout changes (``ReorderInput`` / ``ReorderOutput``, cached beside the
model). All are timed together in interleaved rounds (:mod:`hwnas.timing_rounds`:
append-only round log, resumable, drift-corrected, CPU time). Inside a network
most blocked-layout kernels meet no layout change, so each kernel's time is
stored without the reorders its lone model paid (``ms``; as timed:
``alone_ms``), priced by the sampled ``reorder_in`` / ``reorder_out`` kernels
(interpolated in the elements moved); :mod:`hwnas.kernels.onnx_detect` adds a
reorder kernel where a network really has one. The CSV is written once every
round is done; the same columns as the LiteRT one (:func:`hwnas.kernels.profile.read_rows`) plus three.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from hwnas.kernels.onnx_kernels import kernel_model, sample_onnx_specs
from hwnas.kernels.profile import POLICY, spec_name
from hwnas.kernels.sample import features, nchwc_block
from hwnas.progress import progress_bar

REORDERS = ("reorder_in", "reorder_out")


def optimised_ops(path: Path) -> list[str]:
    """The node types of ORT's optimised graph of ``path`` (the runner's settings: ORT_ENABLE_ALL, 1 thread)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimised.onnx"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(out)
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(str(out)).graph.node]


def build_specs(specs: list[dict], cache: Path, progress: bool = True) -> tuple[dict[str, Path], dict[str, dict]]:
    """Each spec's model and its layout changes, made once into ``cache``: (name -> file, name -> {"reorder_in":
    elements, "reorder_out": elements, "ops": optimised node types})."""
    import onnx

    files, layout = {}, {}
    for spec in progress_bar(specs, desc="build kernels", unit="model", enabled=progress):
        name = spec_name(spec)
        path, side = cache / f"{name}.onnx", cache / f"{name}.layout.json"
        if not path.exists():
            tmp = cache / f"tmp-{name}.onnx"
            onnx.save(kernel_model(spec), tmp)
            os.replace(tmp, path)
        if not side.exists():
            ops = optimised_ops(path)
            f = features(spec)
            alone = spec["type"] in REORDERS
            info = {"ops": ops, "reorder_in": 0 if alone or "ReorderInput" not in ops else f["in_elems"],
                    "reorder_out": 0 if alone or "ReorderOutput" not in ops else f["out_elems"]}
            side.write_text(json.dumps(info) + "\n")
        files[name] = path
        layout[name] = json.loads(side.read_text())
    return files, layout


def reorder_costs(specs: list[dict], latency: dict, overhead: float) -> dict[str, tuple[list, list]]:
    """Per layout change: its sampled (elements, ms beyond the invoke) points, sorted, made non-decreasing."""
    costs = {}
    for kind in REORDERS:
        pts = sorted((features(s)["in_elems"], max(0.0, latency[spec_name(s)][0] - overhead))
                     for s in specs if s["type"] == kind)
        costs[kind] = ([p[0] for p in pts], list(np.maximum.accumulate([p[1] for p in pts])))
    return costs


def reorder_ms(costs: dict, kind: str, elems: float) -> float:
    """The ms of one layout change of ``elems`` elements: interpolated between the sampled ones (a straight
    line misses the step where the tensors leave the caches), proportional beyond the largest."""
    x, y = costs[kind]
    if not elems or not x:
        return 0.0
    return float(np.interp(elems, x, y)) if elems <= x[-1] else y[-1] * elems / x[-1]


def profile(out: Path, cache_root: Path, rounds: int, seed: int, progress: bool = True,
            counts: dict | None = None, specs: list[dict] | None = None) -> list[dict]:
    from hwnas.latency_data import describe_this_device
    from hwnas.runners.onnxruntime import OnnxRuntimeRunner
    from hwnas.timing_rounds import cache_folder, file_latencies, time_rounds

    runner = OnnxRuntimeRunner(threads=1, policy=POLICY)
    cache = cache_folder(cache_root, describe_this_device(), runner)
    specs = list(specs) if specs is not None else sample_onnx_specs(seed, counts)
    odd = [s for s in specs if s["type"] in REORDERS and s["c"] % 4]
    if odd:  # ORT's ReorderInput needs channels in multiples of 4, so a one-kernel model of these cannot run
        print(f"skipped {len(odd)} layout changes of channels not divisible by 4 (not runnable alone)", file=sys.stderr)
        specs = [s for s in specs if s not in odd]
    for extra in ({"type": "empty", "h": 1, "c": 1}, {"type": "reorder_in", "h": 28, "c": 64},
                  {"type": "reorder_out", "h": 28, "c": 64}):
        if extra not in specs:
            specs.append(extra)  # the invoke cost and the layout changes, in this session too
    files, layout = build_specs(specs, cache, progress)
    print(f"time: {len(files)} kernels x {rounds} rounds (log {cache / 'rounds.jsonl'})", file=sys.stderr)
    latency = file_latencies(time_rounds(files, runner, rounds, cache / "rounds.jsonl", seed, progress))
    overhead = latency[spec_name({"type": "empty", "h": 1, "c": 1})][0]
    costs = reorder_costs(specs, latency, overhead)
    print("layout changes of 50 k / 500 k elements: " + ", ".join(
        f"{k} {reorder_ms(costs, k, 5e4):.4f} / {reorder_ms(costs, k, 5e5):.4f} ms" for k in REORDERS), file=sys.stderr)
    rows = []
    for spec in specs:
        name = spec_name(spec)
        ms, iqr, _ = latency[name]
        paid = sum(reorder_ms(costs, k, layout[name][k]) for k in REORDERS)
        rows.append({"type": spec["type"], "spec": json.dumps(spec, sort_keys=True),
                     "ms": f"{max(overhead, ms - paid):.6f}", "iqr_ms": f"{iqr:.6f}", "rounds": rounds,
                     "alone_ms": f"{ms:.6f}", "reorder_in_elems": layout[name]["reorder_in"],
                     "reorder_out_elems": layout[name]["reorder_out"], "nchwc_block": nchwc_block()})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out)
    return rows
