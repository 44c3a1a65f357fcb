"""One-shot evaluation: the supernet whose shared weights score the children the strategies propose.

Default: the weight-entangled supernet (:class:`hwnas.supernet.entangled.EntangledSupernet`), the one the
gradient search trains, so every child of the space -- stage widths included -- is a view of one set of
weights. Its weights come from

* a gradient search's ``checkpoint.pt`` (or its run folder) written with the entangled supernet
  (``"supernet": "entangled"``), or a ``.safetensors`` file written by :func:`save_supernet`; or
* :func:`train_sandwich`: a short training with the sandwich rule, as in the gradient search
  (:func:`hwnas.search.entangled_loop.sandwich_backward`): after a warm-up on the largest child alone, each
  step trains the largest child on the labels and one uniformly sampled child on the largest child's soft
  outputs (in-place distillation).

Spaces the entangled supernet cannot hold (the fbnet family, expansions below 2) use the separate-weights
:class:`hwnas.supernet.Supernet` trained with one uniformly sampled path per step (:func:`train_uniform`).
Separate-weights checkpoints (older runs, ``--supernet-type separate``) still load for spaces without width
search; with width search they are refused, as they hold one width per stage.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from hwnas.progress import progress_bar

from hwnas.arch import Architecture
from hwnas.data import Splits
from hwnas.errors import HwnasError
from hwnas.spaces import SearchSpace
from hwnas.strategies.evaluators import OneShotEvaluator

SUPERNET = "supernet.safetensors"
ENTANGLED_KIND, SEPARATE_KIND = "hwnas-entangled-supernet", "hwnas-supernet"


def entangled_fits(space: SearchSpace) -> bool:
    """Whether the weight-entangled supernet can hold ``space`` (proxyless family, expansions >= 2)."""
    from hwnas.supernet.entangled import why_not_entangled

    return why_not_entangled(space) is None


def select_child(supernet: nn.Module, arch: Architecture) -> nn.Module:
    """Entangled supernet: run ``arch`` (its stage widths and candidates)."""
    from hwnas.children import child_of

    supernet.set_child(child_of(supernet.space, arch))
    return supernet


def select_path(supernet: nn.Module, arch: Architecture) -> nn.Module:
    """Separate-weights supernet: one candidate per position (its stage widths are the supernet's)."""
    supernet.set_child(list(arch.choices))
    return supernet


def _separate(space: SearchSpace, path: Path) -> nn.Module:
    from hwnas.supernet import Supernet

    if space.searches_width:
        raise HwnasError(f"{path}: a separate-weights supernet holds one width per stage, space {space.name} "
                         f"searches stage widths ({', '.join(f'{w:g}' for w in space.width_choices)}); give a "
                         "weight-entangled one (a gradient search run of `hwnas search`), none (one is trained), "
                         "or --set width_choices=[1.0]")
    return Supernet(space)


def load_supernet(path: str | Path, space: SearchSpace) -> nn.Module:
    """Weights from a ``.safetensors`` file, or a gradient search's ``checkpoint.pt`` (or its run folder)."""
    from hwnas.supernet.entangled import EntangledSupernet
    from hwnas.weights import load_weights, read_weights

    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if path.suffix == ".pt":
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model = state["model"]
        except FileNotFoundError:
            raise HwnasError(f"{path}: no such supernet checkpoint") from None
        except Exception as exc:  # truncated file, foreign pickle, missing key
            raise HwnasError(f"{path}: not a readable hwnas search checkpoint ({type(exc).__name__})") from None
        net = EntangledSupernet(space) if state.get("supernet") == "entangled" else _separate(space, path)
        try:
            net.load_state_dict(model)
        except RuntimeError:
            raise HwnasError(f"{path}: the supernet checkpoint does not match space {space.name}") from None
    else:
        _, meta = read_weights(path)
        net = EntangledSupernet(space) if meta.get("kind") == ENTANGLED_KIND else _separate(space, path)
        load_weights(net, path)
    return net.eval()


def save_supernet(net: nn.Module, path: str | Path) -> Path:
    from hwnas.supernet.entangled import EntangledSupernet
    from hwnas.weights import save_weights

    kind = ENTANGLED_KIND if isinstance(net, EntangledSupernet) else SEPARATE_KIND
    return save_weights(net, path, {"kind": kind, "space": net.space.name})


def _batches(splits: Splits, batch_size: int, steps: int):
    """``steps`` shuffled training batches (epochs repeat as needed)."""
    done = 0
    while done < steps:
        for batch in DataLoader(splits.train, batch_size=batch_size, shuffle=True, drop_last=True):
            yield batch
            done += 1
            if done >= steps:
                return


def _optimizer(net: nn.Module, lr: float, steps: int):
    opt = torch.optim.SGD(net.weight_parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=4e-5)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)


def train_sandwich(space: SearchSpace, splits: Splits, steps: int = 300, lr: float = 0.05, batch_size: int = 64,
                   seed: int = 0, warmup_steps: int | None = None, progress: bool = True) -> nn.Module:
    """The weight-entangled supernet trained with the sandwich rule (SGD, cosine learning rate): the largest
    child alone for ``warmup_steps`` (default a quarter of ``steps``), then the largest child plus one
    uniformly sampled child (stage widths and candidates) distilled from it per step."""
    from hwnas.children import analytic_table
    from hwnas.search.entangled_loop import sandwich_backward
    from hwnas.strategies.base import random_child
    from hwnas.supernet.entangled import EntangledSupernet

    rng = random.Random(seed)
    warmup = steps // 4 if warmup_steps is None else warmup_steps
    largest = analytic_table(space, "flops").largest_child()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = EntangledSupernet(space).to(memory_format=torch.channels_last)  # faster convolutions on a CPU
        opt, sched = _optimizer(net, lr, steps)
        net.train()
        bar = progress_bar(total=steps, desc="supernet (sandwich rule)", unit="step", enabled=progress, leave=False)
        for step, (x, y) in enumerate(_batches(splits, batch_size, steps)):
            sampled = None if step < warmup else random_child(space, rng)
            opt.zero_grad(set_to_none=True)
            x = x.contiguous(memory_format=torch.channels_last)
            _, loss, child_loss = sandwich_backward(net, x, y, largest, sampled)
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", child=f"{child_loss.item():.3f}")
        bar.close()
    net.set_child(None)
    return net.to(memory_format=torch.contiguous_format).eval()


def train_uniform(space: SearchSpace, splits: Splits, steps: int = 200, lr: float = 0.05, batch_size: int = 64,
                  seed: int = 0, progress: bool = True) -> nn.Module:
    """A separate-weights supernet trained with one uniformly sampled path per step (SGD, cosine learning rate);
    for spaces the entangled supernet cannot hold."""
    from hwnas.supernet import Supernet

    if space.searches_width:
        raise HwnasError(f"a separate-weights supernet cannot search the stage widths of {space.name}")
    rng = random.Random(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Supernet(space)
        opt, sched = _optimizer(net, lr, steps)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
        net.train()
        bar = progress_bar(total=steps, desc="supernet (uniform paths)", unit="step", enabled=progress, leave=False)
        for x, y in _batches(splits, batch_size, steps):
            net.set_child([rng.choice(pos.names) for pos in space.positions])
            loss = loss_fn(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
    net.set_child(None)
    return net.eval()


def train_supernet(space: SearchSpace, splits: Splits, **options) -> nn.Module:
    """:func:`train_sandwich` where the entangled supernet fits the space, else :func:`train_uniform`."""
    return (train_sandwich if entangled_fits(space) else train_uniform)(space, splits, **options)


def oneshot_evaluator(supernet_path: str | Path, space: SearchSpace, splits: Splits, calib_batches: int = 4,
                      batch_size: int = 64, seed: int = 0) -> OneShotEvaluator:
    from hwnas.supernet.entangled import EntangledSupernet

    net = load_supernet(supernet_path, space)
    select = select_child if isinstance(net, EntangledSupernet) else select_path
    return OneShotEvaluator(net, splits, select, calib_batches=calib_batches, batch_size=batch_size, seed=seed)
