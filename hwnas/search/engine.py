"""The search engine under every gradient search: run folder, resume, checkpoints, loaders, evaluation, schedule.

An algorithm (:mod:`hwnas.search.loop`, :mod:`hwnas.search.entangled_loop`, :mod:`hwnas.cells.search`) builds
its supernet and optimizers, opens one :class:`Run` and keeps only its own steps::

    run = Run(out, config, resume_keys, resume=...)
    start = run.open(restore=lambda state: ...)      # resume: checkpoint checked against config, logs cut to it
    for epoch in range(start, epochs):
        ...  run.check_finite({...}, epoch, step);  run.log_probs(row)
        if run.end_epoch(epoch, row, state, line, stop_after):   # log row, checkpoint, stop_after
            break
    run.close()

Run folder: ``config.json`` (the settings, with what the run learnt before it started, e.g. the session
level), the metrics log (JSONL; ``metrics.csv`` and ``tb/`` beside it), the probabilities log and the checkpoint:
``{"epoch", "config", **state}`` saved with ``torch.save`` (written to a temporary file, then renamed) and read
back with ``weights_only=True``. ``resume`` continues exactly when every key of ``resume_keys`` is unchanged,
and refuses otherwise with a one-line error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from hwnas.errors import HwnasError
from hwnas.runlog import (METRICS, METRICS_CSV, PROBS, TensorBoard, append_jsonl, check_inputs, read_jsonl,
                          resumed_rows, write_csv, write_jsonl)
from hwnas.search import distributed as D
from hwnas.train import evaluate as evaluate_model

CHECKPOINT = "checkpoint.pt"
PROBS_EVERY = 5  # record architecture probabilities every this many steps


def loader(dataset, batch_size: int, seed: int | None, epoch: int = 0, rank: int = 0, size: int = 1,
           workers: int = 0, drop_last: bool | None = None) -> DataLoader:
    """Shuffled batches of ``dataset`` for one epoch: the order is fixed by (seed, epoch), the same on every
    rank (``seed=None``: drawn from torch's global generator, as ``shuffle=True``); ``size > 1`` gives each rank
    its share. ``drop_last`` defaults to dropping a short last batch when there is more than one batch."""
    if drop_last is None:
        drop_last = len(dataset) > batch_size * size
    if size > 1:
        sampler = DistributedSampler(dataset, num_replicas=size, rank=rank, shuffle=True, seed=seed or 0,
                                     drop_last=True)
        sampler.set_epoch(epoch)
    else:
        generator = None if seed is None else torch.Generator().manual_seed(seed * 1000 + epoch)
        sampler = RandomSampler(dataset, generator=generator)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=workers)


def cycle(batches):
    """Endless batches (a new pass whenever one ends)."""
    while True:
        yield from batches


@torch.no_grad()
def evaluate(net, dataset, device="cpu", batch_size: int = 256) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``net`` as it runs now (its child or its mixture) on ``dataset``
    (:func:`hwnas.train.evaluate`), then back in training mode."""
    try:
        return evaluate_model(net, dataset, batch_size=batch_size, device=device)
    finally:
        net.train()


def temperature(tau_start: float, tau_end: float, epochs: int, warmup_epochs: int, epoch: int) -> float:
    """Gumbel-softmax temperature of ``epoch``: geometric from ``tau_start`` (until the warm-up ends) to
    ``tau_end`` (the last epoch)."""
    span = max(1, epochs - warmup_epochs - 1)
    progress = min(1.0, max(0, epoch - warmup_epochs) / span)
    return tau_start * (tau_end / tau_start) ** progress


class Run:
    """One search's run folder: resume, logs, checkpoints (see the module docstring).

    ``main``: this process writes (rank 0 of a distributed run); ``metrics``/``probs``: the log file names;
    ``progress``: print the per-epoch line; ``inputs``: (predictor file or None, dataset) whose content a resume
    must find unchanged (:func:`hwnas.runlog.check_inputs`).
    """

    def __init__(self, out: Path, config: dict, resume_keys, resume: bool = False, main: bool = True,
                 progress: bool = True, checkpoint: str = CHECKPOINT, metrics: str = METRICS, probs: str = PROBS,
                 inputs: tuple | None = None, defaults: dict | None = None):
        self.out, self.config, self.resume_keys, self.inputs = Path(out), config, tuple(resume_keys), inputs
        self.defaults = defaults or {}  # resume keys an older checkpoint lacks, and the value it ran with
        self.resume, self.main, self.progress = resume, main, progress
        self.ckpt, self.metrics, self.probs = self.out / checkpoint, self.out / metrics, self.out / probs
        self.start, self.history, self.probs_log, self.tb = 0, [], [], None

    # -- start and resume ------------------------------------------------------------
    def open(self, restore: Callable[[dict], None]) -> int:
        """Prepare the folder; with ``resume`` and a checkpoint, check it, hand its state to ``restore`` and cut
        the logs to its epoch. Returns the first epoch to run."""
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
        if self.inputs is not None:
            check_inputs(self.out, *self.inputs, self.resume and self.ckpt.exists(), write=self.main)
        if self.resume and self.ckpt.exists():
            state = self.load_checkpoint()
            restore(state)
            self.start = int(state["epoch"])
            if self.main:
                self.history = resumed_rows(self.metrics, self.start)
                self.probs_log = read_jsonl(self.probs, self.start)
                print(f"resuming from {self.ckpt} after epoch {self.start}/{self.config.get('epochs')}")
        elif self.resume and self.main:
            print(f"no checkpoint in {self.out}; starting a new run")
        if self.main:
            write_jsonl(self.metrics, self.history)
            write_jsonl(self.probs, self.probs_log)
            (self.out / "config.json").write_text(json.dumps(self.config, indent=2) + "\n")
            if not self.resume:
                self.ckpt.unlink(missing_ok=True)
            self.tb = TensorBoard(self.out / "tb")
        return self.start

    def load_checkpoint(self) -> dict:
        """The checkpoint's state, refused (one line) when unreadable or written with other settings."""
        try:
            state = torch.load(self.ckpt, map_location="cpu", weights_only=True)
            saved = json.loads(state["config"])
            int(state["epoch"])
        except Exception as exc:  # truncated file, foreign pickle, missing keys
            raise HwnasError(f"{self.ckpt}: not a readable hwnas search checkpoint ({type(exc).__name__})") from None
        for key in self.resume_keys:
            before = saved.get(key, self.defaults.get(key))
            if before != self.config.get(key):
                raise HwnasError(f"{self.ckpt}: checkpoint was written with {key}={before!r}, this run has "
                                 f"{key}={self.config.get(key)!r}; resume with the same settings")
        return state

    def save_checkpoint(self, epoch: int, state: dict) -> None:
        full = {"epoch": epoch, **state, "config": json.dumps(self.config)}
        tmp = self.ckpt.with_name(self.ckpt.name + ".tmp")
        torch.save(full, tmp)
        tmp.replace(self.ckpt)

    # -- during an epoch ------------------------------------------------------------------
    def last_epoch(self) -> int:
        return self.history[-1]["epoch"] if self.history else self.start

    def check_finite(self, values: dict[str, float], epoch: int, step: int) -> None:
        """Stop with a one-line error when a loss is NaN or infinite; the last checkpoint stays as it was."""
        bad = [f"{name} {v}" for name, v in values.items() if not math.isfinite(v)]
        if bad:
            raise HwnasError(f"non-finite {' and '.join(bad)} at epoch {epoch + 1}, step {step + 1}; stopped. The last "
                             f"good checkpoint ({self.ckpt}, after epoch {self.last_epoch()}) is kept; lower the "
                             "learning rates (lr_w / lr_alpha) or the resource weight and resume")

    def log_probs(self, row: dict) -> None:
        self.probs_log.append(row)
        if self.main:
            append_jsonl(self.probs, row)

    # -- end of an epoch -----------------------------------------------------------------
    def end_epoch(self, epoch: int, row: dict, state: dict, line: str | None = None,
                  stop_after: int | None = None) -> bool:
        """Log ``row``, save the checkpoint (``state``: what the algorithm needs to continue), print ``line``;
        True when the run stops here (``stop_after`` epochs done; continue with resume)."""
        if self.main:
            self.history.append(row)
            append_jsonl(self.metrics, row)
            write_csv(self.out / METRICS_CSV, self.history)
            self.tb.log(row, epoch + 1)
            self.save_checkpoint(epoch + 1, state)
            if self.progress and line:
                print(line)
        D.barrier()
        epochs = self.config.get("epochs")
        if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < epochs:
            if self.main:
                print(f"stopping after epoch {epoch + 1} as asked; continue with resume")
            return True
        return False

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def chain_run(cfg, level: float, main: bool, predictor) -> Run:
    """The run folder of a chain search (separate or entangled supernet): its config with the session level,
    the resume keys, and the predictor's and dataset's content, which a resume must find unchanged."""
    from hwnas.predictors import content_fingerprint
    from hwnas.search.config import RESUME_DEFAULTS, RESUME_KEYS

    return Run(cfg.out_dir, dict(cfg.to_dict(), latency_level=level), RESUME_KEYS, cfg.resume, main, cfg.progress,
               inputs=(content_fingerprint(predictor), cfg.dataset), defaults=RESUME_DEFAULTS)


def restore_training(state: dict, net, opt_w, opt_a) -> None:
    """Load a checkpoint's supernet weights and both optimizers' states (what every search saves)."""
    net.load_state_dict(state["model"])
    opt_w.load_state_dict(state["opt_w"])
    opt_a.load_state_dict(state["opt_a"])

