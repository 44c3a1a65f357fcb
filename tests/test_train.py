"""Training recipe, safe weight files, checkpoints and resume."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.data import Dataset

from hwnas.arch import sample_architecture
from hwnas.builder import build_model
from hwnas.cli import main
from hwnas.data import load_dataset
from hwnas.errors import HwnasError
from hwnas.spaces import get_space
from hwnas.train import lr_at, train_model
from hwnas.weights import load_weights, save_weights

SMALL = {"resolution": 16, "width_mult": 0.5, "head_channels": 64}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small models train faster on one thread than on two contended ones."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def arch():
    return sample_architecture(get_space("proxyless-tiny", SMALL), random.Random(3))


@pytest.fixture(scope="module")
def splits():
    return load_dataset("digits", 16, limit_train=256, limit_val=64)


def _batch_loss(model, splits) -> float:
    """Loss on 64 validation images, BN on batch statistics (running ones lag early in training)."""
    x = torch.stack([splits.val[i][0] for i in range(64)])
    y = torch.tensor([int(splits.val[i][1]) for i in range(64)])
    model.train()
    with torch.no_grad():
        return torch.nn.functional.cross_entropy(model(x), y).item()


def test_a_few_steps_reduce_the_loss(arch, splits):
    torch.manual_seed(0)
    model = build_model(arch)
    before = _batch_loss(model, splits)
    result = train_model(model, splits, epochs=3, batch_size=32, optimizer="adamw", lr=3e-3, progress=False)
    after = _batch_loss(result.model, splits)
    assert after < before - 0.2, (before, after)
    assert len(result.history) == 3
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_cosine_schedule_warms_up_and_decays():
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 10, 1.0) == pytest.approx(0.0, abs=1e-12)


def test_weights_round_trip_and_corrupt_files_are_refused(arch, tmp_path):
    model = build_model(arch)
    path = save_weights(model, tmp_path / "w.safetensors", {"note": "x"})
    other = build_model(arch)
    assert load_weights(other, path) == {"note": "x"}
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 7 + b"PK\x03\x04 not weights")
    for bad in (truncated, garbage):
        with pytest.raises(HwnasError, match=f"{bad.name}.*(corrupt|not a valid)"):
            load_weights(build_model(arch), bad)
    with pytest.raises(HwnasError, match="no such weights file"):
        load_weights(model, tmp_path / "missing.safetensors")


def test_weights_of_another_architecture_are_refused(arch, tmp_path):
    path = save_weights(build_model(arch), tmp_path / "w.safetensors")
    wider = sample_architecture(get_space("proxyless-tiny", dict(SMALL, width_mult=1.0)), random.Random(3))
    with pytest.raises(HwnasError, match="w.safetensors"):
        load_weights(build_model(wider), path)


def test_cli_train_refuses_a_corrupt_init_file(arch, tmp_path, capsys):
    arch.save(tmp_path / "a.json")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    code = main(["train", str(tmp_path / "a.json"), "--epochs", "1", "--init", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("hwnas: error: ") and "bad.safetensors" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


class _Interrupting(Dataset):
    """Raises KeyboardInterrupt after ``after`` items have been read (a killed run)."""

    def __init__(self, base, after: int):
        self.base, self.after, self.count = base, after, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.count += 1
        if self.count > self.after:
            raise KeyboardInterrupt
        return self.base[i]


def test_resume_after_interruption_matches_an_uninterrupted_run(arch, splits, tmp_path):
    settings = dict(epochs=2, batch_size=32, max_steps=3, progress=False)
    full = train_model(arch, splits, out_dir=tmp_path / "full", **settings)

    base_train = splits.train
    splits.train = _Interrupting(base_train, after=96 + 40)  # dies during epoch 2
    try:
        with pytest.raises(KeyboardInterrupt):
            train_model(arch, splits, out_dir=tmp_path / "cut", **settings)
    finally:
        splits.train = base_train
    assert (tmp_path / "cut" / "checkpoint.safetensors").exists()
    assert not (tmp_path / "cut" / "weights.safetensors").exists()

    resumed = train_model(arch, splits, out_dir=tmp_path / "cut", resume=True, **settings)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    assert resumed.val_acc == pytest.approx(full.val_acc)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)
    with pytest.raises(HwnasError, match="epochs=2"):
        train_model(arch, splits, out_dir=tmp_path / "cut", resume=True, **dict(settings, epochs=3))


def test_weights_from_supernet_give_the_supernet_child(tmp_path):
    from hwnas.supernet import Supernet
    from hwnas.train import supernet_weights, weights_from_supernet

    space = get_space("proxyless-tiny", {**SMALL, "width_choices": [1.0]})  # separate weights: fixed widths
    arch = sample_architecture(space, random.Random(8))
    arch.choices[2] = "zero" if "zero" in space.positions[2].names else arch.choices[2]
    torch.manual_seed(0)
    net = Supernet(space)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
    net.set_active(arch.choices)
    net.eval()
    model = build_model(arch).eval()
    model.load_state_dict(weights_from_supernet(net, arch))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x), net(x), atol=1e-6)
    torch.save({"model": net.state_dict()}, tmp_path / "checkpoint.pt")
    state = supernet_weights(tmp_path, arch)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(HwnasError, match="checkpoint.pt"):
        supernet_weights(tmp_path, arch)
