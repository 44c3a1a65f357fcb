"""Zoo benchmark on ONNX Runtime: the kernel predictor on torchvision networks (CPU EP, fp32, 1 thread).

    python benchmarks/model_zoo_onnx.py --export-only
    python benchmarks/model_zoo_onnx.py --predictor predictors/kernels/<device>-onnxruntime-fp32-t1.json \\
        [--rounds 3] [--plot docs/predictors-zoo-<device>-onnxruntime-fp32.png]

Networks: ``torchvision.models`` with random weights (MobileNetV2 / V3 small /
V3 large at several widths, MnasNet, ShuffleNetV2, SqueezeNet, ResNet-18/50,
EfficientNet-B0, DenseNet-121) at 32-224 px, none of them used to fit the kernel
predictor (fitted on single sampled kernels only). Each is exported once with
``torch.onnx.export(dynamo=False)`` (cached under ``--cache``), then all are timed
in ``--rounds`` interleaved rounds (:mod:`hwnas.timing_rounds`, resumable, CPU
time; ``--statistic`` and the measurement against itself as in ``model_zoo.py``).
With them, ``--anchors`` (30) of the predictor's own profiled kernels are timed in
the same rounds: the median of their measured / profiled ms is the session speed
(this machine now against the kernel profiling session, as in ``model_zoo.py``).
Prints every network and, per family and overall, the share within +-10% and
+-5% and the MAPE, raw and with the predictions x the session speed, as a
Markdown table (:func:`model_zoo.zoo_table`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hwnas.runners.base import STATISTICS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_zoo import anchor_rows, plot_zoo, session_speed, zoo_table  # noqa: E402  (shared with the LiteRT zoo)

# (family, torchvision builder, keyword arguments, input sizes)
ZOO = [("MobileNetV2", "mobilenet_v2", {"width_mult": w}, (32, 96, 160, 224)) for w in (0.5, 0.75, 1.0)] + [
    ("MobileNetV3Small", "mobilenet_v3_small", {"width_mult": w}, (32, 96, 224)) for w in (0.75, 1.0)] + [
    ("MobileNetV3Large", "mobilenet_v3_large", {"width_mult": w}, (32, 128, 224)) for w in (0.75, 1.0)] + [
    ("MnasNet", f"mnasnet{a}", {}, (32, 96, 224)) for a in ("0_5", "1_0")] + [
    ("ShuffleNetV2", f"shufflenet_v2_x{a}", {}, (32, 96, 224)) for a in ("0_5", "1_0")] + [
    ("SqueezeNet", f"squeezenet1_{a}", {}, (64, 96, 224)) for a in ("0", "1")] + [
    ("ResNet", f"resnet{d}", {}, (32, 64, 128, 224)) for d in (18, 50)] + [
    ("EfficientNetB0", "efficientnet_b0", {}, (32, 64, 128, 224)),
    ("DenseNet121", "densenet121", {}, (32, 64, 128, 224)),
]


def zoo_specs() -> list[tuple[str, str, str, dict, int]]:
    """(family, file name, builder, keyword arguments, size) of every zoo network."""
    from hwnas.kernels.onnx_calibrate import torchvision_name

    return [(family, torchvision_name(builder, kwargs, size), builder, kwargs, size)
            for family, builder, kwargs, sizes in ZOO for size in sizes]


def export(cache: Path) -> dict[str, Path]:
    """Every zoo network exported once into ``cache`` (random weights, eval mode, opset 17); name -> file."""
    from hwnas.kernels.onnx_calibrate import export_torchvision

    cache.mkdir(parents=True, exist_ok=True)
    specs = zoo_specs()
    for i, (_, name, builder, kwargs, size) in enumerate(specs):
        path = cache / f"{name}.onnx"
        if path.exists():
            continue
        t = time.time()
        export_torchvision(builder, kwargs, size, path)
        print(f"export {i + 1}/{len(specs)} {name}: {time.time() - t:.1f} s", file=sys.stderr)
    return {name: cache / f"{name}.onnx" for _, name, *_ in specs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--predictor", type=Path, help="ONNX Runtime kernel predictor JSON (omit with --export-only)")
    p.add_argument("--cache", type=Path, default=Path("runs/zoo-onnx"))
    p.add_argument("--kernel-cache", type=Path, default=Path("runs/kernel-cache"),
                   help="where the anchor kernels are built (one folder per device and runtime)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--anchors", type=int, default=30,
                   help="profiled kernels timed with the zoo for the session speed (0: none)")
    p.add_argument("--export-only", action="store_true")
    p.add_argument("--statistic", choices=STATISTICS, default="median",
                   help="a network's ms from its rounds: drift-corrected median (default) or the fastest round")
    p.add_argument("--retime", action="store_true", help="time again now (the cache's round log is set aside)")
    p.add_argument("--plot", type=Path)
    p.add_argument("--json", type=Path, help="write every network's numbers here")
    args = p.parse_args(argv)
    if args.anchors < 0 or args.rounds < 1:
        p.error("--anchors must be 0 or more and --rounds 1 or more")
    start = time.time()
    predictor = None
    if not args.export_only:
        from hwnas.kernels.predictor import KernelPredictor

        predictor = KernelPredictor.load(args.predictor)  # a bad file: refused before the export and timing
    files = export(args.cache)
    print(f"{len(files)} networks exported ({time.time() - start:.0f} s)", file=sys.stderr)
    if predictor is None:
        return 0
    from hwnas.kernels.onnx_profile import build_specs
    from hwnas.kernels.profile import POLICY
    from hwnas.latency_data import describe_this_device
    from hwnas.modelgraph import read_model
    from hwnas.runners.onnxruntime import OnnxRuntimeRunner
    from hwnas.timing_rounds import cache_folder, latencies_by, repeatability, set_aside, time_rounds

    runner = OnnxRuntimeRunner(threads=1, policy=POLICY)
    anchors = anchor_rows(predictor, args.anchors)
    kcache = cache_folder(args.kernel_cache, describe_this_device(), runner)
    timed = dict(files)
    timed.update(build_specs([r["spec"] for r in anchors.values()], kcache, progress=False)[0])
    if args.retime:
        set_aside(args.cache / "rounds.jsonl")
    timings = time_rounds(timed, runner, args.rounds, args.cache / "rounds.jsonl", 0)
    latency = latencies_by(timings, args.statistic)
    speed = session_speed(latency, anchors)
    repeat = repeatability(timings, files, args.statistic) if args.rounds >= 2 else None
    if repeat:
        print(f"the measurement against itself ({args.statistic} of the even rounds vs of the odd rounds): "
              f"{repeat['within']:.0%} of the {repeat['files']} networks within +-10%, median gap "
              f"{100 * repeat['median_gap']:.1f}%")
    family_of = {name: fam for fam, name, *_ in zoo_specs()}
    results = []
    for name, path in files.items():
        pred = predictor.predict_graph(read_model(path))
        results.append({"family": family_of[name], "name": name, "measured_ms": latency[name],
                        "predicted_ms": pred.total_ms, "unpriced": len(pred.unpriced),
                        "unpriced_flops_share": pred.unpriced_flops_share, "out_of_range": len(pred.out_of_range)})
    for r in results:
        print(f"{r['name']:36s} measured {r['measured_ms']:9.3f} predicted {r['predicted_ms']:9.3f} "
              f"({(r['predicted_ms'] / r['measured_ms'] - 1) * 100:+6.1f}%) unpriced {r['unpriced']} "
              f"out-of-range {r['out_of_range']}")
    print(zoo_table(results, "predicted_ms", speed))
    if args.json:
        args.json.write_text(json.dumps({"statistic": args.statistic, "speed": speed, "repeatability": repeat,
                                         "results": results}, indent=1) + "\n")
    if args.plot:
        plot_zoo(results, sorted({r["family"] for r in results}), args.plot,
                 "measured ms (ONNX Runtime CPU, fp32, 1 thread)")
    print(f"wall time {time.time() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from hwnas.errors import run_script

    run_script(main, "model_zoo_onnx: error")
