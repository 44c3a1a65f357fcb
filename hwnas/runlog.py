"""What a resumed run checks in its folder: that its inputs' content is unchanged, and that its per-epoch
metrics log agrees with its checkpoint.

* :func:`check_inputs`: the SHA-256 of the predictor file and a fingerprint of
  the dataset's content are recorded in ``inputs.json`` when a run starts; a
  resume with other content (the same path, other bytes) is refused.
* :func:`resumed_rows`: the metrics rows of the epochs the checkpoint has
  finished, one per epoch (a repeated row is dropped); epochs whose row the
  log lost (a cut or deleted file) are named in a warning.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hwnas.data import dataset_fingerprint, file_sha256
from hwnas.errors import HwnasError
from hwnas.jsonfile import read_json, read_jsonl

INPUTS = "inputs.json"


def input_hashes(predictor: str | Path | None, dataset: str) -> dict:
    """The content fingerprints of a run's inputs: its predictor file (None: the analytic proxy; a table's
    fallback regressor, whose own file pins its model file's SHA-256, included) and dataset."""
    from hwnas.predictors import predictor_file, read_header

    digest = None
    if predictor is not None:
        path = predictor_file(predictor)
        fallback = read_header(path).get("fallback")
        files = [path] + ([path.parent / fallback] if isinstance(fallback, str) else [])
        digest = "+".join(file_sha256(f) for f in files if f.exists())
    return {"predictor": digest, "dataset": dataset_fingerprint(dataset)}


def check_inputs(out: Path, predictor: str | Path | None, dataset: str, resume: bool, write: bool = True) -> None:
    """Refuse to resume the run in ``out`` when its predictor's or dataset's content changed since it started;
    record the content otherwise (``write``: only the process that writes the run folder)."""
    hashes = input_hashes(predictor, dataset)
    path = out / INPUTS
    if resume and path.exists():
        saved = read_json(path, "record of the run's inputs")
        for key, value in hashes.items():
            before = saved.get(key) if isinstance(saved, dict) else None
            if before != value:
                raise HwnasError(f"{path}: the run started with another {key} content (fingerprint "
                                 f"{str(before)[:12]}, now {str(value)[:12]}); resume with the same {key} or "
                                 "use another --out")
        return
    if write:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(hashes, indent=2) + "\n")


def resumed_rows(path: Path, finished: int) -> list[dict]:
    """The rows of ``path`` (a per-epoch metrics log) for epochs 1..``finished``, one per epoch.

    A row repeating an epoch is dropped; epochs without a row (the log was cut
    short or deleted after the checkpoint was written) are named in a warning on
    stderr: their rows are lost, the run goes on from the checkpoint.
    """
    rows, seen, repeated = [], set(), []
    for row in read_jsonl(path, "a metrics row"):
        epoch = row.get("epoch", 0)
        if not isinstance(epoch, int) or epoch > finished:
            continue
        if epoch in seen:
            repeated.append(epoch)
            continue
        seen.add(epoch)
        rows.append(row)
    if repeated:
        _warn(f"{path}: dropped {len(repeated)} repeated row(s) of epoch(s) {_epochs(repeated)}")
    lost = [e for e in range(1, finished + 1) if e not in seen]
    if lost:
        why = "is missing" if not path.exists() else "has no row"
        _warn(f"{path} {why} for epoch(s) {_epochs(lost)} that the checkpoint has finished: those rows are lost; "
              f"continuing after epoch {finished}")
    return rows


def _epochs(epochs: list[int]) -> str:
    return f"{epochs[0]}-{epochs[-1]}" if len(epochs) > 2 else ", ".join(map(str, epochs))


def _warn(message: str) -> None:
    print(f"hwnas: warning: {message}", file=sys.stderr)
