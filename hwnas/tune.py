"""Hyperparameter random search: learning rate x weight decay for a fixed architecture.

The grid is the product of a learning-rate list and a weight-decay list (both
{1e-4, 1e-3, 1e-2, 1e-1, 1, 10} by default, the example of the seeds). The
trials are the grid points in a random order fixed by the seed; ``trials`` of
them are trained (the whole grid when ``trials`` is None), each with
:func:`hwnas.train.train_model` from the same initialisation and data order.

Every finished trial is one JSON line of ``<out>/trials.jsonl`` (lr,
weight_decay, val_acc, val_loss, train_loss, seconds); ``tune.json`` holds the
settings. Resuming re-reads the log, checks the settings and trains only the
trials not logged yet, in the same order. ``tune.png`` shows validation
accuracy over the grid. A trial that diverges (non-finite loss, as lr = 10
will) is kept with ``diverged: true`` and its accuracy.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hwnas.progress import progress_bar

from hwnas.arch import Architecture
from hwnas.data import Splits
from hwnas.errors import HwnasError
from hwnas.jsonfile import read_json, read_jsonl

DEFAULT_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
TRIALS = "trials.jsonl"
SETTINGS = "tune.json"


def parse_grid(text: str, name: str, allow_zero: bool = False) -> list[float]:
    """A comma-separated list of numbers (``1e-3,0.01,0.1``): positive (or >= 0), finite, no repeats."""
    items = [t.strip() for t in str(text).split(",")]
    if not items or any(not t for t in items):
        raise HwnasError(f"{name} grid {text!r}: expected comma-separated numbers, e.g. 1e-3,1e-2,1e-1")
    values = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise HwnasError(f"{name} grid {text!r}: {item!r} is not a number") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            bound = "non-negative" if allow_zero else "positive"
            raise HwnasError(f"{name} grid {text!r}: {item} is not a {bound} finite number")
        if value in values:
            raise HwnasError(f"{name} grid {text!r}: {item} appears twice")
        values.append(value)
    return values


@dataclass
class TuneConfig:
    lrs: list[float] = field(default_factory=lambda: list(DEFAULT_GRID))
    weight_decays: list[float] = field(default_factory=lambda: list(DEFAULT_GRID))
    trials: int | None = None  # None: every grid point
    epochs: int = 2
    max_steps: int | None = 20
    batch_size: int = 64
    optimizer: str = "sgd"
    seed: int = 0

    def check(self) -> None:
        if not self.lrs or not self.weight_decays:
            raise HwnasError("the learning-rate and weight-decay grids must not be empty")
        size = len(self.lrs) * len(self.weight_decays)
        if self.trials is not None and not 1 <= self.trials <= size:
            raise HwnasError(f"trials must be between 1 and the grid size {size}, got {self.trials}")


def trial_order(cfg: TuneConfig) -> list[tuple[float, float]]:
    """The (lr, weight decay) points to train, in the seed's random order."""
    grid = [(lr, wd) for lr in cfg.lrs for wd in cfg.weight_decays]
    random.Random(cfg.seed).shuffle(grid)
    return grid[: cfg.trials or len(grid)]


def _check_trial(record: dict) -> None:
    missing = [k for k in ("trial", "lr", "weight_decay", "val_acc") if k not in record]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")


def read_trials(path: Path) -> list[dict]:
    """The logged trials (a torn last line of an interrupted write is dropped)."""
    return read_jsonl(path, "a trial record", _check_trial)


def best_trial(trials: list[dict]) -> dict | None:
    """Highest validation accuracy; ties broken by lower validation loss, then the earlier trial."""
    if not trials:
        return None
    loss = lambda t: t["val_loss"] if t.get("val_loss") is not None else float("inf")  # noqa: E731
    return max(trials, key=lambda t: (t["val_acc"], -loss(t), -t["trial"]))


def _finite(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


def run_tune(arch: Architecture, splits: Splits, cfg: TuneConfig, out_dir: str | Path, resume: bool = False,
             progress: bool = True) -> list[dict]:
    """Train the trials not done yet; returns all trial records (in trial order)."""
    from hwnas.train import train_model

    cfg.check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"arch": arch.to_dict(), "dataset": splits.name, **asdict(cfg)}
    log, settings_path = out / TRIALS, out / SETTINGS
    if resume and settings_path.exists():
        saved = read_json(settings_path, "tuning settings")
        for key in settings:
            if key != "trials" and saved.get(key) != settings[key]:
                raise HwnasError(f"{settings_path}: the tuning run was started with {key}={saved.get(key)!r}, "
                                 f"this one has {key}={settings[key]!r}; use the same settings or another --out")
    elif not resume:
        log.unlink(missing_ok=True)
    settings_path.write_text(json.dumps(settings, indent=2) + "\n")
    order = trial_order(cfg)
    done = read_trials(log)
    for i, row in enumerate(done):
        if i >= len(order) or (row["lr"], row["weight_decay"]) != order[i]:
            raise HwnasError(f"{log}: trial {i} does not match the trial order of these settings")
    bar = progress_bar(total=len(order), initial=min(len(done), len(order)), desc="tune", unit="trial",
                       enabled=progress)
    for i in range(len(done), len(order)):
        lr, wd = order[i]
        t0 = time.time()
        result = train_model(arch, splits, epochs=cfg.epochs, max_steps=cfg.max_steps, lr=lr, weight_decay=wd,
                             batch_size=cfg.batch_size, optimizer=cfg.optimizer, seed=cfg.seed, progress=False)
        row = {"trial": i, "lr": lr, "weight_decay": wd, "val_acc": round(float(result.val_acc), 6),
               "val_loss": _finite(result.val_loss), "train_loss": _finite(result.train_loss),
               "diverged": not (math.isfinite(result.train_loss) and math.isfinite(result.val_loss)),
               "seconds": round(time.time() - t0, 2)}
        with open(log, "a") as f:
            f.write(json.dumps(row) + "\n")
        done.append(row)
        bar.update(1)
        best = best_trial(done)
        bar.set_postfix(best_acc=f"{best['val_acc']:.4f}", lr=f"{best['lr']:g}", wd=f"{best['weight_decay']:g}")
    bar.close()
    plot_grid(done, cfg, out / "tune.png")
    return done


def plot_grid(trials: list[dict], cfg: TuneConfig, path: Path) -> Path:
    """Heat map of validation accuracy over (weight decay, lr); untried points blank."""
    import numpy as np

    from hwnas.plots import pyplot, save_figure

    plt = pyplot()

    acc = np.full((len(cfg.lrs), len(cfg.weight_decays)), np.nan)
    for t in trials:
        acc[cfg.lrs.index(t["lr"]), cfg.weight_decays.index(t["weight_decay"])] = t["val_acc"]
    fig, ax = plt.subplots(figsize=(1.2 * len(cfg.weight_decays) + 2, 0.8 * len(cfg.lrs) + 1.5))
    im = ax.imshow(acc, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(cfg.weight_decays)), [f"{v:g}" for v in cfg.weight_decays])
    ax.set_yticks(range(len(cfg.lrs)), [f"{v:g}" for v in cfg.lrs])
    ax.set_xlabel("weight decay")
    ax.set_ylabel("learning rate")
    for (r, c), v in np.ndenumerate(acc):
        if not np.isnan(v):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=8, color="w" if v < 0.6 else "k")
    fig.colorbar(im, ax=ax, label="validation accuracy")
    ax.set_title(f"{len(trials)} of {acc.size} grid points")
    return save_figure(fig, path)
