"""Datasets with train/validation splits.

``digits`` (the embedded default) is scikit-learn's handwritten digits (1,797
8x8 images shipped inside scikit-learn, so it works offline), upsampled to the
space's resolution and repeated over 3 channels. Any other name is a path:

* an ImageFolder tree (``<root>/<class>/*.jpg`` or ``<root>/train/<class>/...``),
* a ``.tar.gz`` of such a tree (extracted once under ``~/.cache/hwnas/datasets``),
* torchvision's CIFAR-10 python format (a folder holding ``cifar-10-batches-py``).

The split is deterministic for a given seed; the validation part gets no
augmentation.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from hwnas.errors import HwnasError

DEFAULT_DATASET = "digits"
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    num_classes: int
    name: str


class _Augmented(Dataset):
    """Random shift (pad + crop) and optional horizontal flip on tensors."""

    def __init__(self, base: Dataset, pad: int, flip: bool):
        self.base, self.pad, self.flip = base, pad, flip

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        if self.pad:
            _, h, w = x.shape
            padded = torch.nn.functional.pad(x, (self.pad,) * 4)
            dy, dx = np.random.randint(0, 2 * self.pad + 1, size=2)
            x = padded[:, dy:dy + h, dx:dx + w]
        if self.flip and np.random.rand() < 0.5:
            x = x.flip(-1)
        return x, y


def _split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 < val_fraction < 1:
        raise HwnasError(f"validation fraction must be between 0 and 1, got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    return order[n_val:], order[:n_val]


def _limit(indices: np.ndarray, limit: int | None) -> np.ndarray:
    return indices if limit is None else indices[:limit]


def digits(resolution: int, val_fraction: float = 0.2, seed: int = 0, augment: bool = True) -> Splits:
    """scikit-learn's digits, upsampled to ``resolution`` and normalised."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    x = ((x - 0.5) / 0.5).repeat(1, 3, 1, 1)
    y = torch.tensor(data.target, dtype=torch.long)
    train_idx, val_idx = _split_indices(len(y), val_fraction, seed)
    train = TensorDataset(x[train_idx], y[train_idx])
    val = TensorDataset(x[val_idx], y[val_idx])
    if augment:
        train = _Augmented(train, pad=max(1, resolution // 16), flip=False)
    return Splits(train, val, 10, "digits")


def _extract(archive: Path) -> Path:
    digest = hashlib.sha1(f"{archive.resolve()}:{archive.stat().st_size}".encode()).hexdigest()[:12]
    cache = Path(os.environ.get("HWNAS_CACHE", Path.home() / ".cache" / "hwnas")) / "datasets" / digest
    done = cache / ".extracted"
    if not done.exists():
        cache.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(cache, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise HwnasError(f"{archive}: cannot extract ({exc})") from None
        done.touch()
    return cache


def _image_root(root: Path) -> Path:
    """The folder whose sub-folders are the classes."""
    for candidate in (root / "train", root):
        if candidate.is_dir() and any(p.is_dir() for p in candidate.iterdir()):
            subdirs = [p for p in candidate.iterdir() if p.is_dir()]
            if len(subdirs) == 1 and subdirs[0].name == "train":
                continue
            return candidate
    raise HwnasError(f"{root}: no class folders found (expected <root>/<class>/*.jpg or <root>/train/<class>/...)")


def _dataset_root(path: str) -> Path:
    """The folder a dataset path names (an archive is extracted first)."""
    root = Path(path).expanduser()
    if not root.exists():
        raise HwnasError(f"{root}: dataset path does not exist")
    if root.is_file():
        if not root.name.endswith((".tar.gz", ".tgz", ".tar")):
            raise HwnasError(f"{root}: not a folder or a .tar.gz archive")
        root = _extract(root)
    return root


def dataset_classes(name: str) -> int:
    """Number of classes of a dataset, without loading its images."""
    if name == DEFAULT_DATASET:
        return 10
    root = _dataset_root(name)
    if (root / "cifar-10-batches-py").is_dir():
        return 10
    return sum(1 for p in _image_root(root).iterdir() if p.is_dir())


def image_dataset(path: str, resolution: int, val_fraction: float = 0.1, seed: int = 0,
                  augment: bool = True, limit_train: int | None = None, limit_val: int | None = None) -> Splits:
    """CIFAR-style dataset from a folder, an archive or torchvision's CIFAR-10 files."""
    from torchvision import datasets, transforms

    root = _dataset_root(path)
    normalize = transforms.Normalize(CIFAR_MEAN, CIFAR_STD)
    resize = [transforms.Resize(resolution)] if resolution != 32 else []
    train_tf = transforms.Compose(resize + (
        [transforms.RandomCrop(resolution, padding=resolution // 8), transforms.RandomHorizontalFlip()]
        if augment else []) + [transforms.ToTensor(), normalize])
    val_tf = transforms.Compose(resize + [transforms.ToTensor(), normalize])
    if (root / "cifar-10-batches-py").is_dir():
        train_base = datasets.CIFAR10(str(root), train=True, transform=train_tf, download=False)
        val_base = datasets.CIFAR10(str(root), train=True, transform=val_tf, download=False)
        num_classes = 10
    else:
        folder = _image_root(root)
        try:
            train_base = datasets.ImageFolder(str(folder), transform=train_tf)
            val_base = datasets.ImageFolder(str(folder), transform=val_tf)
        except (FileNotFoundError, RuntimeError) as exc:
            raise HwnasError(f"{folder}: {exc}") from None
        num_classes = len(train_base.classes)
    train_idx, val_idx = _split_indices(len(train_base), val_fraction, seed)
    return Splits(Subset(train_base, _limit(train_idx, limit_train).tolist()),
                  Subset(val_base, _limit(val_idx, limit_val).tolist()), num_classes, root.name)


def load_dataset(name: str, resolution: int, seed: int = 0, augment: bool = True,
                 limit_train: int | None = None, limit_val: int | None = None) -> Splits:
    """``digits`` or a path (see the module docstring)."""
    if name == DEFAULT_DATASET:
        splits = digits(resolution, seed=seed, augment=augment)
        if limit_train or limit_val:
            splits.train = Subset(splits.train, range(min(len(splits.train), limit_train or len(splits.train))))
            splits.val = Subset(splits.val, range(min(len(splits.val), limit_val or len(splits.val))))
        return splits
    return image_dataset(name, resolution, seed=seed, augment=augment, limit_train=limit_train, limit_val=limit_val)
