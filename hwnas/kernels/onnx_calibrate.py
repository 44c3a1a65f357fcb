"""Whole-network calibration of an ONNX Runtime kernel predictor, on networks that are not in the zoo.

    hwnas kernels calibrate predictors/kernels/<device>-onnxruntime-fp32-t1.json [--rounds 3]

The same terms as the LiteRT calibration (:mod:`hwnas.kernels.calibrate`, which
explains them): per kernel, time for its place in a network and for the
elements it reads; per network, the weights beyond what stays in the caches
(a kernel timed alone reads its weights from the caches every call; ResNet-18 at
32 px streams 11.7 M weights from memory). Fitted on the search spaces'
networks of :data:`hwnas.kernels.calibrate.CALIBRATION`, exported with the
TorchScript ONNX exporter, and the synthetic convolution chains of
:func:`hwnas.kernels.calibrate.chain_specs`, built with ``onnx.helper`` (ReLU after
every conv), and real networks (:data:`REAL_NETWORKS`: ``torchvision.models`` at
widths and input sizes the ONNX zoo benchmark does not have), all timed in
interleaved rounds on ONNX Runtime (CPU time, 1 thread).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from hwnas.kernels.calibrate import CALIBRATION, RESIDENT_MPARAMS, chain_specs, rounds_log, store_calibration


# Real networks for calibration: torchvision builders at widths and input sizes that the ONNX zoo benchmark
# (benchmarks/model_zoo_onnx.py) does not have, so that no zoo network is ever fitted on (the same families).
REAL_NETWORKS = [
    ("mobilenet_v2", {"width_mult": 0.35}, 128), ("mobilenet_v2", {"width_mult": 1.3}, 96),
    ("mobilenet_v2", {"width_mult": 0.75}, 64), ("mobilenet_v2", {"width_mult": 0.5}, 48),
    ("mobilenet_v3_small", {"width_mult": 1.0}, 64), ("mobilenet_v3_small", {"width_mult": 0.75}, 160),
    ("mobilenet_v3_large", {"width_mult": 1.0}, 64), ("mobilenet_v3_large", {"width_mult": 0.75}, 160),
    ("mnasnet0_75", {}, 64), ("mnasnet1_3", {}, 48), ("shufflenet_v2_x1_5", {}, 64), ("shufflenet_v2_x2_0", {}, 48),
    ("squeezenet1_1", {}, 128), ("resnet18", {}, 96), ("resnet50", {}, 96), ("efficientnet_b0", {}, 96),
    ("efficientnet_b1", {}, 48), ("densenet121", {}, 96),
]


def torchvision_name(builder: str, kwargs: dict, size: int) -> str:
    """A torchvision network's file name (``mobilenet_v2-w0.75-64``)."""
    return f"{builder}{''.join(f'-w{v}' for v in kwargs.values())}-{size}"


def export_torchvision(builder: str, kwargs: dict, size: int, path: Path) -> Path:
    """``torchvision.models.<builder>(**kwargs)`` with random weights (seed 0), eval mode, exported to ONNX
    (opset 17, TorchScript exporter) for a ``size`` x ``size`` RGB input; written via a temporary file."""
    import torch
    import torchvision

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = getattr(torchvision.models, builder)(weights=None, **kwargs).eval()
    tmp = path.with_name(f"tmp-{path.name}")
    with torch.no_grad():
        torch.onnx.export(model, torch.randn(1, 3, size, size), str(tmp), dynamo=False, opset_version=17)
    return tmp.replace(path)


def chain_model(chain: dict):
    """A chain of :func:`chain_specs` as an ONNX model (each layer's input is the previous output)."""
    import onnx
    from onnx import TensorProto, helper

    from hwnas.kernels.onnx_kernels import OPSET, GraphBuilder, add_kernel

    b = GraphBuilder(0)
    x, h, c = "x", chain["h"], chain["cin"]
    for layer in chain["layers"]:
        if layer["type"] == "dwconv":
            spec = {"type": "dwconv", "h": h, "c": c, "k": layer["k"], "s": layer["s"], "act": "relu"}
        else:
            spec = {"type": "conv", "h": h, "cin": c, "cout": layer["cout"], "k": layer["k"], "s": layer["s"],
                    "groups": 1, "act": "relu"}
            c = layer["cout"]
        x = add_kernel(b, spec, x)
        h = -(-h // layer["s"])
    graph = helper.make_graph(b.nodes, "chain", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, chain["cin"], chain["h"], chain["h"]])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hwnas")
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def export_networks(cache: Path) -> dict[str, Path]:
    """The calibration networks as ONNX files in ``cache`` (made once); name -> file."""
    import onnx

    from hwnas.export.onnx_export import export_onnx
    from hwnas.profiler import arch_file_name, calibration_archs
    from hwnas.spaces import get_space

    cache.mkdir(parents=True, exist_ok=True)
    files = {}
    for space_name, count in CALIBRATION.items():
        for arch in calibration_archs(get_space(space_name), count, seed=11):
            name = f"{space_name}-{arch_file_name(arch).removesuffix('.json')}"
            path = cache / f"{name}.onnx"
            if not path.exists():
                export_onnx(arch.ops(), path=cache / f"tmp-{name}.onnx").replace(path)
                print(f"export {name}", file=sys.stderr)
            files[name] = path
    for i, chain in enumerate(chain_specs()):
        path = cache / f"chain-{i}.onnx"
        if not path.exists():
            onnx.save(chain_model(chain), path)
        files[f"chain-{i}"] = path
    for builder, kwargs, size in REAL_NETWORKS:
        name = torchvision_name(builder, kwargs, size)
        path = cache / f"{name}.onnx"
        if not path.exists():
            export_torchvision(builder, kwargs, size, path)
            print(f"export {name}", file=sys.stderr)
        files[name] = path
    return files


def fit_terms(measured: np.ndarray, predicted: np.ndarray, n_kernels, melems, mparams) -> tuple:
    """(median APE %, resident M weights, coefficients, calibrated predictions) of the best resident size: the
    terms fitted by non-negative least squares in relative error."""
    from scipy.optimize import nnls

    best = None
    for resident in RESIDENT_MPARAMS:
        terms = np.stack([n_kernels, melems, np.maximum(0.0, np.array(mparams) - resident)], axis=1)
        coef, _ = nnls(terms / measured[:, None], (measured - predicted) / measured)
        after = predicted + terms @ coef
        mape = float(np.median(np.abs(after / measured - 1)) * 100)
        print(f"resident {resident:5.2f} M weights: median APE {mape:.2f}%  coefficients {np.round(coef, 5).tolist()}",
              file=sys.stderr)
        if best is None or mape < best[0]:
            best = (mape, resident, coef, after)
    return best


def fit_calibration(predictor, files: dict[str, Path], latency: dict[str, float]) -> dict:
    """The whole-network terms of the ONNX Runtime ``predictor`` fitted on the calibration networks ``files``
    (name -> .onnx, :func:`export_networks`) and their ``latency`` (name -> ms); the predictor
    itself is left unchanged."""
    from hwnas.modelgraph import read_model

    saved, predictor.calibration = predictor.calibration, None
    measured, predicted, n_kernels, melems, mparams = [], [], [], [], []
    try:
        for name, path in files.items():
            pred = predictor.predict_graph(read_model(path))
            measured.append(latency[name])
            predicted.append(pred.total_ms)
            n_kernels.append(len(pred.kernels))
            melems.append(sum(k.in_elems for k in pred.kernels) / 1e6)
            mparams.append(sum(k.params for k in pred.kernels) / 1e6)
    finally:
        predictor.calibration = saved
    measured, predicted = np.array(measured), np.array(predicted)
    _, resident, coef, after = fit_terms(measured, predicted, n_kernels, melems, mparams)
    return {"chains": len(chain_specs()), "per_kernel_ms": float(coef[0]), "ms_per_melem": float(coef[1]),
            "ms_per_mparam": float(coef[2]), "resident_mparams": resident, "models": len(files),
            "spaces": CALIBRATION, "real_networks": [torchvision_name(*r) for r in REAL_NETWORKS],
            "mape_before": float(np.mean(np.abs(predicted / measured - 1)) * 100),
            "mape_after": float(np.mean(np.abs(after / measured - 1)) * 100),
            "within10_after": float(np.mean(np.abs(after / measured - 1) <= 0.1))}


def calibrate(predictor_path: Path, cache: Path, rounds: int, out: Path | None = None,
              retime: bool = False, statistic: str = "fastest") -> dict:
    """As :func:`hwnas.kernels.calibrate.calibrate`, on ONNX Runtime."""
    from hwnas.kernels.predictor import KernelPredictor
    from hwnas.kernels.profile import POLICY
    from hwnas.runners.onnxruntime import OnnxRuntimeRunner
    from hwnas.timing_rounds import latencies_by, set_aside, time_rounds

    predictor = KernelPredictor.load(predictor_path)  # a missing or malformed file: refused before the timing
    files = export_networks(cache)
    log_path = rounds_log(cache, "onnxruntime")
    if retime:
        set_aside(log_path)
    latency = latencies_by(time_rounds(files, OnnxRuntimeRunner(threads=1, policy=POLICY), rounds, log_path, 0),
                           statistic)
    result = fit_calibration(predictor, files, latency)
    result["rounds"], result["statistic"] = rounds, statistic
    store_calibration(predictor_path, result, out)
    return result
