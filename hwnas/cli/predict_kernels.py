"""``hwnas predict`` on a model that is not from a search space: the kernel predictor's answer, printed or as JSON.

The kernel predictor of this machine is ``predictors/kernels/<device>-<runtime>-fp32-t1.json`` (runtime
``tflite`` for ``.tflite`` files, ``onnxruntime`` for ``.onnx``)
(:mod:`hwnas.kernels`); every kernel row names the regressor that priced it,
features outside the sampled range are flagged, and every node no kernel
predictor prices is listed with its share of the model's FLOPs.
"""

from __future__ import annotations

from pathlib import Path

KERNEL_DIR = Path("predictors/kernels")
# above this share of the total, the weights-beyond-the-caches term decides the prediction: warned about
# (in the LiteRT zoo, 7 of the 10 networks above it were off by more than 10%, 6 of the 45 below it)
WEIGHT_BOUND_SHARE = 0.2


def this_machines_kernels(runtime: str, dtype: str) -> Path | None:
    """The committed kernel predictor of this CPU for ``runtime``/``dtype`` at 1 thread, None when there is none.

    One CPU string can come with different vector instruction sets (runtimes pick their kernels by it), so the
    file profiled with this machine's, ``<device>-<isa>-...`` (e.g. ``amd-epyc-2c-avx2-tflite-fp32-t1.json``),
    comes before the plain ``<device>-...`` one."""
    from hwnas.latency_data import describe_this_device

    this = describe_this_device()
    names = ([f"{this['name']}-{this['vector_isa']}"] if this.get("vector_isa") else []) + [this["name"]]
    for name in names:
        path = KERNEL_DIR / f"{name}-{runtime}-{dtype}-t1.json"
        if path.is_file():
            return path
    return None


def kernel_result(graph, path: Path, why: str) -> dict:
    """The kernel prediction of ``graph`` as the dict ``--json`` prints (warnings included)."""
    from hwnas.kernels.predictor import KernelPredictor
    from hwnas.latency_data import vector_isa

    predictor = KernelPredictor.load(path)
    pred = predictor.predict_graph(graph)
    warnings = [why]
    for k in pred.out_of_range:
        warnings.append(f"kernel {k.nodes} ({k.type}): {'; '.join(k.out_of_range)} (sampled range): extrapolated")
    if pred.unpriced:
        share = f"{pred.unpriced_flops_share:.1%} of the model's FLOPs"
        unknown = sum(not u["shape_known"] for u in pred.unpriced)
        if unknown:  # their FLOPs count as 0, so the share is only a lower bound
            share = f"{unknown} of them of unknown shape, so more than {share}"
        warnings.append(f"{len(pred.unpriced)} node(s) not priced (given no time), {share}: the total is low by "
                        "their time")
    if pred.weights_ms > WEIGHT_BOUND_SHARE * pred.total_ms:
        warnings.append(f"{pred.weights_ms / pred.total_ms:.0%} of the total is the calibration's time for weights "
                        "beyond the caches: whether they stay in the shared cache depends on the machine's other "
                        "load, and zoo networks like this one were off by up to +-40% (docs/predictors.md)")
    isa = vector_isa()
    if isa and predictor.device.get("vector_isa", isa) != isa:
        warnings.append(f"the kernel predictor was profiled on a CPU with {predictor.device['vector_isa']}, this one "
                        f"has {isa}: the runtime runs other kernels here, relative costs differ")
    runtime = {"tflite": "tflite", "onnx": "onnxruntime"}.get(graph.format)
    if predictor.runtime != runtime:
        warnings.append(f"the model is {graph.format}, the kernel predictor is for {predictor.runtime}")
    if graph.dtype != predictor.dtype:
        warnings.append(f"the model is {graph.dtype}, the kernel predictor is for {predictor.dtype}")
    return {"file": str(graph.path), "kind": graph.format, "path": "kernels", "model_dtype": graph.dtype,
            "predictor": {"path": str(path), "type": "kernels", "device": predictor.device.get("name"),
                          "runtime": predictor.runtime, "dtype": predictor.dtype, "threads": predictor.threads},
            "warnings": warnings, **pred.to_dict()}


def print_kernels(r: dict) -> None:
    p = r["predictor"]
    print(f"{r['file']}: {r['kind']} {r['model_dtype']} model, {len(r['kernels'])} kernels priced, "
          f"{len(r['unpriced'])} node(s) not; kernel predictor {p['path']} ({p['device']}, {p['runtime']} "
          f"{p['dtype']}, {p['threads']} thread)")
    print(f"{'nodes':10s} {'kernel':60s} {'ms':>9s}  predictor")
    for k in r["kernels"]:
        dims = ",".join(f"{key}={v}" for key, v in k["spec"].items() if key != "type")
        flag = "  OUT OF RANGE" if k["out_of_range"] else ""
        print(f"{k['nodes']:10s} {(k['type'] + ' ' + dims)[:60]:60s} {k['ms']:9.4f}  {k['predictor']}{flag}")
    print(f"{'overhead':10s} {'(one model invoke)':60s} {r['overhead_ms']:9.4f}")
    if r["weights_ms"]:
        print(f"{'weights':10s} {'(weights beyond the caches, read from memory: calibration)':60s} "
              f"{r['weights_ms']:9.4f}")
    print(f"{'total':10s} {'':60s} {r['total_ms']:9.4f} ms")
    if r["unpriced"]:
        print(f"not priced, given no time ({len(r['unpriced'])}, {r['unpriced_flops_share']:.1%} of the FLOPs):")
        for u in r["unpriced"]:
            print(f"  node {u['node']} {u['op']} {u['name']!r}: {u['reason']} ({u['flops_share']:.2%} of the FLOPs)")
