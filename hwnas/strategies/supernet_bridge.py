"""One-shot evaluation with :class:`hwnas.supernet.Supernet`: load or train shared weights.

Sample-based strategies score children of a supernet whose weights were trained
so that *every* path works: :func:`train_uniform` trains with one uniformly
sampled path per step (single-path one-shot, Guo et al. 2020). A supernet saved
by the gradient search (``hwnas search``) can be used too; its weights favour
the paths that search preferred.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from hwnas.progress import progress_bar

from hwnas.data import Splits
from hwnas.spaces import SearchSpace
from hwnas.strategies.evaluators import OneShotEvaluator


SUPERNET = "supernet.safetensors"


def select_path(supernet: nn.Module, choices: list[str]) -> nn.Module:
    supernet.set_active(choices)
    return supernet


def load_supernet(path: str | Path, space: SearchSpace) -> nn.Module:
    """Weights from a ``.safetensors`` file, or a gradient search's ``checkpoint.pt`` (or its run folder)."""
    from hwnas.errors import HwnasError
    from hwnas.supernet import Supernet
    from hwnas.weights import load_weights

    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    net = Supernet(space)
    if path.suffix == ".pt":
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)["model"]
        except FileNotFoundError:
            raise HwnasError(f"{path}: no such supernet checkpoint") from None
        except Exception as exc:  # truncated file, foreign pickle, missing key
            raise HwnasError(f"{path}: not a readable hwnas search checkpoint ({type(exc).__name__})") from None
        try:
            net.load_state_dict(state)
        except RuntimeError:
            raise HwnasError(f"{path}: the supernet checkpoint does not match space {space.name}") from None
    else:
        load_weights(net, path)
    return net.eval()


def save_supernet(net: nn.Module, path: str | Path) -> Path:
    from hwnas.weights import save_weights

    return save_weights(net, path, {"kind": "hwnas-supernet", "space": net.space.name})


def train_uniform(space: SearchSpace, splits: Splits, steps: int = 200, lr: float = 0.05, batch_size: int = 64,
                  seed: int = 0, progress: bool = True) -> nn.Module:
    """A supernet trained with one uniformly sampled path per step (SGD, cosine learning rate)."""
    from hwnas.supernet import Supernet

    rng = random.Random(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Supernet(space)
        params = net.weight_parameters()
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=4e-5)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
        net.train()
        bar = progress_bar(total=steps, desc="supernet (uniform paths)", unit="step", enabled=progress, leave=False)
        done = 0
        while done < steps:
            loader = DataLoader(splits.train, batch_size=batch_size, shuffle=True, drop_last=True)
            for x, y in loader:
                net.set_active([rng.choice(pos.names) for pos in space.positions])
                loss = loss_fn(net(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                done += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
                if done >= steps:
                    break
        bar.close()
    net.set_active(None)
    return net.eval()


def oneshot_evaluator(supernet_path: str | Path, space: SearchSpace, splits: Splits, calib_batches: int = 4,
                      batch_size: int = 64, seed: int = 0) -> OneShotEvaluator:
    return OneShotEvaluator(load_supernet(supernet_path, space), splits, select_path,
                            calib_batches=calib_batches, batch_size=batch_size, seed=seed)
