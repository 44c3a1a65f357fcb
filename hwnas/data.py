"""Datasets with train/validation splits.

``digits`` (the embedded default) is scikit-learn's handwritten digits (1,797
8x8 images shipped inside scikit-learn, so it works offline), upsampled to the
space's resolution and repeated over 3 channels. Any other name is a path:

* an ImageFolder tree (``<root>/<class>/*.jpg`` or ``<root>/train/<class>/...``, also
  inside one wrapper folder),
* a ``.tar.gz`` of such a tree (extracted once under ``~/.cache/hwnas/datasets``, keyed by
  the archive's content, so a replaced archive is extracted again),
* torchvision's CIFAR-10 python format (a folder holding ``cifar-10-batches-py``).

Images of another size than the space's resolution are resized (shorter side,
then centre crop). A folder is checked when loaded (classes, a sample of images
decoded), and errors name the user's path, not the cache. The split is
deterministic for a given seed; the validation part gets no augmentation.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tarfile
import tempfile
import zlib
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
    """Training and validation images; ``train_plain``: the training images in the same order without
    augmentation (for scoring models on training images; None where only the augmented view exists)."""

    train: Dataset
    val: Dataset
    num_classes: int
    name: str
    train_plain: Dataset | None = None


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
    plain = TensorDataset(x[train_idx], y[train_idx])
    val = TensorDataset(x[val_idx], y[val_idx])
    train = _Augmented(plain, pad=max(1, resolution // 16), flip=False) if augment else plain
    return Splits(train, val, 10, "digits", plain)


def _cache_dir() -> Path:
    return Path(os.environ.get("HWNAS_CACHE", Path.home() / ".cache" / "hwnas")) / "datasets"


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes; HwnasError naming it when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise HwnasError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()


def _content_hash(archive: Path, cache: Path) -> str:
    """SHA-256 of the archive, remembered per (path, size, mtime, ctime, inode) so it is computed once per
    version of the file (ctime changes with any rewrite or replacement, even when the mtime is kept)."""
    st = archive.stat()
    stamp = cache / "hashes" / (hashlib.sha1(str(archive.resolve()).encode()).hexdigest()[:16] + ".json")
    key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino}
    try:
        saved = json.loads(stamp.read_text())
        if {k: saved.get(k) for k in key} == key and isinstance(saved.get("sha256"), str):
            return saved["sha256"]
    except (OSError, ValueError):
        pass
    digest = file_sha256(archive)
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({**key, "sha256": digest}) + "\n")
    except OSError:
        pass  # an unwritable cache only costs hashing again next time
    return digest


def _extract(archive: Path) -> Path:
    """The archive extracted under the cache, keyed by its content (a replaced archive is extracted anew).

    Extraction goes to a temporary folder renamed when complete, so a truncated
    or broken archive leaves nothing behind.
    """
    cache = _cache_dir()
    target = cache / _content_hash(archive, cache)[:16]
    if target.is_dir():
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".part-", dir=cache))
    except OSError as exc:
        raise HwnasError(f"{cache}: cannot create the dataset cache ({exc.strerror or exc}); set HWNAS_CACHE "
                         "to a writable folder") from None
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        tmp.rename(target)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if target.is_dir():  # another process finished the same archive first
            return target
        why = str(exc).splitlines()[0].rstrip(":") if str(exc) else type(exc).__name__  # tarfile: one line per method
        raise HwnasError(f"{archive}: cannot extract ({why}); the archive is truncated or not a tar archive") from None
    return target


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_root(root: Path, label: str) -> Path:
    """The folder whose sub-folders are the classes: ``root``, ``root/train``, or the same inside single
    wrapper folders (an archive of ``cifar10/<class>/...`` or ``cifar10/train/<class>/...``)."""
    folder = root
    for _ in range(8):
        train = folder / "train"
        if train.is_dir() and _subdirs(train):
            folder = train
            break
        inner = _subdirs(folder)
        if len(inner) == 1 and _subdirs(inner[0]):
            folder = inner[0]
            continue
        break
    classes = _subdirs(folder)
    if len(classes) < 2:
        where = label if folder == root else f"{label}: {folder.relative_to(root)}"
        raise HwnasError(f"{where}: found {len(classes)} class folder(s); expected <root>/<class>/*.jpg or "
                         "<root>/train/<class>/... with at least 2 classes")
    return folder


def _dataset_root(path: str) -> tuple[Path, str]:
    """(the folder a dataset path names, the user's path for messages); an archive is extracted first."""
    label = str(path)
    root = Path(path).expanduser()
    if not root.exists():
        raise HwnasError(f"{label}: dataset path does not exist")
    if root.is_file():
        if not root.name.endswith((".tar.gz", ".tgz", ".tar")):
            raise HwnasError(f"{label}: not a folder or a .tar.gz archive")
        root = _extract(root)
    elif not root.is_dir():
        raise HwnasError(f"{label}: not a folder or a .tar.gz archive")
    return root, label


def dataset_fingerprint(name: str) -> str:
    """A fingerprint of a dataset's content, to tell a resumed run its images changed: the archive's SHA-256,
    or for a folder a SHA-256 over every file's relative path, size and modification time (``digits``: its name)."""
    if name == DEFAULT_DATASET:
        return DEFAULT_DATASET
    root = Path(name).expanduser()
    if root.is_file():
        return _content_hash(root, _cache_dir())
    if not root.is_dir():
        raise HwnasError(f"{name}: dataset path does not exist")
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        st = path.stat()
        digest.update(f"{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def dataset_classes(name: str) -> int:
    """Number of classes of a dataset, without loading its images."""
    if name == DEFAULT_DATASET:
        return 10
    root, label = _dataset_root(name)
    if (root / "cifar-10-batches-py").is_dir():
        return 10
    return len(_subdirs(_image_root(root, label)))


class _SquareImage:
    """PIL image -> ``size`` x ``size``: the shorter side resized to ``size``, then the centre cropped.

    Images already of that size pass unchanged (CIFAR at 32 px)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img):
        from PIL import Image

        if img.size == (self.size, self.size):
            return img
        w, h = img.size
        scale = self.size / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        img = img.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        return img.crop((left, top, left + self.size, top + self.size))


class _ImageLoader:
    """ImageFolder's loader with an error naming the user's file (the archive and member for archives)."""

    def __init__(self, root: Path, label: str, archive: bool):
        self.root, self.label, self.archive = root, label, archive

    def __call__(self, path: str):
        from PIL import Image, UnidentifiedImageError

        try:
            with open(path, "rb") as f:
                return Image.open(f).convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
            where = f"{self.label}: {Path(path).relative_to(self.root)}" if self.archive else path
            why = "unknown image format" if isinstance(exc, UnidentifiedImageError) else exc.strerror or str(exc)
            raise HwnasError(f"{where}: not a readable image ({why})") from None


    def check(self, path: str) -> None:
        """Read the file's image header and check its structure (cheap: not decoded)."""
        from PIL import Image

        try:
            with open(path, "rb") as f:
                Image.open(f).verify()
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for broken files
            where = f"{self.label}: {Path(path).relative_to(self.root)}" if self.archive else path
            raise HwnasError(f"{where}: not a readable image ({getattr(exc, 'strerror', None) or exc})") from None


PROBE_IMAGES = 64  # images decoded up front, spread over the dataset, so a folder of non-images fails at once


def _probe_images(dataset, loader: _ImageLoader, stamp: Path | None = None) -> None:
    """Before any training: every image's header and structure checked (a few seconds for 50,000 images;
    once per archive: ``stamp``, in its extraction keyed by content, remembers it), PROBE_IMAGES decoded."""
    samples = dataset.samples
    step = max(1, len(samples) // PROBE_IMAGES)
    for path, _ in samples[::step][:PROBE_IMAGES]:
        loader(path)
    if stamp is not None and stamp.exists():
        return
    for path, _ in samples:
        loader.check(path)
    if stamp is not None:
        try:
            stamp.write_text(f"{len(samples)} images checked\n")
        except OSError:
            pass  # an unwritable cache only costs checking again next time


def _cifar10(root: Path, label: str, transform):
    from torchvision import datasets

    try:
        return datasets.CIFAR10(str(root), train=True, transform=transform, download=False)
    except RuntimeError:  # torchvision's integrity check: a file missing or its MD5 sum not the published one
        raise HwnasError(f"{label}: cifar-10-batches-py is incomplete or corrupted (a file is missing or its MD5 "
                         "sum is not the published one)") from None
    except (OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError) as exc:
        raise HwnasError(f"{label}: cifar-10-batches-py is incomplete or corrupted ({exc})") from None


def image_dataset(path: str, resolution: int, val_fraction: float = 0.1, seed: int = 0,
                  augment: bool = True, limit_train: int | None = None, limit_val: int | None = None) -> Splits:
    """CIFAR-style dataset from a folder, an archive or torchvision's CIFAR-10 files.

    Images of another size than ``resolution`` are resized (shorter side, then centre crop)."""
    from torchvision import datasets, transforms

    root, label = _dataset_root(path)
    normalize = transforms.Normalize(CIFAR_MEAN, CIFAR_STD)
    square = [_SquareImage(resolution)]
    train_tf = transforms.Compose(square + (
        [transforms.RandomCrop(resolution, padding=resolution // 8), transforms.RandomHorizontalFlip()]
        if augment else []) + [transforms.ToTensor(), normalize])
    val_tf = transforms.Compose(square + [transforms.ToTensor(), normalize])
    if (root / "cifar-10-batches-py").is_dir():
        train_base, val_base = _cifar10(root, label, train_tf), _cifar10(root, label, val_tf)
        num_classes = 10
    else:
        folder = _image_root(root, label)
        loader = _ImageLoader(root, label, archive=Path(path).expanduser().is_file())
        try:
            train_base = datasets.ImageFolder(str(folder), transform=train_tf, loader=loader)
            val_base = datasets.ImageFolder(str(folder), transform=val_tf, loader=loader)
        except (FileNotFoundError, RuntimeError) as exc:
            raise HwnasError(f"{label}: {exc}") from None
        _probe_images(train_base, loader, root / ".images-checked" if loader.archive else None)
        num_classes = len(train_base.classes)
    train_idx, val_idx = _split_indices(len(train_base), val_fraction, seed)
    train_idx = _limit(train_idx, limit_train).tolist()
    return Splits(Subset(train_base, train_idx), Subset(val_base, _limit(val_idx, limit_val).tolist()), num_classes,
                  Path(label).name, Subset(val_base, train_idx))


def load_dataset(name: str, resolution: int, seed: int = 0, augment: bool = True,
                 limit_train: int | None = None, limit_val: int | None = None) -> Splits:
    """``digits`` or a path (see the module docstring)."""
    for what, value in (("limit_train", limit_train), ("limit_val", limit_val)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise HwnasError(f"{what} must be a positive integer, got {value!r}")
    if name == DEFAULT_DATASET:
        splits = digits(resolution, seed=seed, augment=augment)
        if limit_train or limit_val:
            first = range(min(len(splits.train), limit_train or len(splits.train)))
            splits.train, splits.train_plain = Subset(splits.train, first), Subset(splits.train_plain, first)
            splits.val = Subset(splits.val, range(min(len(splits.val), limit_val or len(splits.val))))
        return splits
    return image_dataset(name, resolution, seed=seed, augment=augment, limit_train=limit_train, limit_val=limit_val)


def check_dataset(name: str, resolution: int, num_classes: int, what: str = "dataset") -> None:
    """Load ``name`` as a search or training run would and compare its classes with the space's; HwnasError
    prefixed with ``what`` otherwise (for checking a run's inputs before any long work)."""
    try:
        splits = load_dataset(name, resolution, augment=False)
    except HwnasError as exc:
        raise HwnasError(f"{what}: {exc}") from None
    if splits.num_classes != num_classes:
        raise HwnasError(f"{what}: dataset {name} has {splits.num_classes} classes, the space has {num_classes}; "
                         f"set num_classes = {splits.num_classes} in the space's parameters")
