"""The stages after search, and the main job that chains every stage.

Export stage (:func:`export_trained`): a trained PyTorch network -> ONNX and
TFLite fp32 / dynamic-range / full-int8 files, then a self-check before any
file is kept: fp32 TFLite and ONNX logits against PyTorch (max abs
difference), and top-1 agreement of the quantized models with PyTorch on
validation images. Files that fail the check are not written unless forced.

The main job (:func:`run_pipeline`) lives further down.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwnas.arch import Architecture
from hwnas.errors import HwnasError

QUANTS = ("fp32", "dynamic", "int8")
FP32_TOLERANCE = 1e-4  # max abs logit difference (typically ~1e-6 measured here)
MIN_AGREEMENT = 0.9  # quantized top-1 agreement with fp32 PyTorch


@dataclass
class ExportedFile:
    path: Path
    format: str  # onnx | tflite
    quant: str  # fp32 | dynamic | int8
    max_abs_diff: float | None = None  # fp32 formats
    agreement: float | None = None  # top-1 agreement with PyTorch
    passed: bool = True

    def describe(self) -> str:
        parts = [f"{self.format} {self.quant}: {self.path}"]
        if self.max_abs_diff is not None:
            parts.append(f"max |logit diff| {self.max_abs_diff:.2e}")
        if self.agreement is not None:
            parts.append(f"top-1 agreement {self.agreement:.1%}")
        parts.append("ok" if self.passed else "FAILED")
        return ", ".join(parts)


@dataclass
class ExportResult:
    files: list[ExportedFile] = field(default_factory=list)

    def get(self, fmt: str, quant: str) -> ExportedFile | None:
        return next((f for f in self.files if f.format == fmt and f.quant == quant), None)

    def to_dict(self) -> list[dict]:
        return [{"path": str(f.path), "format": f.format, "quant": f.quant, "max_abs_diff": f.max_abs_diff,
                 "agreement": f.agreement, "passed": f.passed} for f in self.files]


def stack_images(dataset, n: int, seed: int = 0) -> np.ndarray:
    """``n`` images (NCHW float32) drawn from ``dataset`` with a fixed seed."""
    n = min(n, len(dataset))
    if n == 0:
        raise HwnasError("cannot draw images from an empty dataset")
    idx = np.random.default_rng(seed).choice(len(dataset), size=n, replace=False)
    return torch.stack([dataset[int(i)][0] for i in idx]).numpy().astype(np.float32)


def tflite_outputs(path: Path, images: np.ndarray) -> np.ndarray:
    """Run a .tflite model (float input/output) on NCHW images one by one; returns logits."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    rows = []
    for img in images.transpose(0, 2, 3, 1):  # NCHW -> NHWC
        interp.set_tensor(inp["index"], img[None].astype(inp["dtype"]))
        interp.invoke()
        rows.append(interp.get_tensor(out["index"])[0].astype(np.float32))
    return np.stack(rows)


def onnx_outputs(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return np.stack([sess.run(None, {"input": img[None]})[0][0] for img in images]).astype(np.float32)


def export_trained(arch: Architecture, model: nn.Module, out_dir: str | Path, check_images: np.ndarray,
                   representative: np.ndarray, quants: tuple[str, ...] = QUANTS, onnx: bool = True,
                   tolerance: float = FP32_TOLERANCE, min_agreement: float = MIN_AGREEMENT,
                   force: bool = False, stem: str = "model", progress=print, converter=None) -> ExportResult:
    """Convert, self-check and (when the checks pass or ``force``) keep the files in ``out_dir``.

    ``check_images``: validation images (NCHW float32) for the checks;
    ``representative``: training images for int8 calibration; ``converter``: a
    running ``TFLiteConverter`` to reuse (default: a fresh worker for this call).
    """
    from safetensors.numpy import save_file

    from hwnas.export.onnx_export import export_onnx
    from hwnas.export.tflite import TFLiteConverter

    for q in quants:
        if q not in QUANTS:
            raise HwnasError(f"unknown quantization {q!r}; expected some of {', '.join(QUANTS)}")
    out_dir = Path(out_dir)
    staging = out_dir / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    ops = arch.ops()
    model.eval()
    with torch.no_grad():
        reference = model(torch.from_numpy(check_images)).numpy()
    ref_top1 = reference.argmax(1)
    result = ExportResult()
    try:
        if onnx:
            progress("exporting ONNX ...")
            path = export_onnx(ops, model, staging / f"{stem}.onnx")
            diff = float(np.abs(onnx_outputs(path, check_images) - reference).max())
            result.files.append(ExportedFile(path, "onnx", "fp32", max_abs_diff=diff, passed=diff <= tolerance))
        weights = staging / "state.safetensors"
        save_file({k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in model.state_dict().items()},
                  str(weights))
        calib = staging / "representative.npy"
        np.save(calib, representative.astype(np.float32), allow_pickle=False)
        own = converter is None and bool(quants)
        conv = TFLiteConverter(log_path=staging / "tflite-worker.log").start() if own else converter
        try:
            for quant in quants:
                progress(f"converting to TFLite {quant} ...")
                path = conv.convert(ops, staging / f"{stem}-{quant}.tflite", quant=quant, weights=str(weights),
                                    representative=str(calib) if quant == "int8" else None)
                logits = tflite_outputs(path, check_images)
                agreement = float((logits.argmax(1) == ref_top1).mean())
                if quant == "fp32":
                    diff = float(np.abs(logits - reference).max())
                    result.files.append(ExportedFile(path, "tflite", quant, diff, agreement, diff <= tolerance))
                else:
                    result.files.append(ExportedFile(path, "tflite", quant, None, agreement,
                                                     agreement >= min_agreement))
        finally:
            if own:
                conv.close()
        failed = [f for f in result.files if not f.passed]
        if failed and not force:
            names = "; ".join(f.describe() for f in failed)
            raise HwnasError(f"export self-check failed ({names}); tolerance {tolerance:g}, minimum agreement "
                             f"{min_agreement:.0%}; no model written (use --force to write it anyway)")
        for f in result.files:
            final = out_dir / f.path.name
            f.path.replace(final)
            f.path = final
            progress("  " + f.describe())
        (out_dir / "export.json").write_text(json.dumps({"arch": arch.to_dict(), "files": result.to_dict()},
                                                        indent=2) + "\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


# -- measuring --------------------------------------------------------------------
class pinned:
    """Pin this process to one CPU core while timing (like ``taskset -c CORE``), then restore."""

    def __init__(self, core: int | None):
        self.core = core

    def __enter__(self):
        import os

        self.old = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        if self.core is not None and self.old is not None and self.core in self.old:
            os.sched_setaffinity(0, {self.core})
        return self

    def __exit__(self, *exc):
        import os

        if self.old is not None:
            os.sched_setaffinity(0, self.old)


def default_core() -> int | None:
    """The last core this process may use (core 1 on the 2-core machine), None when unknown."""
    import os

    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return cores[-1] if cores else None


def measure_file(path: Path, runtime: str | None = None, threads: int = 1, core: int | None = None):
    """Median latency of one model file on this machine (``hwnas.runners``), pinned to ``core``."""
    from hwnas.runners import get_runner, runner_for_file

    runner = get_runner(runtime, threads) if runtime else runner_for_file(path, threads)
    with pinned(core):
        return runner.time(path)


def predictor_target(predictor) -> str:
    """``runtime dtype Nt`` of a predictor (what its milliseconds are for)."""
    return f"{getattr(predictor, 'runtime', '?')} {getattr(predictor, 'dtype', '?')} {getattr(predictor, 'threads', '?')}t"


def latency_table(rows: list[dict], budget_ms: float | None) -> str:
    """Measured vs predicted vs budget, one line per model file."""
    lines = [f"{'model':34s} {'runtime':12s} {'measured ms':>16s} {'predicted ms':>13s} {'budget ms':>10s}  verdict"]
    for r in rows:
        measured = f"{r['measured_ms']:.3f} ± {r['spread_ms']:.3f}"
        predicted = "-" if r.get("predicted_ms") is None else f"{r['predicted_ms']:.3f}"
        budget = "-" if budget_ms is None else f"{budget_ms:.3f}"
        verdict = "-"
        if budget_ms is not None:
            verdict = "within budget" if r["measured_ms"] <= budget_ms else (
                "within +5%" if r["measured_ms"] <= 1.05 * budget_ms else "OVER budget")
        lines.append(f"{Path(r['file']).name:34s} {r['runtime']:12s} {measured:>16s} {predicted:>13s} "
                     f"{budget:>10s}  {verdict}")
    return "\n".join(lines)
