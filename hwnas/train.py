"""Train a standalone network with a standard recipe, resumably.

Recipe: SGD with Nesterov momentum (or AdamW), a per-step cosine learning-rate
schedule with a short linear warm-up, label smoothing, and the dataset's own
augmentation (``hwnas.data``). After every epoch the model is evaluated on the
validation split, one JSON line is appended to ``metrics.jsonl``, and a
checkpoint (model + optimizer state, safetensors) is written, so an interrupted
run continues with ``resume=True`` from the last finished epoch. The final
weights go to ``weights.safetensors``; with the ``tensorboard`` extra installed,
the same per-epoch scalars also go to ``tb/`` (TensorBoard).

``train_model(arch, splits, epochs=1, max_steps=20)`` doubles as a cheap
"proxy training" evaluator for sample-based search strategies.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from hwnas.progress import progress_bar

from hwnas.arch import Architecture
from hwnas.builder import build_model
from hwnas.data import Splits
from hwnas.errors import HwnasError
from hwnas.runlog import resumed_rows
from hwnas.weights import check_finite, load_weights, read_weights, save_weights

CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "weights.safetensors"
METRICS = "metrics.jsonl"
# Settings that must match for resume=True to continue a run: every one that changes the result.
RESUME_KEYS = ("epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "label_smoothing",
               "warmup_epochs", "max_steps", "seed")


@dataclass
class TrainConfig:
    """Hyper-parameters of the recipe (defaults suit the small CIFAR-sized spaces)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    optimizer: str = "sgd"  # sgd | adamw
    momentum: float = 0.9
    weight_decay: float = 4e-5
    label_smoothing: float = 0.1
    warmup_epochs: float = 0.0
    max_steps: int | None = None  # optimizer steps per epoch (None: the whole training split)
    seed: int = 0
    num_workers: int = 0

    def check(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise HwnasError(f"epochs must be a positive integer, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise HwnasError(f"batch size must be a positive integer, got {self.batch_size!r}")
        if not 0 < self.lr < math.inf:
            raise HwnasError(f"learning rate must be a positive finite number, got {self.lr!r}")
        if self.optimizer not in ("sgd", "adamw"):
            raise HwnasError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if not 0 <= self.label_smoothing < 1:
            raise HwnasError(f"label smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise HwnasError(f"max_steps must be positive, got {self.max_steps!r}")
        if not 0 <= self.weight_decay < math.inf:
            raise HwnasError(f"weight decay must be a finite number >= 0, got {self.weight_decay!r}")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise HwnasError(f"data loader workers must be 0 or more, got {self.num_workers!r}")


@dataclass
class TrainResult:
    model: nn.Module
    val_acc: float
    val_loss: float
    train_loss: float
    epochs: int
    history: list[dict] = field(default_factory=list)
    weights_path: Path | None = None


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@torch.no_grad()
@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 256, num_workers: int = 0,
             device: str | torch.device = "cpu") -> tuple[float, float]:
    """(top-1 accuracy, mean cross-entropy) of ``model`` (left in eval mode) on ``dataset``."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    correct, loss_sum, n = 0, 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        n += len(y)
    if n == 0:
        raise HwnasError("the validation split is empty")
    return correct / n, loss_sum / n


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay to zero at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """No weight decay on BN parameters and biases (1-D tensors)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


# -- starting from a supernet's shared weights ----------------------------------------
def weights_from_supernet(supernet: nn.Module, arch: Architecture) -> dict[str, torch.Tensor]:
    """The state dict of ``build_model(arch)`` taken from a supernet (``hwnas.supernet.Supernet``).

    The standalone network is stem blocks, the chosen candidate of every
    non-zero position, then head blocks, so module ``i`` of the sequential
    network is the ``i``-th of those supernet modules.
    """
    chosen = [op.candidates[op.names.index(c)] for op, c in zip(supernet.mixed, arch.choices) if c != "zero"]
    modules = list(supernet.stem) + chosen + list(supernet.head)
    return {f"{i}.{k}": v.detach().clone() for i, m in enumerate(modules) for k, v in m.state_dict().items()}


def supernet_weights(search_dir: str | Path, arch: Architecture) -> dict[str, torch.Tensor]:
    """The weights of ``arch`` from a search run folder's checkpoint (loaded with weights_only=True): separate or
    weight-entangled supernet."""
    from hwnas.supernet import Supernet

    path = Path(search_dir) / "checkpoint.pt"
    if not path.is_file():
        raise HwnasError(f"{path}: no search checkpoint to take supernet weights from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("supernet") == "entangled":  # shared weights: the child's crops and slices
            from hwnas.children import child_of
            from hwnas.supernet.entangled import EntangledSupernet

            net = EntangledSupernet(arch.space)
            net.load_state_dict(state["model"])
            return net.extract(child_of(arch.space, arch), arch).state_dict()
        net = Supernet(arch.space)
        net.load_state_dict(state["model"])
    except HwnasError:
        raise
    except Exception as exc:  # unpickling, missing keys, shape mismatches: all mean "not this supernet"
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HwnasError(f"{path}: not a supernet checkpoint of space {arch.space_name} ({msg})") from None
    return weights_from_supernet(net, arch)


# -- checkpoints: model + optimizer state as safetensors ----------------------------
def _save_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int, cfg: TrainConfig) -> None:
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    for idx, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"optim/{idx}/{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    save_weights(tensors, path, {"epoch": str(epoch), "config": asdict(cfg)})


def _load_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig) -> int:
    """Restore model and optimizer from ``path``; returns the number of finished epochs."""
    tensors, meta = read_weights(path)
    try:
        epoch = int(meta["epoch"])
        saved = json.loads(meta["config"])
    except (KeyError, ValueError):
        raise HwnasError(f"{path}: not an hwnas training checkpoint (metadata 'epoch'/'config' missing)") from None
    for key in RESUME_KEYS:
        if saved.get(key) != getattr(cfg, key):
            raise HwnasError(f"{path}: checkpoint was written with {key}={saved.get(key)!r}, "
                             f"this run has {key}={getattr(cfg, key)!r}; resume with the same settings")
    model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    expected = model.state_dict()
    if set(model_state) != set(expected) or any(model_state[k].shape != expected[k].shape for k in expected):
        raise HwnasError(f"{path}: checkpoint does not match this architecture")
    model.load_state_dict(model_state)
    opt_state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, idx, name = key.split("/", 2)
            opt_state.setdefault(int(idx), {})[name] = value
    sd = opt.state_dict()
    sd["state"] = opt_state
    opt.load_state_dict(sd)
    return epoch


# -- the loop -------------------------------------------------------------------
def train_model(arch_or_model: Architecture | nn.Module, splits: Splits, epochs: int | None = None, *,
                config: TrainConfig | None = None, out_dir: str | Path | None = None, resume: bool = False,
                init_weights: str | Path | dict | None = None, progress: bool = True, **overrides) -> TrainResult:
    """Train ``arch_or_model`` on ``splits.train``, evaluate on ``splits.val`` after each epoch.

    ``config`` fields may also be given as keyword arguments (``lr=0.1``).
    With ``out_dir``: metrics, per-epoch checkpoint and final weights are written
    there and ``resume=True`` continues from the checkpoint. ``init_weights``
    (a weights file, a search run folder, or a state dict, e.g. from
    :func:`weights_from_supernet`) starts from those weights (fine-tuning)
    instead of a random initialisation.
    """
    cfg = config or TrainConfig()
    if epochs is not None:
        overrides["epochs"] = epochs
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise TypeError(f"train_model() got an unknown setting {key!r}")
    cfg = TrainConfig(**{**asdict(cfg), **overrides})
    cfg.check()

    set_seed(cfg.seed)
    arch = arch_or_model if isinstance(arch_or_model, Architecture) else None
    model = build_model(arch) if arch is not None else arch_or_model
    if isinstance(init_weights, dict):
        check_finite(init_weights, "initial weights")
        model.load_state_dict(init_weights)
    elif init_weights is not None and Path(init_weights).is_dir():
        if arch is None:
            raise HwnasError("starting from a supernet needs an Architecture, not a module")
        state = supernet_weights(init_weights, arch)
        check_finite(state, init_weights)
        model.load_state_dict(state)
    elif init_weights is not None:
        load_weights(model, init_weights)
    model.to(memory_format=torch.channels_last)  # ~1.4x faster convolutions on a CPU; undone before returning
    opt = make_optimizer(model, cfg)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    n_train = len(splits.train)
    if n_train == 0:
        raise HwnasError("the training split is empty")
    drop_last = n_train > cfg.batch_size
    steps_per_epoch = n_train // cfg.batch_size if drop_last else 1
    if cfg.max_steps is not None:
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    out = Path(out_dir) if out_dir is not None else None
    start_epoch, history = 0, []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if arch is not None:
            arch.save(out / "arch.json")
        ckpt = out / CHECKPOINT
        if resume and ckpt.exists():
            start_epoch = _load_checkpoint(ckpt, model, opt, cfg)
            history = resumed_rows(out / METRICS, start_epoch)
            (out / METRICS).write_text("".join(json.dumps(r) + "\n" for r in history))
            if progress:
                print(f"resuming from {ckpt} after epoch {start_epoch}/{cfg.epochs}")
        elif not resume:
            (out / METRICS).unlink(missing_ok=True)

    from hwnas.runlog import TensorBoard

    board = TensorBoard(out / "tb") if out is not None else None
    train_loss = history[-1]["train_loss"] if history else float("nan")
    for epoch in range(start_epoch, cfg.epochs):
        set_seed(cfg.seed * 1000 + epoch)  # deterministic order and augmentation, also after a resume
        loader = DataLoader(splits.train, batch_size=cfg.batch_size, shuffle=True, drop_last=drop_last,
                            num_workers=cfg.num_workers)
        model.train()
        t0, loss_sum, correct, seen = time.time(), 0.0, 0, 0
        bar = progress_bar(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", enabled=progress,
                           leave=False, unit="step")
        for step, (x, y) in enumerate(loader):
            if step >= steps_per_epoch:
                break
            lr = lr_at(epoch * steps_per_epoch + step, total_steps, warmup, cfg.lr)
            for group in opt.param_groups:
                group["lr"] = lr
            logits = model(x.contiguous(memory_format=torch.channels_last))
            loss = criterion(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                where = f"the last good checkpoint ({out / CHECKPOINT}) is kept; " if out is not None and epoch else ""
                raise HwnasError(f"non-finite loss {loss_value} at epoch {epoch + 1}, step {step + 1}; stopped "
                                 f"before the weights were updated: {where}lower the learning rate or check the "
                                 "initial weights and data")
            opt.step()
            loss_sum += loss_value * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", lr=f"{lr:.4f}")
        bar.close()
        train_loss = loss_sum / max(1, seen)
        val_acc, val_loss = evaluate(model, splits.val, num_workers=cfg.num_workers)
        row = {"epoch": epoch + 1, "train_loss": round(train_loss, 5), "train_acc": round(correct / max(1, seen), 5),
               "val_loss": round(val_loss, 5), "val_acc": round(val_acc, 5), "lr": lr,
               "seconds": round(time.time() - t0, 2)}
        history.append(row)
        if progress:
            print(f"epoch {epoch + 1}/{cfg.epochs}: train loss {train_loss:.4f}, val acc {val_acc:.4f}, "
                  f"val loss {val_loss:.4f} ({row['seconds']:.1f} s)")
        if out is not None:
            with open(out / METRICS, "a") as f:
                f.write(json.dumps(row) + "\n")
            _save_checkpoint(out / CHECKPOINT, model, opt, epoch + 1, cfg)
            board.log(row, epoch + 1)
    if board is not None:
        board.close()

    if history:
        val_acc, val_loss = history[-1]["val_acc"], history[-1]["val_loss"]
    else:  # resumed a finished run whose metrics log is gone
        val_acc, val_loss = evaluate(model, splits.val, num_workers=cfg.num_workers)
    weights_path = None
    if out is not None:
        meta = {"epochs": str(cfg.epochs), "val_acc": str(val_acc), "dataset": splits.name}
        if arch is not None:
            meta["arch"] = json.dumps(arch.to_dict())
        weights_path = save_weights(model, out / WEIGHTS, meta)
    model.eval()
    model.to(memory_format=torch.contiguous_format)
    return TrainResult(model, val_acc, val_loss, train_loss, cfg.epochs, history, weights_path)
