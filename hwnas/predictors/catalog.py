"""What predictor files a folder holds: device, target, space, type and the accuracy each file records.

Only the JSON headers are read (no regressor is loaded). The accuracy is the
one the file itself stores about whole networks:

* ``lut`` / ``regressor``: the cross-validated score of the calibration form
  ``hwnas fit`` kept (``overhead.cv[overhead.form]``: repeated 5-fold
  cross-validation over the whole models it was calibrated on);
* ``whole_model``: the held-out rows of ``meta.evaluation`` (later rows, never
  fitted).

Files that record neither show ``-``; the held-out half of ``hwnas fit``'s
whole models is judged by ``benchmarks/predictor_accuracy.py``, not stored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from hwnas.errors import HwnasError
from hwnas.predictors import read_header


@dataclass
class Accuracy:
    within5: float  # percent of networks within +-5%
    within10: float
    mape: float | None  # percent, when recorded
    networks: int | None
    how: str  # "5-fold CV" | "held-out"

    def text(self) -> str:
        mape = f", MAPE {self.mape:.1f}%" if self.mape is not None else ""
        n = f", {self.networks} networks" if self.networks else ""
        return f"{self.how}{n}: {self.within5:.0f}% within 5%, {self.within10:.0f}% within 10%{mape}"


@dataclass
class Entry:
    file: str
    device: str
    runtime: str
    dtype: str
    threads: int | None
    space: str
    type: str
    accuracy: Accuracy | None
    refused: str | None = None  # why loading this file would be refused (e.g. its model file was changed)

    def to_dict(self) -> dict:
        return asdict(self)


def recorded_accuracy(data: dict) -> Accuracy | None:
    """The whole-network accuracy a predictor file records (see the module docstring), or None."""
    overhead = data.get("overhead")
    if isinstance(overhead, dict) and isinstance(overhead.get("cv"), dict):
        score = overhead["cv"].get(overhead.get("form"))
        if isinstance(score, dict) and {"within5", "within10"} <= set(score):
            models = overhead.get("models")
            return Accuracy(float(score["within5"]), float(score["within10"]), score.get("mape"),
                            len(models) if isinstance(models, list) else None, "5-fold CV")
    meta = data.get("meta")
    evaluation = meta.get("evaluation") if isinstance(meta, dict) else None
    metrics = evaluation.get("metrics", {}).get("whole_model") if isinstance(evaluation, dict) else None
    if isinstance(metrics, dict) and {"within_5", "within_10"} <= set(metrics):
        return Accuracy(100 * float(metrics["within_5"]), 100 * float(metrics["within_10"]), None,
                        metrics.get("rows"), "held-out")
    return None


def refusal(data: dict, path: Path) -> str | None:
    """Why loading the predictor file ``path`` would be refused, as far as its files tell without loading it."""
    if data.get("type") != "regressor":
        return None
    from hwnas.predictors.regressor import check_model_file

    try:
        check_model_file(data, path)
    except HwnasError as exc:
        return str(exc)
    return None


def _kernel_predictor(path: Path) -> dict | None:
    """The header of a kernel predictor file (:mod:`hwnas.kernels.predictor`, type ``kernels``), else None."""
    from hwnas.jsonfile import read_json
    from hwnas.kernels.predictor import FORMAT

    try:
        data = read_json(path, "predictor file")
    except HwnasError:
        return None
    return {**data, "type": "kernels"} if isinstance(data, dict) and data.get("format") == FORMAT else None


def list_predictors(folder: str | Path) -> tuple[list[Entry], list[str]]:
    """Every predictor file under ``folder`` (recursively) and the .json files that are not predictors."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HwnasError(f"{folder}: no such folder")
    entries, skipped = [], []
    for path in sorted(folder.rglob("*.json")):
        try:
            data = read_header(path)
        except HwnasError as exc:
            data = _kernel_predictor(path)
            if data is None:
                skipped.append(str(exc))
                continue
        device = data.get("device") if isinstance(data.get("device"), dict) else {}
        entries.append(Entry(str(path.relative_to(folder)), str(device.get("name", "?")), str(data.get("runtime", "?")),
                             str(data.get("dtype", "?")), data.get("threads"), str(data.get("space") or "any"),
                             str(data.get("type", "?")), recorded_accuracy(data), refusal(data, path)))
    return entries, skipped
