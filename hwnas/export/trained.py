"""The export stage: a trained PyTorch network -> ONNX and TFLite fp32 / dynamic-range / full-int8 files.

A self-check runs before any file is kept: fp32 TFLite and ONNX logits against PyTorch (max abs difference,
through :func:`hwnas.export.parity.run_tflite` / :func:`~hwnas.export.parity.run_onnx`), and top-1 agreement of
the quantized models with PyTorch on validation images. Files that fail the check are not written unless forced.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from hwnas.arch import Architecture
from hwnas.errors import HwnasError
from hwnas.export.parity import run_onnx, run_tflite

if TYPE_CHECKING:
    from hwnas.cells.genotype import Genotype

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


def export_trained(arch: Architecture | Genotype, model: nn.Module, out_dir: str | Path, check_images: np.ndarray,
                   representative: np.ndarray, quants: tuple[str, ...] = QUANTS, onnx: bool = True,
                   tolerance: float = FP32_TOLERANCE, min_agreement: float = MIN_AGREEMENT,
                   force: bool = False, stem: str = "model", progress=print, converter=None) -> ExportResult:
    """Convert, self-check and (when the checks pass or ``force``) keep the files in ``out_dir``.

    ``arch``: a chain architecture, or a cell genotype (``model`` is then its
    ``build_cell_network``, converted to TFLite as a cell DAG);
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
    network = ops if isinstance(arch, Architecture) else arch  # what the TFLite worker builds
    model.eval()
    with torch.no_grad():
        reference = model(torch.from_numpy(check_images)).numpy()
    ref_top1 = reference.argmax(1)
    result = ExportResult()
    try:
        if onnx:
            progress("exporting ONNX ...")
            path = export_onnx(ops, model, staging / f"{stem}.onnx")
            diff = float(np.abs(run_onnx(path, check_images) - reference).max())
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
                path = conv.convert(network, staging / f"{stem}-{quant}.tflite", quant=quant, weights=str(weights),
                                    representative=str(calib) if quant == "int8" else None)
                logits = run_tflite(path, check_images).astype(np.float32)
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
