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
(a straight line in the elements moved); :mod:`hwnas.kernels.onnx_detect` adds a
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
from hwnas.kernels.sample import features
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


def reorder_lines(specs: list[dict], latency: dict, overhead: float) -> dict[str, tuple[float, float]]:
    """Per layout change: (ms per element, ms per call beyond the invoke) fitted on the sampled reorder kernels."""
    lines = {}
    for kind in REORDERS:
        pts = [(features(s)["in_elems"], latency[spec_name(s)][0]) for s in specs if s["type"] == kind]
        if len(pts) < 2:
            lines[kind] = (0.0, 0.0)
            continue
        slope, intercept = np.polyfit([p[0] for p in pts], [p[1] for p in pts], 1)
        lines[kind] = (max(0.0, float(slope)), max(0.0, float(intercept) - overhead))
    return lines


def profile(out: Path, cache_root: Path, rounds: int, seed: int, progress: bool = True,
            counts: dict | None = None) -> list[dict]:
    from hwnas.latency_data import describe_this_device
    from hwnas.runners.onnxruntime import OnnxRuntimeRunner
    from hwnas.timing_rounds import cache_folder, file_latencies, time_rounds

    runner = OnnxRuntimeRunner(threads=1, policy=POLICY)
    cache = cache_folder(cache_root, describe_this_device(), runner)
    specs = sample_onnx_specs(seed, counts)
    for extra in ({"type": "empty", "h": 1, "c": 1}, {"type": "reorder_in", "h": 28, "c": 64},
                  {"type": "reorder_out", "h": 28, "c": 64}):
        if extra not in specs:
            specs.append(extra)  # the invoke cost and the layout changes, in this session too
    files, layout = build_specs(specs, cache, progress)
    print(f"time: {len(files)} kernels x {rounds} rounds (log {cache / 'rounds.jsonl'})", file=sys.stderr)
    latency = file_latencies(time_rounds(files, runner, rounds, cache / "rounds.jsonl", seed, progress))
    overhead = latency[spec_name({"type": "empty", "h": 1, "c": 1})][0]
    lines = reorder_lines(specs, latency, overhead)
    print("layout changes: " + ", ".join(f"{k} {a * 1e6:.3f} ms per M elements + {b:.4f} ms"
                                         for k, (a, b) in lines.items()), file=sys.stderr)
    rows = []
    for spec in specs:
        name = spec_name(spec)
        ms, iqr, _ = latency[name]
        paid = sum(lines[k][0] * layout[name][k] + (lines[k][1] if layout[name][k] else 0.0) for k in REORDERS)
        rows.append({"type": spec["type"], "spec": json.dumps(spec, sort_keys=True),
                     "ms": f"{max(overhead, ms - paid):.6f}", "iqr_ms": f"{iqr:.6f}", "rounds": rounds,
                     "alone_ms": f"{ms:.6f}", "reorder_in_elems": layout[name]["reorder_in"],
                     "reorder_out_elems": layout[name]["reorder_out"]})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out)
    return rows
