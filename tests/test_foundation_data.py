"""Datasets: the embedded default and ImageFolder trees."""

import numpy as np
import pytest
from PIL import Image

from hwnas.data import dataset_classes, load_dataset
from hwnas.errors import HwnasError


def test_digits_split_shapes_and_determinism():
    a = load_dataset("digits", 32, seed=0, augment=False)
    b = load_dataset("digits", 32, seed=0, augment=False)
    assert a.num_classes == 10
    assert len(a.train) + len(a.val) == 1797
    x, y = a.train[0]
    assert tuple(x.shape) == (3, 32, 32) and 0 <= int(y) < 10
    assert (a.val[5][0] == b.val[5][0]).all()


def test_image_folder_tree(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
                tmp_path / "train" / cls / f"{i}.jpg")
    splits = load_dataset(str(tmp_path), 32)
    assert splits.num_classes == 2
    assert dataset_classes(str(tmp_path)) == 2
    assert dataset_classes("digits") == load_dataset("digits", 8).num_classes == 10
    assert len(splits.train) + len(splits.val) == 10
    x, _ = splits.train[0]
    assert tuple(x.shape) == (3, 32, 32)


def test_bad_dataset_paths(tmp_path):
    with pytest.raises(HwnasError, match="does not exist"):
        load_dataset(str(tmp_path / "nope"), 32)
    with pytest.raises(HwnasError, match=r"found 0 class folder\(s\)"):
        load_dataset(str(tmp_path), 32)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(HwnasError, match="not a folder or a .tar.gz"):
        load_dataset(str(tmp_path / "x.txt"), 32)
