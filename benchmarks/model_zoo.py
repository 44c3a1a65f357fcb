"""Zoo benchmark: the kernel predictor on real networks that are not from our search spaces (LiteRT fp32, 1 thread).

    python benchmarks/model_zoo.py --predictor predictors/kernels/<device>-tflite-fp32-t1.json \\
        [--rounds 3] [--plot docs/predictors-zoo-tflite-fp32.png]

Networks: ``keras.applications`` with random weights (MobileNet, MobileNetV2,
MobileNetV3Small/Large, EfficientNetB0, ResNet50, DenseNet121, NASNetMobile) at
several widths and input sizes, none of them used to fit the kernel predictors
(those are fitted on single sampled kernels only). Each is converted to TFLite
in the TensorFlow worker process (cached under ``--cache``), then all are timed
in ``--rounds`` interleaved rounds (:mod:`hwnas.timing_rounds`, resumable) with
``--anchors`` profiled kernels among them: the median of (kernel now / kernel in
the predictor's table) is this session's speed against the profiling session's,
and the shares are printed raw and with the predictions scaled by it (the anchor
kernels are exported into ``--kernel-cache`` when missing). The measurement is
also judged against itself: each network's ms from the even rounds against the
odd rounds (:func:`hwnas.timing_rounds.repeatability`), the ceiling for any
predictor's share on this machine in this hour. ``--statistic`` (default: the
one the predictor's calibration was timed with) takes each network's fastest
round or its drift-corrected median. Prints
per family and overall: share within +-10% and +-5%, MAPE, and a Markdown table.

Calibration (``--calibration``): the whole-network terms of the predictor
(:mod:`hwnas.kernels.calibrate`: what a kernel pays inside a network, mostly
cache misses) follow the machine's state, which changes from hour to hour. With
``file`` (the default: what ``hwnas predict`` does) the predictor file's terms
are used; with ``now`` the calibration networks (none of them in the zoo) are
also timed, in the same interleaved rounds as the zoo, the terms are fitted on
them and both results are printed. On the 2-core VM the zoo then runs a median
5-7% slower than timed alone (docs/predictors.md), so ``now`` is a diagnosis,
not the benchmark's figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from hwnas.errors import HwnasError, run_script
from hwnas.runners.base import STATISTICS

# (family, application, alpha or None, input sizes)
ZOO = [
    ("MobileNet", "MobileNet", a, (32, 96, 160, 224)) for a in (0.25, 0.5, 1.0)
] + [
    ("MobileNetV2", "MobileNetV2", a, (32, 96, 160, 224)) for a in (0.35, 0.5, 1.0)
] + [
    ("MobileNetV3Small", "MobileNetV3Small", a, (32, 96, 224)) for a in (0.75, 1.0)
] + [
    ("MobileNetV3Large", "MobileNetV3Large", a, (32, 128, 224)) for a in (0.75, 1.0)
] + [
    ("EfficientNetB0", "EfficientNetB0", None, (32, 64, 128, 224)),
    ("ResNet50", "ResNet50", None, (32, 64, 128, 224)),
    ("DenseNet121", "DenseNet121", None, (32, 64, 128, 224)),
    ("NASNetMobile", "NASNetMobile", None, (32, 96, 224)),
    ("MobileNet", "MobileNet", 0.75, (32, 96, 160, 224)),
]


def zoo_specs() -> list[tuple[str, str, dict]]:
    """(family, file name, application spec) of every zoo network."""
    out = []
    for family, app, alpha, sizes in ZOO:
        for size in sizes:
            spec = {"app": app, "size": size}
            name = f"{app}-{size}"
            if alpha is not None:
                spec["alpha"] = alpha
                name = f"{app}-a{alpha}-{size}"
            out.append((family, name, spec))
    return out


def export(cache: Path, reverse: bool = False) -> dict[str, Path]:
    """Every zoo network converted once into ``cache`` (a file already there, e.g. from a second export process
    working from the other end, is skipped); name -> file."""
    from hwnas.errors import HwnasError
    from hwnas.export.tflite import TFLiteConverter

    cache.mkdir(parents=True, exist_ok=True)
    files = {}
    todo = [(f, n, s) for f, n, s in zoo_specs() if not (cache / f"{n}.tflite").exists()]
    with TFLiteConverter(cache / f"convert{'-reverse' if reverse else ''}.log") as conv:
        for i, (_, name, spec) in enumerate(todo[::-1] if reverse else todo):
            if (cache / f"{name}.tflite").exists():
                continue
            t = time.time()
            try:
                conv.convert_spec({"app": spec}, cache / f"{name}.tflite")
                print(f"export {i + 1}/{len(todo)} {name}: {time.time() - t:.1f} s", file=sys.stderr)
            except HwnasError as exc:
                print(f"export {name}: FAILED {exc}", file=sys.stderr)
    for _, name, _ in zoo_specs():
        if (cache / f"{name}.tflite").exists():
            files[name] = cache / f"{name}.tflite"
    return files


def shares(pred: list[float], meas: list[float]) -> dict:
    err = [p / m - 1 for p, m in zip(pred, meas)]
    return {"n": len(err), "within10": sum(abs(e) <= 0.10 for e in err) / len(err),
            "within5": sum(abs(e) <= 0.05 for e in err) / len(err),
            "mape": statistics.mean(abs(e) for e in err) * 100}


def anchor_rows(predictor, count: int) -> dict[str, dict]:
    """``count`` of the kernel predictor's profiled rows spread evenly over their ms (those above the clock's
    grain, 0.02 ms), by kernel file name: timed with the zoo, they give the session speed (:func:`session_speed`)."""
    from hwnas.kernels.profile import spec_name

    if count <= 0:
        return {}
    rows = sorted((r for r in predictor.rows if r["ms"] > 0.02), key=lambda r: r["ms"])
    return {spec_name(r["spec"]): r for r in rows[:: max(1, len(rows) // count)]}


def session_speed(latency: dict[str, float], anchors: dict[str, dict]) -> float:
    """The median over the anchor kernels of their ms now / their profiled ms (1 without anchors), printed."""
    speed = statistics.median(latency[n] / anchors[n]["ms"] for n in anchors) if anchors else 1.0
    print(f"session speed vs the kernel profiling session: {speed:.3f} (median of {len(anchors)} anchor kernels)")
    return speed


def zoo_table(results: list[dict], key: str, speed: float) -> str:
    """Per family and overall (Markdown): share within +-10% and +-5% and MAPE of ``r[key]`` against the
    measured ms, raw and with the predictions scaled by the session ``speed``."""
    lines = ["| family | networks | within +-10% | within +-5% | MAPE | within +-10% (session-scaled) | "
             "MAPE (scaled) |", "|---|---|---|---|---|---|---|"]
    for fam in sorted({r["family"] for r in results}) + ["all"]:
        rs = [r for r in results if fam in ("all", r["family"])]
        raw = shares([r[key] for r in rs], [r["measured_ms"] for r in rs])
        scaled = shares([r[key] * speed for r in rs], [r["measured_ms"] for r in rs])
        lines.append(f"| {fam} | {raw['n']} | {raw['within10']:.0%} | {raw['within5']:.0%} | {raw['mape']:.1f}% | "
                     f"{scaled['within10']:.0%} | {scaled['mape']:.1f}% |")
    return "\n".join(lines)


def plot_zoo(results: list[dict], families, path, xlabel: str) -> None:
    """Predicted vs measured ms of every zoo network, log axes, one colour per family, +-10% lines."""
    from hwnas.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for fam in families:
        rs = [r for r in results if r["family"] == fam]
        ax.scatter([r["measured_ms"] for r in rs], [r["predicted_ms"] for r in rs], s=14, label=fam)
    lo = min(min(r["measured_ms"], r["predicted_ms"]) for r in results) * 0.8
    hi = max(max(r["measured_ms"], r["predicted_ms"]) for r in results) * 1.25
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    for f in (0.9, 1.1):
        ax.plot([lo, hi], [lo * f, hi * f], "k:", lw=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("predicted ms (kernel predictor)")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--predictor", type=Path, help="kernel predictor JSON (omit with --export-only)")
    p.add_argument("--cache", type=Path, default=Path("runs/zoo"))
    p.add_argument("--kernel-cache", type=Path, default=Path("runs/kernel-cache"),
                   help="the profiled kernels' files (anchors)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--anchors", type=int, default=30)
    p.add_argument("--export-only", action="store_true")
    p.add_argument("--reverse", action="store_true", help="export from the end of the list (a second process)")
    p.add_argument("--calibration", choices=("file", "now"), default="file",
                   help="whole-network terms: the predictor file's (default), or also fitted now on the "
                        "calibration networks timed in the same rounds as the zoo (both printed)")
    p.add_argument("--calibration-cache", type=Path, default=Path("runs/kernel-calibration"),
                   help="the calibration networks' files (exported there if missing)")
    p.add_argument("--retime", action="store_true",
                   help="time everything again (the round log in --cache is set aside; without it the timings "
                        "there are reused and only missing ones are taken)")
    p.add_argument("--statistic", choices=STATISTICS,
                   help="a network's ms from its rounds: the drift-corrected median or the fastest round (what the "
                        "main job measures; steadier on a shared VM, see hwnas.runners.latency_now); default: the "
                        "one the predictor's calibration was timed with (median for files without it)")
    p.add_argument("--plot", type=Path)
    p.add_argument("--json", type=Path, help="write every network's numbers here")
    args = p.parse_args(argv)
    if args.predictor is None and not args.export_only:
        p.error("--predictor is needed (or --export-only)")
    if args.anchors < 0:
        p.error("--anchors must be 0 or more")  # before any export or timing
    start = time.time()
    predictor = None
    if not args.export_only:  # a bad predictor file or calibration folder: refused before the export and timing
        from hwnas.kernels.predictor import KernelPredictor
        from hwnas.outputs import check_writable_folder

        predictor = KernelPredictor.load(args.predictor)
        args.statistic = args.statistic or (predictor.calibration or {}).get("statistic", "median")
        if args.calibration == "now":
            check_writable_folder(args.calibration_cache, "--calibration-cache")
    files = export(args.cache, args.reverse)
    print(f"{len(files)} networks exported ({time.time() - start:.0f} s)", file=sys.stderr)
    if predictor is None:
        return 0
    from hwnas.kernels.profile import POLICY, export_specs
    from hwnas.latency_data import describe_this_device
    from hwnas.modelgraph import read_model
    from hwnas.runners.tflite import TFLiteRunner
    from hwnas.timing_rounds import cache_folder, latencies_by, repeatability, set_aside, time_rounds

    runner = TFLiteRunner(threads=1, policy=POLICY)
    kcache = cache_folder(args.kernel_cache, describe_this_device(), runner)
    anchors = anchor_rows(predictor, args.anchors)
    export_specs([r["spec"] for r in anchors.values()], kcache)  # on a fresh clone the cache is empty
    timed = dict(files)
    timed.update({name: kcache / f"{name}.tflite" for name in anchors})
    calibration_files = {}
    if args.calibration == "now":
        from hwnas.kernels.calibrate import export_networks

        calibration_files = export_networks(args.calibration_cache)
        if set(calibration_files) & set(timed):
            raise HwnasError(f"calibration networks named like zoo networks or anchors: "
                             f"{sorted(set(calibration_files) & set(timed))}")
        timed.update(calibration_files)
    if args.retime:
        set_aside(args.cache / "rounds.jsonl")
    timings = time_rounds(timed, runner, args.rounds, args.cache / "rounds.jsonl", 0)
    latency = latencies_by(timings, args.statistic)
    speed = session_speed(latency, anchors)
    repeat = repeatability(timings, files, args.statistic) if args.rounds >= 2 else None
    if repeat:
        print(f"the measurement against itself ({args.statistic} of the even rounds vs of the odd rounds): "
              f"{repeat['within']:.0%} of the {repeat['files']} networks within +-10%, median gap "
              f"{100 * repeat['median_gap']:.1f}% (a predictor cannot be judged much above that)")
    fitted_now = None  # the same predictor with the calibration fitted on this session's timings
    if calibration_files:
        from hwnas.kernels.calibrate import fit_calibration

        fitted_now = KernelPredictor.load(args.predictor)
        fitted_now.calibration = fit_calibration(predictor, calibration_files, latency, log=lambda _: None)
        print(f"calibration fitted now on {len(calibration_files)} networks timed with the zoo: "
              f"resident {fitted_now.calibration['resident_mparams']:g} M weights, {fitted_now.calibration['terms']} "
              f"(the file's: resident {(predictor.calibration or {}).get('resident_mparams', 0):g} M)")
    family_of = {name: fam for fam, name, _ in zoo_specs()}
    results = []
    for name, path in files.items():
        graph = read_model(path)
        pred = (predictor if fitted_now is None else fitted_now).predict_graph(graph)
        row = {"family": family_of[name], "name": name, "measured_ms": latency[name],
               "predicted_ms": pred.total_ms, "unpriced": len(pred.unpriced),
               "unpriced_flops_share": pred.unpriced_flops_share, "out_of_range": len(pred.out_of_range)}
        if fitted_now is not None:
            row["predicted_file_calibration_ms"] = predictor.predict_graph(graph).total_ms
        results.append(row)
    for r in results:
        print(f"{r['name']:32s} measured {r['measured_ms']:9.3f} predicted {r['predicted_ms']:9.3f} "
              f"({(r['predicted_ms'] / r['measured_ms'] - 1) * 100:+6.1f}%) unpriced {r['unpriced']} "
              f"out-of-range {r['out_of_range']}")
    print(zoo_table(results, "predicted_ms", speed))
    if fitted_now is not None:
        print("\nwith the predictor file's calibration instead:")
        print(zoo_table(results, "predicted_file_calibration_ms", speed))
    if args.json:
        args.json.write_text(json.dumps({"speed": speed, "calibration": args.calibration, "statistic": args.statistic,
                                         "repeatability": repeat,
                                         "calibration_now": None if fitted_now is None else fitted_now.calibration,
                                         "results": results}, indent=1) + "\n")
    if args.plot:
        plot_zoo(results, sorted({r["family"] for r in results}), args.plot, "measured ms (LiteRT fp32, 1 thread)")
    print(f"wall time {time.time() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_script(main, "model_zoo: error")
