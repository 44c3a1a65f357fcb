"""Public phone measurements of the FBNet space (HW-NAS-Bench / HELP) as hwnas latency data.

The source CSV (``fbnet_cifar100_latency.csv``, see ``docs/phones.md``) has one
row per architecture: ``arch_id``, ``ops`` (22 candidate names separated by
spaces, one per searchable layer of ``fbnet-cifar100``) and one ``<device>_ms``
column per device. :func:`read_phone_csv` validates it (a bad row raises
:class:`HwnasError` naming the line); :func:`import_phone_csv` writes, per
device, the shared whole-model format ``<device>-models.csv`` (choices carried
in the rows, ``arch_file`` = ``<source file>#<arch_id>``; no architecture JSON
files) and ``<device>.device.json`` describing the device and how it was measured.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwnas.errors import HwnasError
from hwnas.latency_data import (MAX_MS, MODEL_FIELDS, ModelRow, check_device_name, read_model_rows,
                                 write_device)
from hwnas.spaces import get_space

SPACE = "fbnet-cifar100"
SOURCE = ("HW-NAS-Bench (Li et al., ICLR 2021) and HELP (Lee et al., NeurIPS 2021), "
          "as collected in fbnet_cifar100_latency.csv")
WHOLE = "whole network measured on the device, batch 1"
LUT_SUM = "sum of a per-operator lookup table measured on the device (exact sum of per-layer entries)"

# column -> (device name, description, how it was measured, value resolution, runtime column value)
DEVICES = {
    "pixel2_ms": ("pixel2", "Google Pixel 2 phone", WHOLE, "whole milliseconds", "adb-tflite"),
    "samsung_a50_ms": ("samsung_a50", "Samsung Galaxy A50 phone", WHOLE, "whole milliseconds", "adb-tflite"),
    "samsung_s7_ms": ("samsung_s7", "Samsung Galaxy S7 phone", WHOLE, "whole milliseconds", "adb-tflite"),
    "essential_ph_1_ms": ("essential_ph_1", "Essential PH-1 phone", WHOLE, "whole milliseconds", "adb-tflite"),
    "pixel3_ms": ("pixel3", "Google Pixel 3 phone", LUT_SUM, "0.1 microsecond", "adb-tflite"),
    "raspi4_ms": ("raspi4", "Raspberry Pi 4", LUT_SUM, "0.1 microsecond", "tflite"),
    "gold_6226_ms": ("gold_6226", "Intel Xeon Gold 6226 CPU", WHOLE, "1 microsecond", "tflite"),
}
OUTLIER_FACTOR = 20  # networks of one space on one device differ by a few times (FBNet: at most 7x), never 20x
PLACEHOLDERS = ("The source gives neither the runtime, thread count, repeat count nor spread: the "
                "whole-model rows carry runtime 'adb-tflite' for phones and 'tflite' otherwise, "
                "threads 1, repeats 1 and spread_ms 0 as placeholders required by the format.")


@dataclass
class PhoneTable:
    """The rows of the source CSV: architecture ids, their choices, and ms per device column."""

    path: Path
    arch_ids: list[int]
    choices: list[tuple[str, ...]]
    latency: dict[str, np.ndarray]  # device column -> ms per row


def read_phone_csv(path: str | Path, space_name: str = SPACE) -> PhoneTable:
    """Read and validate the source CSV; a bad row raises HwnasError naming the line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise HwnasError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HwnasError(f"{path}: cannot read ({exc})") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or header[:2] != ["arch_id", "ops"] or len(header) < 3:
        raise HwnasError(f"{path}, line 1: expected the header arch_id,ops,<device>_ms,...")
    devices = header[2:]
    for name in devices:
        if not name.endswith("_ms"):
            raise HwnasError(f"{path}, line 1: latency column {name!r} does not end in '_ms'")
        check_device_name(device_name(name), f"{path}, line 1, column {name!r}")
    names = [device_name(name) for name in devices]
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice:
        raise HwnasError(f"{path}, line 1: device {twice!r} has more than one latency column")
    positions = get_space(space_name).positions
    ids, choices, values = [], [], []
    seen: set[int] = set()
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        try:
            if len(row) != len(header):
                raise ValueError(f"expected {len(header)} columns, found {len(row)}")
            arch_id = _parse_id(row[0], seen)
            ops = tuple(row[1].split())
            if len(ops) != len(positions):
                raise ValueError(f"'ops' has {len(ops)} names, space {space_name} has {len(positions)} layers")
            for i, (pos, name) in enumerate(zip(positions, ops)):
                if name not in pos.names:
                    raise ValueError(f"'ops' layer {i} is {name!r}; allowed: {', '.join(pos.names)}")
            ms = [_parse_ms(name, cell) for name, cell in zip(devices, row[2:])]
        except ValueError as exc:
            raise HwnasError(f"{path}, line {line}: corrupted row: {exc}") from None
        ids.append(arch_id)
        choices.append(ops)
        values.append(ms)
    if not ids:
        raise HwnasError(f"{path}: no rows")
    matrix = np.asarray(values, dtype=np.float64)
    return PhoneTable(path, ids, choices, {name: matrix[:, j] for j, name in enumerate(devices)})


def _parse_id(cell: str, seen: set[int]) -> int:
    try:
        arch_id = int(cell)
    except ValueError:
        raise ValueError(f"'arch_id' must be an integer, got {cell!r}") from None
    if arch_id in seen:
        raise ValueError(f"duplicate arch_id {arch_id}")
    seen.add(arch_id)
    return arch_id


def _parse_ms(name: str, cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(f"{name!r} must be a number, got {cell!r}") from None
    if not math.isfinite(value) or not 0 < value <= MAX_MS:
        raise ValueError(f"{name!r} must be a number of ms in (0, {MAX_MS:g}], got {cell!r}")
    return value


def device_name(column: str) -> str:
    return DEVICES[column][0] if column in DEVICES else column[: -len("_ms")]


def device_description(column: str, source_file: str) -> dict:
    """The ``<device>.device.json`` content for one latency column."""
    if column in DEVICES:
        name, desc, how, resolution, runtime = DEVICES[column]
    else:
        name, desc, how, resolution, runtime = device_name(column), column, "not described", "unknown", "tflite"
    return {"name": name, "description": desc, "measured": how, "resolution": resolution,
            "source": SOURCE, "source_file": source_file, "source_column": column, "space": SPACE,
            "runtimes": {runtime: "unknown (not given by the source)"}, "placeholders": PLACEHOLDERS,
            "batch": 1}


def import_phone_csv(csv_path: str | Path, out_dir: str | Path, space_name: str = SPACE) -> list[Path]:
    """Write ``<device>-models.csv`` and ``<device>.device.json`` per device column; return the paths."""
    table = read_phone_csv(csv_path, space_name)
    out = Path(out_dir)
    source = Path(csv_path).name
    written = []
    for column, ms in table.latency.items():
        name = device_name(column)
        runtime = DEVICES.get(column, (None,) * 5)[4] or "tflite"
        rows = [ModelRow(f"{source}#{arch_id}", space_name, choices, runtime, "fp32", 1, float(v), 0.0, 1)
                for arch_id, choices, v in zip(table.arch_ids, table.choices, ms)]
        models = out / f"{name}-models.csv"
        _write_rows(models, rows)
        device = out / f"{name}.device.json"
        write_device(device, device_description(column, source))
        written += [models, device]
    return written


def _write_rows(path: Path, rows: list[ModelRow]) -> None:
    """All rows at once, atomically (a re-import replaces the file)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MODEL_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row.to_record())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(buf.getvalue())
        os.replace(tmp, path)
    except OSError as exc:
        raise HwnasError(f"{path}: cannot write ({exc.strerror or exc})") from None


def read_whole_model_data(path: str | Path, space_name: str = SPACE) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """``(choices per row, ms per row)`` of a ``<device>-models.csv`` file, rows of one space in file order."""
    rows = [r for r in read_model_rows(path) if r.space == space_name]
    if not rows:
        raise HwnasError(f"{path}: no whole-model rows of space {space_name}")
    ms = np.array([r.median_ms for r in rows])
    median = float(np.median(ms))
    for row, value in zip(rows, ms):
        if not median / OUTLIER_FACTOR <= value <= median * OUTLIER_FACTOR:
            raise HwnasError(f"{path}: row {row.arch_file} has {value:g} ms, more than {OUTLIER_FACTOR}x away from "
                             f"the median {median:g} ms of its {len(rows)} rows: not a latency of this device and "
                             "space; remove or re-measure it")
    return [r.choices for r in rows], ms


# -- evaluation -----------------------------------------------------------------------------
def per_layer_baseline(space_name: str, train_choices, train_y, test_choices) -> np.ndarray:
    """Baseline (a): an additive per-layer LUT, one entry per (position, candidate), ordinary least squares."""
    positions = get_space(space_name).positions

    def design(choices_list):
        X = [[1.0] + [1.0 if name == c else 0.0 for pos, c in zip(positions, ch) for name in pos.names]
             for ch in choices_list]
        return np.asarray(X)

    beta = np.linalg.lstsq(design(train_choices), np.asarray(train_y), rcond=None)[0]
    return design(test_choices) @ beta


def flops_linear(space_name: str, train_choices, train_y, test_choices) -> np.ndarray:
    """Baseline (b): ms = a + b * FLOPs (multiply-adds), least squares."""
    from hwnas.costs import total_cost

    space = get_space(space_name)
    flops = lambda cs: np.array([total_cost(space.ops_for(list(c))).flops for c in cs], dtype=np.float64)
    A = np.stack([np.ones(len(train_y)), flops(train_choices) / 1e6], axis=1)
    coef = np.linalg.lstsq(A, np.asarray(train_y), rcond=None)[0]
    return coef[0] + coef[1] * flops(test_choices) / 1e6


def describe_settings(settings: dict) -> str:
    """The selected whole-model settings in words, e.g. 'huber loss, drift blocks off, correction position
    (alpha 1000)'."""
    s = settings
    correction = "+".join(s["features"]) or "none"
    if s["features"]:
        correction += f" (alpha {s['alpha']:g})"
    return (f"{'huber' if s['robust'] else 'squared'} loss, drift blocks {s['drift_block'] or 'off'}, "
            f"correction {correction}")


def fit_phone_predictor(choices, y, device: dict, test_from: int | None = None, space_name: str = SPACE,
                        progress=None):
    """Fit a whole-model predictor; with ``test_from``, first evaluate on rows >= test_from (fit on the rest).

    Returns ``(predictor fitted on all rows, evaluation dict or None)``; the
    evaluation (baseline, FLOPs-linear and this predictor on the held-out later
    rows) is also stored in the predictor's ``meta``.
    """
    from hwnas.predictors.whole_model import fit_whole_model, metrics

    space = get_space(space_name)
    y = np.asarray(y, dtype=np.float64)
    evaluation = None
    if test_from is not None:
        if not 100 <= test_from <= len(y) - 10:
            raise HwnasError(f"test_from={test_from}: needs at least 100 training and 10 test rows of {len(y)}")
        tr_c, te_c, tr_y, te_y = choices[:test_from], choices[test_from:], y[:test_from], y[test_from:]
        held = fit_whole_model(space, tr_c, tr_y, device, progress=progress)
        preds = {"baseline_per_layer_lut": per_layer_baseline(space_name, tr_c, tr_y, te_c),
                 "flops_linear": flops_linear(space_name, tr_c, tr_y, te_c),
                 "whole_model": held.predict_many_choices(te_c)}
        evaluation = {"split": f"train rows [0, {test_from}), test rows [{test_from}, {len(y)}) in arch_id order",
                      "settings": held.meta["settings"],
                      "metrics": {name: metrics(te_y, p) for name, p in preds.items()}}
        evaluation["_predictions"] = preds  # for plots; dropped before saving
    predictor = fit_whole_model(space, choices, y, device, progress=progress)
    if evaluation is not None:
        predictor.meta["evaluation"] = {k: v for k, v in evaluation.items() if not k.startswith("_")}
    return predictor, evaluation
