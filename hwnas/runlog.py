"""Run-folder logs of a search or training run, and what a resumed run checks in its folder.

* metrics log (JSONL + CSV), optional TensorBoard, plots;
* :func:`check_inputs`: the SHA-256 of the predictor file and a fingerprint of
  the dataset's content are recorded in ``inputs.json`` when a run starts; a
  resume with other content (the same path, other bytes) is refused;
* :func:`resumed_rows`: the metrics rows of the epochs the checkpoint has
  finished, one per epoch (a repeated row is dropped); epochs whose row the
  log lost (a cut or deleted file) are named in a warning.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

from hwnas import jsonfile
from hwnas.data import dataset_fingerprint
from hwnas.errors import HwnasError
from hwnas.jsonfile import read_json

METRICS = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
PROBS = "probs.jsonl"


def read_jsonl(path: Path, max_epoch: int | None = None) -> list[dict]:
    """Rows up to ``max_epoch`` (shared reader: a torn last line of an interrupted write is dropped)."""
    rows = jsonfile.read_jsonl(path, "a log row")
    return [r for r in rows if max_epoch is None or r.get("epoch", 0) <= max_epoch]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def write_csv(path: Path, rows: list[dict]) -> None:
    """The scalar columns of the metrics log as CSV."""
    if not rows:
        return
    columns = [k for k in rows[-1] if not isinstance(rows[-1][k], (list, dict))]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


class TensorBoard:
    """Scalars to TensorBoard when the ``tensorboard`` package is installed; otherwise nothing.

    Used by ``hwnas search`` and ``hwnas train`` (``pip install -e .[tensorboard]``). TensorBoard's
    writer imports TensorFlow whenever it is installed (it is, for the TFLite export), and TensorFlow
    must stay out of the main process: registering ``tensorboard.compat.notf`` (TensorBoard's own
    "no TensorFlow" switch) makes it write through its built-in stub instead.
    """

    def __init__(self, log_dir: Path):
        self.writer = None
        if importlib.util.find_spec("tensorboard") is not None:
            import sys
            import types

            sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(log_dir))

    def log(self, row: dict, step: int) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if isinstance(value, (int, float)) and key != "epoch":
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def plot_run(out: Path, history: list[dict], probs: list[dict], names: list[list[str]],
             titles: list[str] | None = None) -> list[Path]:
    """``probs.png`` (path probabilities per position over steps) and ``curves.png`` (loss/acc/latency)."""
    from hwnas.plots import pyplot, save_figure

    plt = pyplot()

    written = []
    if probs:
        n = len(names)
        cols = min(3, n)
        rows = (n + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False, sharex=True)
        steps = [r["step"] for r in probs]
        for i, cand in enumerate(names):
            ax = axes[i // cols][i % cols]
            for j, name in enumerate(cand):
                ax.plot(steps, [r["probs"][i][j] for r in probs], label=name)
            ax.set_title(titles[i] if titles else f"position {i}", fontsize=9)
            ax.set_ylim(0, 1)
        for k in range(n, rows * cols):
            axes[k // cols][k % cols].axis("off")
        widest = max(range(n), key=lambda i: len(names[i]))  # its legend names every candidate
        axes[widest // cols][widest % cols].legend(fontsize=6, ncol=2)
        fig.supxlabel("training step")
        fig.supylabel("path probability")
        written.append(save_figure(fig, out / "probs.png", dpi=90))
    if history:
        epochs = [r["epoch"] for r in history]
        panels = [("loss", ["train_loss", "arch_loss"]), ("accuracy", ["train_acc", "val_acc"]),
                  ("latency (ms)", ["exp_latency_ms", "derived_latency_ms", "budget_ms"])]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
        for ax, (title, keys) in zip(axes, panels):
            for key in keys:
                values = [r.get(key) for r in history]
                if any(v is not None for v in values):
                    ax.plot(epochs, [float("nan") if v is None else v for v in values], marker="o", label=key)
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7)
        written.append(save_figure(fig, out / "curves.png", dpi=90))
    return written


INPUTS = "inputs.json"


def check_inputs(out: Path, predictor: str | None, dataset: str, resume: bool, write: bool = True) -> None:
    """Refuse to resume the run in ``out`` when its predictor's or dataset's content changed since it started;
    record the content otherwise (``write``: only the process that writes the run folder). ``predictor``: the
    loaded predictor's :func:`hwnas.predictors.content_fingerprint`."""
    hashes = {"predictor": predictor, "dataset": dataset_fingerprint(dataset)}
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
    for row in jsonfile.read_jsonl(path, "a metrics row"):
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
