"""Whole-model export: fp32 parity with PyTorch, int8 agreement, refusal of failing models.

TensorFlow runs only in the conversion worker subprocess; one worker serves the
whole session (the ``converter`` fixture of conftest.py), so TensorFlow is imported once.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from hwnas.arch import sample_architecture
from hwnas.builder import build_model
from hwnas.cli import main
from hwnas.data import load_dataset
from hwnas.errors import HwnasError
from hwnas.export.parity import run_tflite
from hwnas.export.trained import export_trained, stack_images
from hwnas.spaces import get_space
from hwnas.train import train_model
from hwnas.weights import save_weights

SMALL = {"resolution": 16, "width_mult": 0.5, "head_channels": 64}


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    splits = load_dataset("digits", 16, augment=False, limit_train=256, limit_val=64)
    return splits, stack_images(splits.val, 48, seed=1), stack_images(splits.train, 32, seed=2)


@pytest.fixture(scope="module")
def trained(data):
    """A briefly trained network (its logits separate classes, as in real use)."""
    splits = data[0]
    arch = sample_architecture(get_space("proxyless-tiny", SMALL), random.Random(11))
    result = train_model(arch, splits, epochs=2, batch_size=32, optimizer="adamw", lr=3e-3, progress=False)
    return arch, result.model


@pytest.fixture(scope="module")
def exported(trained, data, converter, tmp_path_factory):
    arch, model = trained
    _, check, calib = data
    out = tmp_path_factory.mktemp("export")
    return export_trained(arch, model, out, check, calib, converter=converter, progress=lambda *_: None), out


def test_fp32_tflite_and_onnx_match_pytorch(exported):
    result, out = exported
    for fmt in ("tflite", "onnx"):
        f = result.get(fmt, "fp32")
        assert f.passed and f.path.parent == out and f.path.exists()
        assert f.max_abs_diff < 1e-4
    assert not (out / ".staging").exists()
    assert (out / "export.json").exists()


def test_quantized_models_run_and_agree_with_fp32(exported, trained, data):
    result, _ = exported
    arch, model = trained
    check = data[1]
    with torch.no_grad():
        reference = model(torch.from_numpy(check)).numpy().argmax(1)
    for quant in ("dynamic", "int8"):
        f = result.get("tflite", quant)
        assert f.passed and f.agreement >= 0.9
        # recomputed here from the written file, independently of the recorded number
        assert (run_tflite(f.path, check).argmax(1) == reference).mean() == pytest.approx(f.agreement)
    assert result.get("tflite", "int8").path.stat().st_size < 0.5 * result.get("tflite", "fp32").path.stat().st_size


def test_another_random_architecture_fp32_parity(data, converter, tmp_path):
    seed = 5  # a second random architecture besides the trained one, with randomised BN statistics
    arch = sample_architecture(get_space("proxyless-tiny", SMALL), random.Random(seed))
    torch.manual_seed(seed)
    model = build_model(arch)
    for m in model.modules():  # non-trivial BN statistics, so the BN copy is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    _, check, calib = data
    result = export_trained(arch, model, tmp_path, check[:16], calib, quants=("fp32",), onnx=False,
                            converter=converter, progress=lambda *_: None)
    assert result.get("tflite", "fp32").max_abs_diff < 1e-4


def test_failing_check_writes_nothing_unless_forced(trained, data, tmp_path):
    arch, model = trained
    _, check, calib = data
    # ONNX only (no TensorFlow needed); a zero tolerance makes the fp32 check fail
    with pytest.raises(HwnasError, match="self-check failed.*--force"):
        export_trained(arch, model, tmp_path / "refused", check[:8], calib, quants=(), onnx=True,
                       tolerance=0.0, progress=lambda *_: None)
    assert not list((tmp_path / "refused").rglob("*.onnx"))
    result = export_trained(arch, model, tmp_path / "forced", check[:8], calib, quants=(), onnx=True,
                            tolerance=0.0, force=True, progress=lambda *_: None)
    assert not result.files[0].passed and result.files[0].path.exists()


def test_cli_export_errors_are_one_line(trained, tmp_path, capsys):
    arch, model = trained
    arch.save(tmp_path / "a.json")
    save_weights(model, tmp_path / "w.safetensors")
    assert main(["export", str(tmp_path / "a.json"), "--weights", str(tmp_path / "w.safetensors"),
                 "--quant", "fp16"]) == 2
    assert "--quant" in capsys.readouterr().err
    (tmp_path / "bad.safetensors").write_bytes(np.zeros(10, np.uint8).tobytes())
    assert main(["export", str(tmp_path / "a.json"), "--weights", str(tmp_path / "bad.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "bad.safetensors" in err and "Traceback" not in err
