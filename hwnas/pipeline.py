"""The main job (:func:`run_pipeline`): predictor -> budget -> search -> train -> export -> measure -> report.

Each stage reuses what this run folder already holds, so re-running the same command resumes. The predictor is
loaded once (checked with the inputs, before any long work) and passed to every stage as an object. The parts
live beside: the config schema in :mod:`hwnas.run_config`, the export stage in :mod:`hwnas.export.trained`, timing
on one core in :mod:`hwnas.runners.pinning`, the report in :mod:`hwnas.run_report`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from hwnas.errors import HwnasError
from hwnas.jsonfile import read_json
from hwnas.export.trained import ExportedFile, ExportResult, export_trained, stack_images
from hwnas.run_report import RunReport, format_report
from hwnas.runners.pinning import default_core, measure_file, pinned
from hwnas.search.latency import check_budget, leveled, load_latency_predictor
from hwnas.threads import use_torch_threads


# -- the main job: stages -------------------------------------------------------------
def _device_mismatch(stored: dict, current: dict, runtime: str) -> str | None:
    """Why a stored device description is not this machine (None when it is)."""
    from hwnas.latency_data import device_mismatch

    return device_mismatch(stored, current, runtime)


def reference_candidates(space, runtime: str, dtype: str, threads: int, folder: Path,
                         this_device: dict, limit: int | None = None) -> tuple[list[tuple[Path, object]], str]:
    """The committed predictors whose recorded CPU (name, cores, runtime version) is this machine's, one per device
    (its lookup table when that covers every operator of ``space``, else its regressor): ([(path, loaded
    predictor)], why others were left out); at most ``limit`` of them (each found is loaded). ``space`` None: any
    space (a model file's operators are priced with the table's fallback)."""
    from hwnas.predictors import load_predictor, read_header

    reasons, found, devices = [], [], set()
    paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
    # lookup tables first (measured values), then regressors
    for wanted in ("lut", "regressor"):
        for path in paths:
            try:
                head = read_header(path)
            except HwnasError:
                continue
            if head.get("type") != wanted or (head.get("runtime"), head.get("dtype"), head.get("threads")) != \
                    (runtime, dtype, threads) or space and head.get("space") not in (None, space.name):
                continue
            device = (head.get("device") or {}).get("name")
            if device in devices:
                continue
            why = _device_mismatch(head.get("device", {}), this_device, runtime)
            if why:
                reasons.append(f"{path.name}: {why}")
                continue
            predictor = load_predictor(path, space=space and space.name)
            if wanted == "lut" and space and not predictor.covers(space.unique_ops()):
                reasons.append(f"{path.name}: does not cover every operator of {space.name}")
                continue
            devices.add(device)
            found.append((path, predictor))
            if len(found) == limit:
                return found, ""
    return found, "; ".join(reasons) or f"no {runtime} {dtype} {threads}-thread predictor in {folder}/"


def find_reference_predictor(space, runtime: str, dtype: str, threads: int, folder: Path,
                             this_device: dict) -> tuple[Path | None, object, str]:
    """The first committed predictor for this machine's CPU (:func:`reference_candidates`) without timing anything:
    (path, the loaded predictor, why), or (None, None, why not)."""
    found, why = reference_candidates(space, runtime, dtype, threads, folder, this_device, limit=1)
    if not found:
        return None, None, why
    path, predictor = found[0]
    return path, predictor, f"reference predictor {path} matches this machine's CPU"


def recognise_machine(space, candidates: list[tuple[Path, object]], lat: dict, run_dir: Path, log,
                      progress: bool = True):
    """Which candidate table is this machine's, by timing anchor models (:mod:`hwnas.predictors.device_match`);
    the verdict is kept in ``run_dir/device_match.json`` so a resumed run does not time again."""
    from hwnas.predictors.device_match import DeviceMatch, TableFit, recognise

    record = run_dir / "device_match.json"
    names = sorted(p.name for p, _ in candidates)
    if record.exists():
        saved = read_json(record, "record of the machine's recognition")
        if isinstance(saved, dict) and sorted(f.get("name") for f in saved.get("fits", [])) == names:
            log(f"predictor: recognition kept from {record}")
            return DeviceMatch(saved["anchors"], [TableFit(**f) for f in saved["fits"]], saved["tolerance"])
    log(f"predictor: timing {lat['anchors']} anchor models to tell which of {', '.join(names)} is this machine's")
    match = recognise(space, {p.name: pred for p, pred in candidates}, lat["runtime"], lat["dtype"], lat["threads"],
                      count=lat["anchors"], tolerance=lat["recognise_tolerance"], progress=progress)
    run_dir.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"anchors": match.anchors, "fits": [vars(f) for f in match.fits],
                                  "tolerance": match.tolerance}, indent=2) + "\n")
    return match


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


def prepare_predictor(cfg: dict, space, run_dir: Path, log, progress: bool = True,
                      given=None) -> tuple[Path, object, str]:
    """Stage 1: the predictor the search uses (given, committed reference, or fitted here): (its file, the loaded
    predictor, why it was chosen). ``given``: the config's predictor, already loaded by :func:`check_inputs`.

    A committed table recorded on this CPU is used only when timing anchor models here shows its relative costs
    are this machine's (``latency.recognise``; two machines can share a CPU name); otherwise this machine is
    profiled into the run folder."""
    from hwnas.latency_data import describe_this_device
    from hwnas.predictors import load_predictor
    from hwnas.predictors.device_match import fingerprint
    from hwnas.predictors.lut import LookupTable
    from hwnas.predictors.fit import fit_device, output_stem, save

    lat = cfg["latency"]
    runtime, dtype, threads = lat["runtime"], lat["dtype"], lat["threads"]
    if lat["predictor"] != "auto":
        path = Path(lat["predictor"])
        log(f"predictor: {path} (from the config)")
        return path, given if given is not None else load_predictor(path, space=space.name), "from the config"
    this = describe_this_device()
    candidates, why = reference_candidates(space, runtime, dtype, threads, Path(lat["reference_predictors"]), this)
    not_this_machine = None
    if candidates and not lat["recognise"]:
        path, predictor = candidates[0]
        log(f"predictor: {path} (recorded on this CPU; not checked by timing: latency.recognise = false)")
        return path, predictor, "recorded on this CPU (not checked by timing)"
    if candidates:
        match = recognise_machine(space, candidates, lat, run_dir, log, progress)
        for line in match.describe().splitlines():
            log(f"predictor: {line}")
        if match.best is not None:
            path, predictor = next(c for c in candidates if c[0].name == match.best.name)
            return path, predictor, (f"recognised by timing {len(match.anchors)} anchor models: "
                                     f"{match.best.error:.1%} off on average after levelling")
        not_this_machine = match.fits[0]
        why = (f"this CPU's tables are another machine's: the nearest, {not_this_machine.name}, is "
               f"{not_this_machine.error:.1%} off on average over the anchors")
        # a machine of its own: another name than the tables', and its timing fingerprint beside the CPU string
        this = dict(this, name=f"{this['name']}-local",
                    fingerprint=fingerprint(match, space.name, runtime, dtype, threads))
        nearest = next(c for c in candidates if c[0].name == not_this_machine.name)
        if lat["adapt_models"] and not_this_machine.error <= lat["adapt_tolerance"] and \
                isinstance(nearest[1], LookupTable):
            log(f"predictor: {why}; adapting it to this machine from {lat['adapt_models']} timed children "
                f"(nearest within {lat['adapt_tolerance']:.0%})")
            return _adapt_here(space, nearest, lat, this, run_dir, log, progress)
    log(f"predictor: no committed one to use ({why})")
    # fit from committed tables when they are this machine's and cover the space, else profile here
    ref_csv = Path(lat["reference_latency_data"]) / f"{this['name']}.csv"
    not_covered = (f"{ref_csv.name} was timed on another machine with this CPU name" if not_this_machine
                   else _covering_rows(ref_csv, space, runtime, dtype, threads, this))
    fitted_dir = run_dir / "predictor"
    stem = output_stem(this["name"], runtime, dtype, threads, space.name, space.name)
    target = fitted_dir / f"{stem}.json"
    if target.exists():
        log(f"predictor: {target} (fitted earlier in this run)")
        return target, load_predictor(target, space=space.name), "fitted on this machine earlier in this run"
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
    return target, load_predictor(target, space=space.name), (
        "profiled and fitted on this machine" if not_covered else "fitted on this machine's committed tables")


def _adapt_here(space, nearest: tuple[Path, object], lat: dict, this: dict, run_dir: Path, log,
                progress: bool = True) -> tuple[Path, object, str]:
    """The nearest table rescaled per operator group to ``lat["adapt_models"]`` children timed here
    (:mod:`hwnas.predictors.adapt_table`); kept in the run folder, so a resumed run reuses it."""
    from hwnas.predictors import load_predictor
    from hwnas.predictors.adapt_table import adapt_table, time_children
    from hwnas.predictors.device_match import anchor_architectures

    source, table = nearest
    target = run_dir / "predictor" / f"{this['name']}-adapted-from-{source.stem}.json"
    chosen = f"adapted from {source.name} to this machine with {lat['adapt_models']} children timed here"
    if target.exists():
        log(f"predictor: {target} (adapted earlier in this run)")
        return target, load_predictor(target, space=space.name), chosen
    children = anchor_architectures(space, lat["adapt_models"], seed=lat["adapt_models"])
    measured = time_children(children, lat["runtime"], lat["dtype"], lat["threads"], lat["profile_rounds"],
                             progress=progress)
    adapted = adapt_table(table, children, measured, this, str(source))
    target.parent.mkdir(parents=True, exist_ok=True)
    adapted.save(target)
    after = [adapted.predict_ops(a.ops()) / m - 1 for a, m in zip(children, measured)]
    log(f"predictor: adapted {target} (on its {len(children)} children: worst {max(map(abs, after)):.1%} off)")
    return target, adapted, chosen


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


def choose_budget(cfg: dict, space, predictor, source: str) -> tuple[float, float, float, float]:
    """(budget, fastest, slowest, reference) in predicted ms of ``predictor`` (loaded; ``source`` names it);
    "auto" is ``budget_scale`` x the reference network (:func:`reference_child`)."""
    from hwnas.children import latency_table

    table = latency_table(space, predictor)
    reference = predictor.predict_ops(reference_child(space).ops())
    budget = cfg["latency"]["budget_ms"]
    if budget == "auto":
        budget = round(cfg["latency"]["budget_scale"] * reference, 4)
    check_budget(budget, table.min(), source, what=space.name)
    return float(budget), table.min(), table.max(), reference


def _search(cfg: dict, space, path: Path, predictor, budget: float, run_dir: Path, log, progress: bool = True):
    """Stage 2: supernet search under the budget (skipped when this run already has its result); (architecture,
    summary, the session level the search aimed with, the budget in ms measured now).

    An "auto" budget (``budget``: the reference network's predicted ms x ``budget_scale``) is multiplied by the
    session level: the reference network as fast as this machine runs it now, which a machine slower than the
    predictor's (a level of 3x) can still meet; a number from the config is kept as it is."""
    from dataclasses import replace

    from hwnas.arch import Architecture
    from hwnas.search import SearchConfig, run_search

    auto = cfg["latency"]["budget_ms"] == "auto"
    out = run_dir / "search"
    derived = out / "derived.json"
    if derived.exists() and (out / "arch.json").exists():
        log(f"search: done earlier ({out / 'arch.json'})")
        summary = json.loads(derived.read_text())
        level = float(summary.get("latency_level") or 1.0)
        return Architecture.load(out / "arch.json"), summary, level, _leveled_budget(budget, level, auto)
    s = cfg["search"]
    config = SearchConfig(
        space=space.name, space_params=dict(cfg["space"]["params"]), dataset=cfg["data"]["dataset"],
        predictor=str(path), budget_ms=budget, relevel=s["relevel"], mode=s["mode"], epochs=s["epochs"],
        supernet=s["supernet"],
        warmup_epochs=s["warmup_epochs"], child_warmup_epochs=s["child_warmup_epochs"],
        batch_size=s["batch_size"], max_steps=s["max_steps"],
        lr_alpha=s["lr_alpha"], derive=s["derive"], derive_children=s["derive_children"],
        limit_train=cfg["data"]["limit_train"], limit_val=cfg["data"]["limit_val"],
        seed=cfg["run"]["seed"], out=str(out), resume=True, device="cpu", workers=cfg["data"]["workers"],
        threads=cfg["run"]["threads"], progress=progress)
    level = 1.0
    if config.relevel:
        from hwnas.search.session_level import level_for_search

        level = level_for_search(config, space, predictor)
    if auto and level != 1.0:
        config = replace(config, budget_ms=_leveled_budget(budget, level, auto))
        log(f"budget: {config.budget_ms:.3f} ms = {budget:.3f} ms predicted x session level {level:.3f} "
            "(the reference network at this machine's speed now)")
    result = run_search(config, predictor=predictor, level=level)
    return result.arch, result.summary, result.level, config.budget_ms


def _leveled_budget(budget: float, level: float, auto: bool) -> float:
    """An auto budget at the session ``level`` (the speed measured now); a budget from the config as it is."""
    return round(budget * level, 4) if auto else budget


def _train(cfg: dict, arch, run_dir: Path, log, progress: bool = True):
    """Stage 3: train the derived network (resumes from its checkpoint): from scratch, from the supernet's
    shared weights (``train.init = "supernet"``), or both (``"best"``), keeping the one more accurate on the
    validation images. Returns (result, splits, {start: validation accuracy} of every training)."""
    from hwnas.data import load_dataset
    from hwnas.train import TrainConfig, train_model

    t, d = cfg["train"], cfg["data"]
    splits = load_dataset(d["dataset"], arch.space.params["resolution"], seed=cfg["run"]["seed"],
                          limit_train=d["limit_train"], limit_val=d["limit_val"])
    tc = TrainConfig(epochs=t["epochs"], batch_size=t["batch_size"], lr=t["lr"], optimizer=t["optimizer"],
                     weight_decay=t["weight_decay"], label_smoothing=t["label_smoothing"], max_steps=t["max_steps"],
                     seed=cfg["run"]["seed"], num_workers=d["workers"])
    log(f"train: {tc.epochs} epochs on {splits.name} ({len(splits.train)} train / {len(splits.val)} val images)")
    starts = {"scratch": ["scratch"], "supernet": ["supernet"], "best": ["scratch", "supernet"]}[t["init"]]
    results = {}
    for start in starts:
        out = run_dir / ("train" if start == "scratch" or len(starts) == 1 else "train-supernet")
        init = run_dir / "search" if start == "supernet" else None  # fine-tune the supernet's shared weights
        results[start] = train_model(arch, splits, config=tc, out_dir=out, resume=True, init_weights=init,
                                     progress=progress)
    kept = max(starts, key=lambda k: (results[k].val_acc, k == "scratch"))  # a tie keeps the plain training
    if len(starts) > 1:
        log("train: validation accuracy " + ", ".join(f"{k} {r.val_acc:.4f}" for k, r in results.items())
            + f"; keeping {kept}")
    return results[kept], splits, {"kept": kept, **{k: r.val_acc for k, r in results.items()}}


def _export(cfg: dict, arch, model, run_dir: Path, log) -> ExportResult:
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
                     "measured_ms": round(t.latency_ms, 5), "median_ms": round(t.median_ms, 5),
                     "spread_ms": round(t.spread_ms, 5), "rounds_ms": [round(v, 5) for v in t.rounds_ms],
                     "predicted_ms": round(predicted_ms, 5) if f.quant == lat["dtype"] else None,
                     "budget_ms": budget})
    path.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def check_inputs(cfg: dict, where: str = "config", dataset_from_cli: bool = False):
    """Every path of a validated config, checked before stage 1 (whose profiling takes minutes): the run
    folder can be written, the dataset loads and has the space's classes, a given predictor loads, and
    the reference locations are folders when they exist (missing ones mean: fit or profile here).
    Returns the given predictor, loaded (None for "auto")."""
    from hwnas.data import check_dataset
    from hwnas.outputs import check_writable_folder
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
    if lat["predictor"] == "auto":
        return None
    try:
        return load_latency_predictor(space, lat["predictor"])[0]
    except HwnasError as exc:
        raise HwnasError(f"{where}: field 'latency.predictor': {exc}") from None


def _open_run_folder(cfg: dict, fresh: bool) -> Path:
    """The run folder, emptied with ``fresh``; one that holds a run with other settings is refused."""
    run_dir = Path(cfg["run"]["out"])
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_dir / "config.json"
    if saved.exists():
        before = read_json(saved, "run config")
        for section in cfg:
            for key in cfg[section]:
                if (section, key) != ("run", "threads") and before.get(section, {}).get(key) != cfg[section][key]:
                    raise HwnasError(f"{run_dir} holds a run with {section}.{key} = "
                                     f"{before.get(section, {}).get(key)!r}, this config has {cfg[section][key]!r}; "
                                     "use another run.out (--out) or --fresh to start over")
    else:
        saved.write_text(json.dumps(cfg, indent=2) + "\n")
    return run_dir


def run_pipeline(cfg: dict, fresh: bool = False, log=print, where: str = "config", progress: bool = True,
                 dataset_from_cli: bool = False) -> RunReport:
    """The main job: predictor -> budget -> search -> train -> export -> measure -> report.

    ``where`` names the config in error messages; its paths are checked first (:func:`check_inputs`).
    ``progress=False``: no progress bars (nor the search's per-epoch lines). ``dataset_from_cli``: error
    messages name ``--dataset`` instead of the config field."""
    import time

    from hwnas.latency_data import default_device_name
    from hwnas.spaces import get_space

    given = check_inputs(cfg, where, dataset_from_cli)
    run_dir = _open_run_folder(cfg, fresh)
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
    path, predictor, chosen = prepare_predictor(cfg, space, run_dir, log, progress, given)
    budget, fastest, slowest, reference = choose_budget(cfg, space, predictor, str(path))
    auto = cfg["latency"]["budget_ms"] == "auto"
    spans = f"the space spans {fastest:.3f}-{slowest:.3f} ms predicted"
    note = (f"auto: {cfg['latency']['budget_scale']:g} x the MobileNetV2-style k3_e6 network at width 1 "
            f"({reference:.3f} ms predicted)" if auto else "from the config")
    log(f"budget: {budget:.3f} ms ({note}; {spans})")
    lap("predictor")
    log(f"[2/6] search ({cfg['search']['mode']}, {cfg['search']['epochs']} epochs)")
    arch, summary, level, budget = _search(cfg, space, path, predictor, budget, run_dir, log, progress)
    if auto and level != 1.0:
        note += f" x session level {level:.3f}"
    note += f"; {spans}"
    lap("search")
    log(f"[3/6] train {' '.join(arch.choices)}")
    trained, splits, starts = _train(cfg, arch, run_dir, log, progress)
    lap("train")
    log("[4/6] export + self-check")
    exported = _export(cfg, arch, trained.model, run_dir, log)
    lap("export")
    log("[5/6] measure")
    predicted = leveled(predictor, str(path), level)[0].predict_ops(arch.ops())
    measured = _measure(cfg, exported, predicted, budget, run_dir, log)
    lap("measure")
    cost = arch.cost()
    data = {
        "space": space.name, "dataset": splits.name,
        "device": (predictor.device or {}).get("name") or default_device_name(), "machine": default_device_name(),
        "runtime": cfg["latency"]["runtime"], "dtype": cfg["latency"]["dtype"], "threads": cfg["latency"]["threads"],
        "budget_ms": budget, "budget_note": note, "choices": list(arch.choices),
        "stage_widths": list(arch.space.stage_widths) if space.searches_width else None,
        "predictor": str(path), "predictor_chosen": chosen, "latency_level": level, "predicted_ms": round(predicted, 5), "measured": measured,
        "val_acc": trained.val_acc, "n_val": len(splits.val), "train_epochs": trained.epochs, "train_starts": starts,
        "mflops": cost.flops / 1e6, "mparams": cost.params / 1e6,
        "search_summary": {k: summary.get(k) for k in ("predicted_latency_ms", "within_budget", "band_ms",
                                                       "val_acc_supernet_child", "derivation",
                                                       "derive_children_scored", "derive_supernet_acc",
                                                       "derive_score", "derive_score_unit")},
        "export": exported.to_dict(), "run_dir": str(run_dir), "seconds": seconds,
        "total_seconds": round(time.time() - start, 1),
    }
    text = format_report(data)
    (run_dir / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    (run_dir / "report.txt").write_text(text + "\n")
    log("[6/6] report")
    return RunReport(data, text)
