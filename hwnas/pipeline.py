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
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from hwnas.arch import Architecture
from hwnas.errors import HwnasError
from hwnas.threads import use_torch_threads

if TYPE_CHECKING:
    from hwnas.cells.genotype import Genotype

QUANTS = ("fp32", "dynamic", "int8")
PROFILE_MODELS = 40  # whole models timed with the operators on a new machine (half fit the calibration)
PROFILE_ROUNDS = 5  # interleaved timing rounds there
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
                path = conv.convert(network, staging / f"{stem}-{quant}.tflite", quant=quant, weights=str(weights),
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


def verdict(measured_ms: float, budget_ms: float) -> str:
    """A measured latency against the budget: within budget, within +5%, or OVER budget."""
    if measured_ms <= budget_ms:
        return "within budget"
    return "within +5%" if measured_ms <= 1.05 * budget_ms else "OVER budget"


def recommend(rows: list[dict], budget_ms: float, failed: set[str] = frozenset()) -> str:
    """Which measured variant (``quant``) to ship: the fastest one within the budget, from the measurements.

    Variants in ``failed`` (their export self-check failed) are not recommended."""
    usable = [r for r in rows if r["quant"] not in failed]
    if not usable:
        return "no variant passed its export self-check"
    fastest = min(usable, key=lambda r: r["measured_ms"])
    within = [r for r in usable if r["measured_ms"] <= budget_ms]
    if not within:
        return (f"none meets the {budget_ms:.3f} ms budget; the fastest, {fastest['quant']}, measured "
                f"{fastest['measured_ms']:.3f} ms ({fastest['measured_ms'] / budget_ms - 1:+.0%})")
    best = min(within, key=lambda r: r["measured_ms"])
    others = ", ".join(f"{r['quant']} {r['measured_ms'] / best['measured_ms']:.2f}x" for r in usable if r is not best)
    return f"{best['quant']} ({best['measured_ms']:.3f} ms, the fastest within budget" + \
        (f"; others: {others} its time)" if others else ")")


def latency_table(rows: list[dict], budget_ms: float | None) -> str:
    """Measured vs predicted vs budget, one line per model file."""
    lines = [f"{'model':34s} {'runtime':12s} {'measured ms':>16s} {'predicted ms':>13s} {'budget ms':>10s}  verdict"]
    for r in rows:
        measured = f"{r['measured_ms']:.3f} ± {r['spread_ms']:.3f}"
        predicted = "-" if r.get("predicted_ms") is None else f"{r['predicted_ms']:.3f}"
        budget = "-" if budget_ms is None else f"{budget_ms:.3f}"
        judged = "-" if budget_ms is None else verdict(r["measured_ms"], budget_ms)
        lines.append(f"{Path(r['file']).name:34s} {r['runtime']:12s} {measured:>16s} {predicted:>13s} "
                     f"{budget:>10s}  {judged}")
    return "\n".join(lines)


# -- the main job: configuration ----------------------------------------------------
# section -> field -> (default, check). A check returns an error text or None.
def _pos_int(v):
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else "must be a positive integer"


def _opt_pos_int(v):
    return None if v is None else _pos_int(v)


def _nonneg_int(v):
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "must be a non-negative integer"


def _pos_num(v):
    return None if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf else \
        "must be a positive number"


def _string(v):
    return None if isinstance(v, str) and v else "must be a non-empty string"


def _boolean(v):
    return None if isinstance(v, bool) else "must be true or false"


def _one_of(*allowed):
    return lambda v: None if v in allowed else f"must be one of {', '.join(map(repr, allowed))}"


def _budget(v):
    return None if v == "auto" or _pos_num(v) is None else "must be \"auto\" or a positive number of ms"


def _fraction(v):
    return None if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1 else \
        "must be a number between 0 and 1"


def _table(v):
    return None if isinstance(v, dict) else "must be a table, e.g. { width_mult = 0.5 }"


def _quants(v):
    if isinstance(v, list) and v and all(q in QUANTS for q in v) and len(set(v)) == len(v):
        return None
    return f"must be a non-empty list of distinct values from {', '.join(QUANTS)}"


SCHEMA: dict[str, dict[str, tuple]] = {
    "run": {"out": ("runs/main", _string), "seed": (0, _nonneg_int), "threads": (1, _nonneg_int)},
    "space": {"name": ("proxyless-tiny", _string), "params": ({}, _table)},
    "data": {"dataset": ("digits", _string), "limit_train": (None, _opt_pos_int),
             "limit_val": (None, _opt_pos_int), "workers": (0, _nonneg_int)},
    "latency": {"runtime": ("tflite", _one_of("tflite", "onnxruntime")), "dtype": ("fp32", _one_of("fp32", "int8")),
                "threads": (1, _pos_int), "budget_ms": ("auto", _budget), "budget_scale": (1.0, _pos_num),
                "predictor": ("auto", _string), "reference_predictors": ("predictors", _string),
                "reference_latency_data": ("latency_data", _string), "profile_models": (PROFILE_MODELS, _nonneg_int),
                "profile_rounds": (PROFILE_ROUNDS, _pos_int)},
    "search": {"mode": ("proxyless", _string), "supernet": ("entangled", _one_of("entangled", "separate")),
               "epochs": (4, _pos_int), "warmup_epochs": (1, _nonneg_int), "child_warmup_epochs": (1, _nonneg_int),
               "batch_size": (64, _pos_int), "max_steps": (10, _opt_pos_int), "lr_alpha": (0.02, _pos_num),
               "relevel": (6, _nonneg_int), "derive": ("argmax", _one_of("argmax", "evolution")),
               "derive_children": (500, _pos_int)},
    "train": {"epochs": (8, _pos_int), "batch_size": (64, _pos_int), "lr": (0.05, _pos_num),
              "optimizer": ("sgd", _one_of("sgd", "adamw")), "weight_decay": (4e-5, lambda v: None if
              isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 else "must be a number >= 0"),
              "label_smoothing": (0.1, lambda v: None if isinstance(v, (int, float)) and 0 <= v < 1
                                  else "must be a number in [0, 1)"),
              "max_steps": (None, _opt_pos_int), "init": ("scratch", _one_of("scratch", "supernet"))},
    "export": {"quant": (["fp32", "int8"], _quants), "onnx": (True, _boolean), "check_images": (100, _pos_int),
               "calib_images": (100, _pos_int), "tolerance": (FP32_TOLERANCE, _pos_num),
               "min_agreement": (MIN_AGREEMENT, _fraction), "force": (False, _boolean)},
}


def default_config() -> dict:
    return {section: {k: (list(v[0]) if isinstance(v[0], list) else dict(v[0]) if isinstance(v[0], dict) else v[0])
                      for k, v in fields.items()} for section, fields in SCHEMA.items()}


def validate_config(data: dict, where: str = "config") -> dict:
    """Defaults filled in; HwnasError naming ``where`` and the field for anything wrong."""
    if not isinstance(data, dict):
        raise HwnasError(f"{where}: a config must be a table")
    config = default_config()
    for section, values in data.items():
        if section not in SCHEMA:
            raise HwnasError(f"{where}: unknown section [{section}]; known: {', '.join(SCHEMA)}")
        if not isinstance(values, dict):
            raise HwnasError(f"{where}: [{section}] must be a table of fields")
        for key, value in values.items():
            if key not in SCHEMA[section]:
                raise HwnasError(f"{where}: unknown field '{section}.{key}'; known in [{section}]: "
                                 f"{', '.join(SCHEMA[section])}")
            problem = SCHEMA[section][key][1](value)
            if problem:
                raise HwnasError(f"{where}: field '{section}.{key}' {problem}, got {value!r}")
            config[section][key] = value
    search = config["search"]
    warm = search["warmup_epochs"] + (search["child_warmup_epochs"] if search["supernet"] == "entangled" else 0)
    if warm >= search["epochs"]:
        raise HwnasError(f"{where}: fields 'search.warmup_epochs' + 'search.child_warmup_epochs' ({warm}) must be "
                         f"below search.epochs ({search['epochs']}) so that architecture steps happen")
    from hwnas.supernet.mixed_op import MODES

    if config["search"]["mode"] not in MODES:
        raise HwnasError(f"{where}: field 'search.mode' must be one of {', '.join(MODES)}, "
                         f"got {config['search']['mode']!r}")
    try:
        from hwnas.spaces import get_space

        get_space(config["space"]["name"], config["space"]["params"])
    except HwnasError as exc:
        raise HwnasError(f"{where}: [space] {exc}") from None
    return config


def set_field(cfg: dict, pair: str) -> None:
    """Apply one ``SECTION.FIELD=VALUE`` override (``hwnas run --set``); VALUE is read as TOML
    (``3``, ``0.5``, ``true``, ``["fp32"]``), else taken as a string. Checked like a config field."""
    import tomllib

    key, sep, text = pair.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot:
        raise HwnasError(f"--set expects SECTION.FIELD=VALUE (e.g. train.epochs=2), got {pair!r}")
    if section not in SCHEMA or name not in SCHEMA[section]:
        known = ", ".join(f"{s}.{f}" for s in SCHEMA for f in SCHEMA[s])
        raise HwnasError(f"--set {pair}: unknown field {key.strip()!r}; known: {known}")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    problem = SCHEMA[section][name][1](value)
    if problem:
        raise HwnasError(f"--set {pair}: field '{key.strip()}' {problem}, got {value!r}")
    cfg[section][name] = value


def load_config(path: str | Path) -> dict:
    """Read and validate a TOML run config."""
    import tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise HwnasError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HwnasError(f"{path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise HwnasError(f"{path}: bad TOML: {exc}") from None
    return validate_config(data, str(path))


# -- the main job: stages -------------------------------------------------------------
def _device_mismatch(stored: dict, current: dict, runtime: str) -> str | None:
    """Why a stored device description is not this machine (None when it is)."""
    from hwnas.latency_data import device_mismatch

    return device_mismatch(stored, current, runtime)


def find_reference_predictor(space, runtime: str, dtype: str, threads: int, folder: Path,
                             this_device: dict) -> tuple[Path | None, str]:
    """A committed predictor for this machine and space covering every operator; (path, why)."""
    from hwnas.predictors import load_predictor, read_header

    reasons = []
    candidates = sorted(folder.glob("*.json")) if folder.is_dir() else []
    # lookup tables first (measured values), then regressors
    for wanted in ("lut", "regressor"):
        for path in candidates:
            try:
                head = read_header(path)
            except HwnasError:
                continue
            if head.get("type") != wanted or (head.get("runtime"), head.get("dtype"), head.get("threads")) != \
                    (runtime, dtype, threads) or head.get("space") not in (None, space.name):
                continue
            why = _device_mismatch(head.get("device", {}), this_device, runtime)
            if why:
                reasons.append(f"{path.name}: {why}")
                continue
            predictor = load_predictor(path, space=space.name)
            if wanted == "lut" and not predictor.covers(space.unique_ops()):
                reasons.append(f"{path.name}: does not cover every operator of {space.name}")
                continue
            return path, f"reference predictor {path} matches this machine"
    return None, "; ".join(reasons) or f"no {runtime} {dtype} {threads}-thread predictor in {folder}/"


def _covering_rows(csv_path: Path, space, runtime: str, dtype: str, threads: int, this_device: dict) -> str | None:
    """None when ``csv_path`` has this machine's rows for every operator of ``space``, else why not."""
    from hwnas.latency_data import device_file, read_device, read_op_rows
    from hwnas.profiler import profiled_ops

    if not csv_path.exists():
        return f"no {csv_path}"
    desc = device_file(csv_path)
    if not desc.exists():
        return f"no {desc.name}"
    why = _device_mismatch(read_device(desc), this_device, runtime)
    if why:
        return f"{csv_path.name}: {why}"
    have = {r.op.key() for r in read_op_rows(csv_path) if (r.runtime, r.dtype, r.threads) == (runtime, dtype, threads)}
    missing = [op for op in profiled_ops(space) if op.key() not in have]
    return f"{csv_path.name} lacks {len(missing)} operators of {space.name}" if missing else None


def prepare_predictor(cfg: dict, space, run_dir: Path, log, progress: bool = True) -> Path:
    """Stage 1: the predictor file the search uses (given, committed reference, or fitted here)."""
    from hwnas.latency_data import describe_this_device
    from hwnas.predictors.fit import fit_device, output_stem, save

    lat = cfg["latency"]
    runtime, dtype, threads = lat["runtime"], lat["dtype"], lat["threads"]
    if lat["predictor"] != "auto":
        path = Path(lat["predictor"])
        from hwnas.predictors import load_predictor

        load_predictor(path, space=space.name)
        log(f"predictor: {path} (from the config)")
        return path
    this = describe_this_device()
    path, why = find_reference_predictor(space, runtime, dtype, threads, Path(lat["reference_predictors"]), this)
    if path is not None:
        log(f"predictor: {why}")
        return path
    log(f"predictor: no committed one to use ({why})")
    # fit from committed tables when they are this machine's and cover the space, else profile here
    ref_csv = Path(lat["reference_latency_data"]) / f"{this['name']}.csv"
    not_covered = _covering_rows(ref_csv, space, runtime, dtype, threads, this)
    fitted_dir = run_dir / "predictor"
    stem = output_stem(this["name"], runtime, dtype, threads, space.name, space.name)
    target = fitted_dir / f"{stem}.json"
    if target.exists():
        log(f"predictor: {target} (fitted earlier in this run)")
        return target
    if not_covered is None:
        data_dir = ref_csv.parent
        log(f"predictor: fitting on the committed tables {ref_csv}")
    else:
        data_dir = run_dir / "latency_data"
        log(f"predictor: profiling this CPU into {data_dir}/ ({not_covered})")
        _profile_here(space, runtime, dtype, threads, data_dir, this, lat["profile_models"], lat["profile_rounds"],
                      log, progress)
    result = fit_device(data_dir, this["name"], runtime, dtype, threads, space=space.name)
    save(result, fitted_dir, stem)
    log(f"predictor: fitted {target} ({result.n_op_rows} operators, best regressor by cross-validation "
        f"in {fitted_dir})")
    return target


def _profile_here(space, runtime: str, dtype: str, threads: int, data_dir: Path, device: dict, n_models: int,
                  rounds: int, log=print, progress: bool = True, limit: int | None = None) -> None:
    """Time the space's operators and ``n_models`` whole models in interleaved rounds (:mod:`hwnas.timing_rounds`),
    pinned to one core; tables, architectures and the resumable cache all stay in ``data_dir``."""
    from hwnas.runners import get_runner
    from hwnas.timing_rounds import profile_interleaved

    runner = get_runner(runtime, threads)
    device = dict(device, runners={runner.name: runner.describe()})
    with pinned(default_core()):
        result = profile_interleaved(space, runner, device, dtype, n_models, rounds,
                                     data_dir / f"{device['name']}.csv", data_dir / f"{device['name']}-models.csv",
                                     data_dir / "models" / space.name, data_dir / "cache", limit=limit,
                                     progress=progress, log=lambda m: log(f"predictor: {m}"))
    log(f"predictor: {len(result.op_rows)} operators and {len(result.model_rows)} whole models timed in {rounds} "
        f"interleaved rounds")


def reference_child(space):
    """The space's MobileNetV2-style network: k3_e6 (else the first candidate) everywhere, every stage at width 1."""
    from hwnas.arch import architecture_of

    base = space.at_widths([1.0] * space.num_stages) if space.searches_width else space
    return architecture_of(base, ["k3_e6" if "k3_e6" in p.names else p.names[0] for p in base.positions])


def choose_budget(cfg: dict, space, predictor_path: Path) -> tuple[float, float, float, float]:
    """(budget, fastest, slowest, reference) in predicted ms; "auto" is ``budget_scale`` x the reference network
    (:func:`reference_child`)."""
    from hwnas.search.cost_tables import latency_table
    from hwnas.search.latency import load_latency_predictor

    predictor, _ = load_latency_predictor(space, str(predictor_path))
    table = latency_table(space, predictor)
    reference = predictor.predict_ops(reference_child(space).ops())
    budget = cfg["latency"]["budget_ms"]
    if budget == "auto":
        budget = round(cfg["latency"]["budget_scale"] * reference, 4)
    if budget < table.min():
        raise HwnasError(f"budget {budget:g} ms is below the fastest architecture of {space.name}: minimum "
                         f"achievable latency is {table.min():.4f} ms (latency from {predictor_path})")
    return float(budget), table.min(), table.max(), reference


def _search(cfg: dict, space, predictor: Path, budget: float, run_dir: Path, log, progress: bool = True):
    """Stage 2: supernet search under the budget (skipped when this run already has its result)."""
    from hwnas.arch import Architecture

    out = run_dir / "search"
    derived = out / "derived.json"
    if derived.exists() and (out / "arch.json").exists():
        log(f"search: done earlier ({out / 'arch.json'})")
        return Architecture.load(out / "arch.json"), json.loads(derived.read_text())
    from hwnas.search import SearchConfig, run_search

    s = cfg["search"]
    result = run_search(SearchConfig(
        space=space.name, space_params=dict(cfg["space"]["params"]), dataset=cfg["data"]["dataset"],
        predictor=str(predictor), budget_ms=budget, relevel=s["relevel"], mode=s["mode"], epochs=s["epochs"],
        supernet=s["supernet"],
        warmup_epochs=s["warmup_epochs"], child_warmup_epochs=s["child_warmup_epochs"],
        batch_size=s["batch_size"], max_steps=s["max_steps"],
        lr_alpha=s["lr_alpha"], derive=s["derive"], derive_children=s["derive_children"], limit_train=cfg["data"]["limit_train"], limit_val=cfg["data"]["limit_val"],
        seed=cfg["run"]["seed"], out=str(out), resume=True, device="cpu", workers=cfg["data"]["workers"],
        threads=cfg["run"]["threads"], progress=progress))
    return result.arch, result.summary


def _train(cfg: dict, arch, run_dir: Path, log, progress: bool = True):
    """Stage 3: train the derived network from scratch (resumes from its checkpoint)."""
    from hwnas.data import load_dataset
    from hwnas.train import TrainConfig, train_model

    t, d = cfg["train"], cfg["data"]
    splits = load_dataset(d["dataset"], arch.space.params["resolution"], seed=cfg["run"]["seed"],
                          limit_train=d["limit_train"], limit_val=d["limit_val"])
    tc = TrainConfig(epochs=t["epochs"], batch_size=t["batch_size"], lr=t["lr"], optimizer=t["optimizer"],
                     weight_decay=t["weight_decay"], label_smoothing=t["label_smoothing"], max_steps=t["max_steps"],
                     seed=cfg["run"]["seed"], num_workers=d["workers"])
    log(f"train: {tc.epochs} epochs on {splits.name} ({len(splits.train)} train / {len(splits.val)} val images)")
    init = run_dir / "search" if t["init"] == "supernet" else None  # fine-tune the supernet's shared weights
    return train_model(arch, splits, config=tc, out_dir=run_dir / "train", resume=True, init_weights=init,
                       progress=progress), splits


def _export(cfg: dict, arch, model, splits, run_dir: Path, log) -> ExportResult:
    """Stage 4: export + self-check (reuses files this run has already checked)."""
    from hwnas.data import load_dataset

    e = cfg["export"]
    out = run_dir / "export"
    record = out / "export.json"
    if record.exists():
        files = [ExportedFile(Path(f["path"]), f["format"], f["quant"], f["max_abs_diff"], f["agreement"], f["passed"])
                 for f in json.loads(record.read_text())["files"]]
        if all(f.path.exists() for f in files):
            log(f"export: done earlier ({out})")
            return ExportResult(files)
    plain = load_dataset(cfg["data"]["dataset"], arch.space.params["resolution"], seed=cfg["run"]["seed"],
                         augment=False, limit_train=cfg["data"]["limit_train"], limit_val=cfg["data"]["limit_val"])
    check = stack_images(plain.val, e["check_images"], seed=1)
    calib = stack_images(plain.train, e["calib_images"], seed=2)
    return export_trained(arch, model, out, check, calib, quants=tuple(e["quant"]), onnx=e["onnx"],
                          tolerance=e["tolerance"], min_agreement=e["min_agreement"], force=e["force"],
                          progress=lambda m: log(f"export: {m.strip()}"))


def _measure(cfg: dict, exported: ExportResult, predicted_ms: float, budget: float, run_dir: Path, log) -> list[dict]:
    """Stage 5: time the exported files on this machine (pinned to one core)."""
    path = run_dir / "measured.json"
    if path.exists():
        log("measure: done earlier")
        return json.loads(path.read_text())
    lat = cfg["latency"]
    fmt = "onnx" if lat["runtime"] == "onnxruntime" else "tflite"
    rows, core = [], default_core()
    for f in exported.files:
        if f.format != fmt:
            continue
        log(f"measure: {f.path.name} with {lat['runtime']}, {lat['threads']} thread(s), core {core}")
        t = measure_file(f.path, lat["runtime"], lat["threads"], core)
        rows.append({"file": str(f.path), "runtime": lat["runtime"], "quant": f.quant, "threads": lat["threads"],
                     "measured_ms": round(t.median_ms, 5), "spread_ms": round(t.spread_ms, 5),
                     "predicted_ms": round(predicted_ms, 5) if f.quant == lat["dtype"] else None,
                     "budget_ms": budget})
    path.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


@dataclass
class RunReport:
    data: dict
    text: str


def _derivation(s: dict) -> str:
    """How the search chose its child (issue 20), for the report."""
    if s.get("derivation") == "evolution":
        return (f"evolution: {s['derive_children_scored']} children of the band scored by the supernet, the "
                f"winner's supernet accuracy {s['derive_supernet_acc']:.2%}")
    return "argmax: the most probable child of the band"


def _format_report(r: dict) -> str:
    m = {row["quant"]: row for row in r["measured"]}
    budget = r["budget_ms"]
    measured = ", ".join(f"{q} {row['measured_ms']:.3f} ± {row['spread_ms']:.3f} ms = "
                         f"{row['measured_ms'] / budget:.2f}x budget ({verdict(row['measured_ms'], budget)})"
                         for q, row in m.items())
    failed = {f["quant"] for f in r["export"] if not f["passed"]}
    agreement = ", ".join(f"{f['quant']} {f['agreement']:.1%}" for f in r["export"]
                          if f["format"] == "tflite" and f["quant"] != "fp32" and f["agreement"] is not None)
    times = ", ".join(f"{k} {v:.0f} s" for k, v in r["seconds"].items())
    lines = [
        f"hwnas main job: {r['space']} on {r['dataset']}; latency on {r['device']} "
        f"({r['runtime']} {r['dtype']}, {r['threads']} thread)",
        f"  budget          {budget:.3f} ms ({r['budget_note']})",
        f"  architecture    {' '.join(r['choices'])}"
        + (f", stage widths {', '.join(f'{w:g}' for w in r['stage_widths'])}" if r.get("stage_widths") else ""),
        f"  predicted       {r['predicted_ms']:.3f} ms ({r['predictor']}"
        + (f" x {r['latency_level']:g}, the session level measured before the search)"
           if r.get("latency_level", 1.0) != 1.0 else ")"),
        f"  derivation      {_derivation(r.get('search_summary') or {})}",
        f"  measured        {measured}",
        f"  recommended     {recommend(r['measured'], budget, failed) if r['measured'] else 'nothing measured'}",
        f"  accuracy        {r['val_acc']:.2%} top-1 on {r['n_val']} validation images (PyTorch, "
        f"{r['train_epochs']} epochs)" + (f"; quantized top-1 agreement with PyTorch: {agreement}" if agreement else ""),
        f"  FLOPs / params  {r['mflops']:.2f} M multiply-adds, {r['mparams']:.3f} M parameters",
        f"  files           {r['run_dir']}/: search/arch.json, train/weights.safetensors, "
        f"export/{{{', '.join(Path(f['path']).name for f in r['export'])}}}, report.json",
        f"  time            {r['total_seconds']:.0f} s ({times})",
    ]
    return "\n".join(lines)


def check_inputs(cfg: dict, where: str = "config", dataset_from_cli: bool = False) -> None:
    """Every path of a validated config, checked before stage 1 (whose profiling takes minutes): the run
    folder can be written, the dataset loads and has the space's classes, a given predictor loads, and
    the reference locations are folders when they exist (missing ones mean: fit or profile here)."""
    from hwnas.data import check_dataset
    from hwnas.outputs import check_writable_folder
    from hwnas.predictors import load_predictor
    from hwnas.spaces import get_space

    check_writable_folder(cfg["run"]["out"], f"{where}: field 'run.out' =")
    space = get_space(cfg["space"]["name"], cfg["space"]["params"])
    name = cfg["data"]["dataset"]
    field = f"--dataset {name}" if dataset_from_cli else f"{where}: field 'data.dataset'"
    if name != "digits" and not Path(name).expanduser().exists():
        raise HwnasError(f"{field}: dataset {name} does not exist (a relative path is relative to the folder "
                         f"hwnas runs in, {Path.cwd()}); give its location with --dataset PATH")
    check_dataset(cfg["data"]["dataset"], space.params["resolution"], space.params["num_classes"], field)
    lat = cfg["latency"]
    for key in ("reference_predictors", "reference_latency_data"):
        path = Path(lat[key])
        if path.exists() and not path.is_dir():
            raise HwnasError(f"{where}: field 'latency.{key}': {path} is a file, not a folder")
    if lat["predictor"] != "auto":
        try:
            load_predictor(lat["predictor"], space=space.name)
        except HwnasError as exc:
            raise HwnasError(f"{where}: field 'latency.predictor': {exc}") from None


def run_pipeline(cfg: dict, fresh: bool = False, log=print, where: str = "config", progress: bool = True,
                 dataset_from_cli: bool = False) -> RunReport:
    """The main job: predictor -> budget -> search -> train -> export -> measure -> report.

    ``where`` names the config in error messages; its paths are checked first (:func:`check_inputs`).
    ``progress=False``: no progress bars (nor the search's per-epoch lines). ``dataset_from_cli``: error
    messages name ``--dataset`` instead of the config field."""
    import time

    from hwnas.latency_data import default_device_name
    from hwnas.spaces import get_space

    check_inputs(cfg, where, dataset_from_cli)
    run_dir = Path(cfg["run"]["out"])
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_dir / "config.json"
    if saved.exists():
        before = json.loads(saved.read_text())
        for section in cfg:
            for key in cfg[section]:
                if (section, key) != ("run", "threads") and before.get(section, {}).get(key) != cfg[section][key]:
                    raise HwnasError(f"{run_dir} holds a run with {section}.{key} = "
                                     f"{before.get(section, {}).get(key)!r}, this config has {cfg[section][key]!r}; "
                                     "use another run.out (--out) or --fresh to start over")
    else:
        saved.write_text(json.dumps(cfg, indent=2) + "\n")
    space = get_space(cfg["space"]["name"], cfg["space"]["params"])
    use_torch_threads(cfg["run"]["threads"], f"{where}: field 'run.threads'")
    seconds: dict[str, float] = {}
    start = t0 = time.time()

    def lap(name: str) -> None:
        nonlocal t0
        seconds[name] = round(time.time() - t0, 1)
        t0 = time.time()

    log(f"[1/6] predictor for {space.name} ({cfg['latency']['runtime']} {cfg['latency']['dtype']}, "
        f"{cfg['latency']['threads']} thread)")
    predictor = prepare_predictor(cfg, space, run_dir, log, progress)
    budget, fastest, slowest, reference = choose_budget(cfg, space, predictor)
    note = (f"auto: {cfg['latency']['budget_scale']:g} x the MobileNetV2-style k3_e6 network at width 1 "
            f"({reference:.3f} ms predicted)" if cfg["latency"]["budget_ms"] == "auto"
            else "from the config") + f"; the space spans {fastest:.3f}-{slowest:.3f} ms predicted"
    log(f"budget: {budget:.3f} ms ({note})")
    lap("predictor")
    log(f"[2/6] search ({cfg['search']['mode']}, {cfg['search']['epochs']} epochs)")
    arch, summary = _search(cfg, space, predictor, budget, run_dir, log, progress)
    lap("search")
    log(f"[3/6] train {' '.join(arch.choices)}")
    trained, splits = _train(cfg, arch, run_dir, log, progress)
    lap("train")
    log("[4/6] export + self-check")
    exported = _export(cfg, arch, trained.model, splits, run_dir, log)
    lap("export")
    log("[5/6] measure")
    from hwnas.search.latency import load_latency_predictor

    level = float(summary.get("latency_level") or 1.0)  # the session level the search aimed with
    predicted = load_latency_predictor(space, str(predictor), quiet=True, level=level)[0].predict_ops(arch.ops())
    measured = _measure(cfg, exported, predicted, budget, run_dir, log)
    lap("measure")
    cost = arch.cost()
    data = {
        "space": space.name, "dataset": splits.name, "device": default_device_name(),
        "runtime": cfg["latency"]["runtime"], "dtype": cfg["latency"]["dtype"], "threads": cfg["latency"]["threads"],
        "budget_ms": budget, "budget_note": note, "choices": list(arch.choices),
        "stage_widths": list(arch.space.stage_widths) if space.searches_width else None,
        "predictor": str(predictor), "latency_level": level, "predicted_ms": round(predicted, 5), "measured": measured,
        "val_acc": trained.val_acc, "n_val": len(splits.val), "train_epochs": trained.epochs,
        "mflops": cost.flops / 1e6, "mparams": cost.params / 1e6,
        "search_summary": {k: summary.get(k) for k in ("predicted_latency_ms", "within_budget", "band_ms",
                                                       "val_acc_supernet_child", "derivation",
                                                       "derive_children_scored", "derive_supernet_acc")},
        "export": exported.to_dict(), "run_dir": str(run_dir), "seconds": seconds,
        "total_seconds": round(time.time() - start, 1),
    }
    text = _format_report(data)
    (run_dir / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    (run_dir / "report.txt").write_text(text + "\n")
    log("[6/6] report")
    return RunReport(data, text)
