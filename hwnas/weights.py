"""Safe weight files: model state dicts as safetensors (nothing in them can run code).

A weights file holds the tensors of a model's ``state_dict`` plus string
metadata (the architecture JSON, the epoch ...). Loading checks the file is a
readable safetensors file whose tensors match the model exactly, and raises a
one-line :class:`HwnasError` naming the file otherwise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from hwnas.errors import HwnasError


def save_weights(model: nn.Module | dict, path: str | Path, metadata: dict | None = None) -> Path:
    """Write a model's (or a state dict's) tensors to ``path`` atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = model.state_dict() if isinstance(model, nn.Module) else model
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a weights file; HwnasError when unreadable or corrupt."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise HwnasError(f"{path}: no such weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for bad headers/truncation
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HwnasError(f"{path}: not a valid safetensors weights file ({msg}); "
                         "it may be truncated or corrupt") from None
    return tensors, meta


def check_finite(tensors: dict[str, torch.Tensor], where) -> None:
    """Refuse weights holding NaN or infinite values (training on from them only spreads the NaN)."""
    bad = [name for name, value in tensors.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise HwnasError(f"{where}: tensor {bad[0]!r} holds NaN or infinite values ({len(bad)} of {len(tensors)} "
                         "tensors do); these weights cannot be used")


def load_weights(model: nn.Module, path: str | Path) -> dict[str, str]:
    """Load a weights file into ``model`` (names and shapes must match); returns its metadata."""
    tensors, meta = read_weights(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise HwnasError(f"{path}: weights do not match this architecture ({detail})")
    for name, value in tensors.items():
        if value.shape != expected[name].shape:
            raise HwnasError(f"{path}: tensor {name!r} has shape {tuple(value.shape)}, "
                             f"the architecture needs {tuple(expected[name].shape)}")
    check_finite(tensors, path)
    model.load_state_dict(tensors)
    return meta
