"""``hwnas export ARCH.json --weights W``: ONNX + TFLite, self-checked, then measured (architectures and
cell genotypes alike)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from hwnas.arch import Architecture
from hwnas.cells.genotype import Genotype
from hwnas.data import DEFAULT_DATASET, load_dataset
from hwnas.errors import HwnasError
from hwnas.netfile import build_standalone, load_network
from hwnas.outputs import check_writable_folder
from hwnas.export.trained import FP32_TOLERANCE, MIN_AGREEMENT, QUANTS, export_trained, stack_images
from hwnas.run_report import latency_table
from hwnas.runners.pinning import default_core, measure_file
from hwnas.threads import TORCH_THREADS, check_threads, use_torch_threads


def parse_quants(text: str) -> tuple[str, ...]:
    quants = tuple(q.strip() for q in text.split(",") if q.strip())
    bad = [q for q in quants if q not in QUANTS]
    if bad or not quants:
        raise HwnasError(f"--quant takes a comma-separated subset of {', '.join(QUANTS)}, got {text!r}")
    return quants


def measure_exported(result, arch: Architecture | Genotype, runtime: str, threads: int,
                     predictor, budget_ms: float | None, predictor_path: str | None = None) -> list[dict]:
    """Time the exported files of ``runtime`` and pair them with the estimate of ``predictor`` (loaded, or None;
    ``predictor_path`` names it in a note)."""
    predicted = None
    if predictor is not None:
        ops = arch.ops()
        if getattr(predictor, "fallback_name", None) and predictor.fallback_for(ops):
            print(f"note: some operators of the model are not in {predictor_path}; its fallback regressor "
                  f"{predictor.fallback_name} predicts them", file=sys.stderr)
        predicted = predictor.predict_ops(ops)
    fmt = "onnx" if runtime == "onnxruntime" else "tflite"
    rows = []
    core = default_core()
    for f in result.files:
        if f.format != fmt:
            continue
        print(f"timing {f.path.name} with {runtime} ({threads} thread(s), core {core}) ...")
        t = measure_file(f.path, runtime, threads, core)
        same = predictor is not None and getattr(predictor, "runtime", None) == runtime and \
            getattr(predictor, "dtype", None) == f.quant and getattr(predictor, "threads", threads) == threads
        rows.append({"file": str(f.path), "runtime": runtime, "quant": f.quant, "threads": threads,
                     "measured_ms": t.latency_ms, "median_ms": t.median_ms, "spread_ms": t.spread_ms,
                     "rounds_ms": t.rounds_ms,
                     "predicted_ms": predicted if same else None, "budget_ms": budget_ms})
    return rows


def _check_options(args) -> Path:
    """Every option checked before the export starts (it takes minutes); returns the output folder."""
    from hwnas.search.latency import check_budget_value

    check_threads(args.threads, minimum=1)
    check_budget_value(args.budget_ms)
    for name in ("check_images", "calib_images"):
        if getattr(args, name) < 1:
            raise HwnasError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not 0 < args.tolerance < math.inf:
        raise HwnasError(f"--tolerance must be a positive finite number, got {args.tolerance}")
    if not 0 <= args.min_agreement <= 1:
        raise HwnasError(f"--min-agreement must be between 0 and 1, got {args.min_agreement}")
    if not args.no_measure and args.runtime == "onnxruntime" and args.no_onnx:
        raise HwnasError("--runtime onnxruntime needs the ONNX file; drop --no-onnx")
    return check_writable_folder(Path(args.out) if args.out else Path(args.weights).parent / "export")


def _export(args) -> int:
    arch = load_network(args.arch)
    quants = parse_quants(args.quant)
    out = _check_options(args)
    predictor = None
    if args.predictor and not args.no_measure:  # loaded once, before the export's minutes
        from hwnas.predictors import load_predictor, warn_if_other_device

        warn_if_other_device(args.predictor)
        predictor = load_predictor(args.predictor, space=arch.space_name)
    from hwnas.weights import load_weights

    model = build_standalone(arch)
    load_weights(model, args.weights)
    splits = load_dataset(args.dataset, arch.space.params["resolution"], seed=args.seed, augment=False)
    check = stack_images(splits.val, args.check_images, seed=1)
    calib = stack_images(splits.train, args.calib_images, seed=2)
    use_torch_threads(TORCH_THREADS)  # torch only runs the reference forward pass here
    print(f"exporting {args.arch} with weights {args.weights} -> {out}/ "
          f"(checks on {len(check)} validation images, int8 calibration on {len(calib)} training images)")
    result = export_trained(arch, model, out, check, calib, quants=quants, onnx=not args.no_onnx,
                            tolerance=args.tolerance, min_agreement=args.min_agreement, force=args.force)
    if args.no_measure:
        return 0
    rows = measure_exported(result, arch, args.runtime, args.threads, predictor, args.budget_ms, args.predictor)
    print(latency_table(rows, args.budget_ms))
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="export a trained architecture or genotype to ONNX and TFLite, check, time")
    p.add_argument("arch", help="architecture or cell genotype JSON file")
    p.add_argument("--weights", required=True, help="weights file from hwnas train (safetensors)")
    p.add_argument("--out", default=None, help="output folder (default: export/ beside the weights)")
    p.add_argument("--quant", default=",".join(QUANTS), help=f"TFLite variants (default {','.join(QUANTS)})")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX file")
    p.add_argument("--dataset", default=DEFAULT_DATASET,
                   help="dataset for the checks and int8 calibration (default digits)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/validation split (as in training)")
    p.add_argument("--check-images", type=int, default=100, help="validation images for the checks (default 100)")
    p.add_argument("--calib-images", type=int, default=100,
                   help="training images for int8 calibration (default 100)")
    p.add_argument("--tolerance", type=float, default=FP32_TOLERANCE,
                   help=f"max abs logit difference of fp32 models (default {FP32_TOLERANCE:g})")
    p.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT,
                   help=f"min top-1 agreement of quantized models with PyTorch (default {MIN_AGREEMENT})")
    p.add_argument("--force", action="store_true", help="write models that fail the self-check")
    p.add_argument("--runtime", choices=("tflite", "onnxruntime"), default="tflite",
                   help="runner for the timing (default tflite)")
    p.add_argument("--threads", type=int, default=1, help="threads for the timing (default 1)")
    p.add_argument("--predictor", default=None, help="latency predictor file, for the predicted column")
    p.add_argument("--budget-ms", type=float, default=None, help="latency budget to compare with")
    p.add_argument("--no-measure", action="store_true", help="export and check only")
    p.set_defaults(func=_export)
