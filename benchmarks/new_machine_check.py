"""Independent check of a latency predictor on this machine: fresh whole models, timed by our own loop.

Samples ``--archs`` architectures of the predictor's space with ``--seed`` (not
the profiling seeds), leaving out every architecture the predictor was fitted
or held out on and every one in ``--exclude`` tables; ``--small-share`` of them
drawn toward the fastest architecture (small networks are where a per-network
cost shows). Each is exported whole (random weights) to TFLite (or ONNX for an
onnxruntime predictor) and timed WITHOUT hwnas.runners: a plain loop of
``Interpreter.invoke`` (``InferenceSession.run``) on one thread, this process
pinned to one core, CPU time of the calling thread (``time.thread_time_ns``),
warm-up first, each repeat the mean of a batch of calls, the median of
``--repeats`` repeats; the models are timed in ``--rounds`` rounds in shuffled
order and each model's latency is the median over rounds (``--statistic fastest``:
the fastest repeat of any round instead, as the main job measures). Prints every model,
the shares within +-5% and +-10%, MAPE and the worst cases.

Session level. A shared machine's speed changes with what else runs on it
(here the same models ran 25% faster in CPU time at load ~1 than at load ~6),
and the table the predictor came from was timed in another session. With
``--exclude`` tables, ``--anchors`` of their models (spread over their
latency range) are timed too, in the same rounds; the median of now / table
says how fast this session runs against the table's, and the shares are
printed a second time with the predictions scaled by it (the predictor's
relative accuracy; the first line is the raw one).

    .venv/bin/python benchmarks/new_machine_check.py runs/main/predictor/intel-xeon-2c-tflite-fp32.json
    .venv/bin/python benchmarks/new_machine_check.py predictors/intel-xeon-2c-tflite-int8.json --archs 30 \\
        --exclude latency_data/intel-xeon-2c-models.csv
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hwnas.arch import Architecture, sample_architecture
from hwnas.cli.space import parse_overrides
from hwnas.latency_data import describe_this_device, device_mismatch, read_model_rows
from hwnas.predictors import load_predictor
from hwnas.runners.base import STATISTICS
from hwnas.profiler import arch_file_name, tilted_architecture
from hwnas.spaces import DEFAULT_SPACE, get_space


def known_archs(predictor, tables: list[str]) -> set[str]:
    """Content names (:func:`arch_file_name`) of the predictor's fit and held-out models and of the tables' models."""
    files = list(predictor.overhead.get("models", [])) + list(predictor.overhead.get("held_out", []))
    for table in tables:
        files += [row.arch_file for row in read_model_rows(table)]
    names = set()
    for f in files:
        path = Path(f)
        if path.is_file():
            names.add(arch_file_name(Architecture.load(path)))
        names.add(path.name)  # profiler-made files are named by their content
    return names


def fresh_archs(space, count: int, seed: int, small_share: float, known: set[str]) -> list[Architecture]:
    rng = random.Random(seed)
    n_small = round(count * small_share)
    archs, seen = [], set(known)
    for _ in range(count * 50):
        if len(archs) == count:
            break
        arch = tilted_architecture(space, rng, rng.random()) if len(archs) < n_small else \
            sample_architecture(space, rng)
        if arch_file_name(arch) not in seen:
            seen.add(arch_file_name(arch))
            archs.append(arch)
    return archs


def anchor_rows(tables: list[str], predictor, count: int) -> list:
    """``count`` models of the tables measured for the predictor's target, evenly spread over their latency."""
    rows = [r for t in tables for r in read_model_rows(t)
            if (r.runtime, r.dtype, r.threads) == (predictor.runtime, predictor.dtype, predictor.threads)
            and Path(r.arch_file).is_file()]
    rows.sort(key=lambda r: r.median_ms)
    if len(rows) <= count:
        return rows
    return [rows[round(i * (len(rows) - 1) / max(count - 1, 1))] for i in range(count)]


def shares(measured, predicted) -> str:
    rel = np.abs(predicted / measured - 1)
    return f"within +-5%: {np.mean(rel <= 0.05):.1%}   within +-10%: {np.mean(rel <= 0.10):.1%}   MAPE {rel.mean():.2%}"


def tflite_call(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    interp.set_tensor(detail["index"], np.random.default_rng(0).standard_normal(detail["shape"]).astype(detail["dtype"]))
    return interp.invoke


def onnx_call(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal(inp.shape).astype(np.float32)
    return lambda: sess.run(None, {inp.name: x})


def time_call(call, repeats: int, batch_ms: float = 30.0, pick=statistics.median) -> float:
    """``pick`` (median, or min for the fastest) over ``repeats`` of the mean CPU time (ms) of a batch of calls,
    after a warm-up."""
    start, n = time.thread_time_ns(), 0
    while n < 10 or time.thread_time_ns() - start < 100e6:
        call()
        n += 1
    per_call = (time.thread_time_ns() - start) / n
    batch = max(5, int(batch_ms * 1e6 / max(per_call, 1.0)))
    means = []
    for _ in range(repeats):
        t0 = time.thread_time_ns()
        for _ in range(batch):
            call()
        means.append((time.thread_time_ns() - t0) / batch / 1e6)
    return pick(means)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("predictor", help="predictor file (lookup table or regressor JSON)")
    p.add_argument("--archs", type=int, default=30)
    p.add_argument("--seed", type=int, default=777, help="sampling seed (the profiler samples with 0 and 1)")
    p.add_argument("--small-share", type=float, default=0.3, help="share drawn toward the fastest architecture")
    p.add_argument("--exclude", action="append", default=[], help="a models CSV whose architectures are left out")
    p.add_argument("--anchors", type=int, default=10,
                   help="models of the --exclude tables timed too, for the session level (0: none)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--statistic", choices=STATISTICS, default="median",
                   help="a model's ms: the median of repeats and of rounds (default), or the fastest repeat of any "
                        "round (what the main job measures, hwnas.runners.latency_now)")
    p.add_argument("--core", type=int, default=None, help="core to pin to (default: the last one allowed)")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a field of the predictor's space preset (as the profiling did)")
    args = p.parse_args(argv)

    predictor = load_predictor(args.predictor)
    space = get_space(predictor.space or DEFAULT_SPACE, parse_overrides(args.set))
    if getattr(predictor, "fallback_name", None):
        predictor.enable_fallback()
    runtime, dtype = predictor.runtime, predictor.dtype
    if runtime not in ("tflite", "onnxruntime") or predictor.threads != 1:
        print(f"{args.predictor}: this check times 1-thread tflite or onnxruntime, not {runtime} "
              f"{predictor.threads} thread(s)", file=sys.stderr)
        return 2
    why = device_mismatch(predictor.device, describe_this_device(), runtime)
    if why:
        print(f"warning: {args.predictor} was measured on another device ({why})", file=sys.stderr)
    pick = min if args.statistic == "fastest" else statistics.median
    core = args.core if args.core is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})

    archs = fresh_archs(space, args.archs, args.seed, args.small_share, known_archs(predictor, args.exclude))
    anchors = anchor_rows(args.exclude, predictor, args.anchors) if args.anchors > 0 else []
    everything = archs + [Architecture.load(r.arch_file) for r in anchors]
    print(f"{len(archs)} fresh {space.name} architectures (seed {args.seed}); {runtime} {dtype}, 1 thread, core {core}, "
          f"{args.rounds} rounds x {args.repeats} repeats, CPU time of the calling thread; {len(anchors)} table models "
          "timed too for the session level")
    with tempfile.TemporaryDirectory(prefix="hwnas-check-") as tmp:
        files = []
        if runtime == "tflite":
            from hwnas.export.tflite import TFLiteConverter

            with TFLiteConverter(Path(tmp) / "converter.log") as conv:
                for i, arch in enumerate(everything):
                    files.append(conv.convert(arch.ops(), Path(tmp) / f"m{i}.tflite", "int8" if dtype == "int8"
                                              else "fp32"))
                    print(f"  exported {i + 1}/{len(everything)}", end="\r", file=sys.stderr)
        else:
            from hwnas.export.onnx_export import export_onnx

            files = [export_onnx(arch.ops(), None, Path(tmp) / f"m{i}.onnx") for i, arch in enumerate(everything)]
        load = tflite_call if runtime == "tflite" else onnx_call
        per_model = [[] for _ in everything]
        for r in range(args.rounds):
            order = list(range(len(everything)))
            random.Random(r).shuffle(order)
            for i in order:
                per_model[i].append(time_call(load(files[i]), args.repeats, pick=pick))
    timed = np.array([pick(v) for v in per_model])
    measured = timed[:len(archs)]
    predicted = np.array([predictor.predict_ops(a.ops()) for a in archs])
    err = predicted / measured - 1
    print(f"\n{'#':>3s} {'measured ms':>12s} {'predicted ms':>13s} {'error':>7s}  stage widths / choices")
    for i in np.argsort(measured):
        widths = " ".join(f"{w:g}" for w in archs[i].space.stage_widths)
        print(f"{i:3d} {measured[i]:12.4f} {predicted[i]:13.4f} {err[i]:+7.1%}  [{widths}] {' '.join(archs[i].choices)}")
    rel = np.abs(err)
    print(f"\n{args.predictor}: {len(archs)} unseen models, measured {measured.min():.3f}-{measured.max():.3f} ms")
    print(shares(measured, predicted) + "   worst: " +
          ", ".join(f"#{i} {err[i]:+.1%} ({measured[i]:.3f} ms)" for i in np.argsort(-rel)[:3]))
    if anchors:
        now = timed[len(archs):] / np.array([r.median_ms for r in anchors])
        level = float(np.median(now))
        print(f"session level: the {len(anchors)} table models run at {level:.3f}x their table times now "
              f"(range {now.min():.3f}-{now.max():.3f})")
        print("with predictions x session level: " + shares(measured, predicted * level))
    return 0


if __name__ == "__main__":
    sys.exit(main())
