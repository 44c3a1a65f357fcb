"""Machine-readable outputs: ``--json`` of measure and search (stdout holds only the JSON), TensorBoard logs
of training (when the ``tensorboard`` extra is installed) written without TensorFlow in this process."""

from __future__ import annotations

import json
import random
import sys

import pytest
import torch

from hwnas.arch import sample_architecture
from hwnas.cli import main
from hwnas.data import load_dataset
from hwnas.export import export_onnx
from hwnas.spaces import get_space
from hwnas.train import train_model

SMALL = {"resolution": 16, "width_mult": 0.5, "head_channels": 64}
TINY_SET = ["--set", "resolution=16", "--set", "stages=[[24,1,2],[32,2,2]]", "--set", "head_channels=64"]


def test_measure_json_is_the_timing_and_nothing_else(tmp_path, capsys):
    arch = sample_architecture(get_space("proxyless-tiny", SMALL), random.Random(0))
    model = export_onnx(arch.ops(), path=tmp_path / "m.onnx")
    assert main(["measure", "--json", "--repeats", "3", str(model)]) == 0
    captured = capsys.readouterr()
    [row] = json.loads(captured.out)
    assert row["file"] == str(model) and row["runtime"] == "onnxruntime" and row["median_ms"] > 0
    assert 0 < row["fastest_ms"] <= row["median_ms"]
    assert "ms median" in captured.err  # the human line went to stderr


def test_search_json_prints_the_runs_derived_summary(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["search", *TINY_SET, "--budget-ms", "1.5", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "16",
               "--max-steps", "1", "--limit-train", "32", "--limit-val", "16", "--threads", "1", "--out", str(out),
               "--no-progress", "--json"])
    assert rc == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == json.loads((out / "derived.json").read_text())
    assert "run folder" in captured.err


def test_train_writes_tensorboard_scalars_without_importing_tensorflow(tmp_path):
    pytest.importorskip("tensorboard")
    torch.set_num_threads(1)
    splits = load_dataset("digits", 16, limit_train=64, limit_val=32)
    arch = sample_architecture(get_space("proxyless-tiny", SMALL), random.Random(1))
    train_model(arch, splits, epochs=2, batch_size=32, max_steps=1, out_dir=tmp_path / "t", progress=False)
    assert "tensorflow" not in sys.modules
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "t" / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("val_acc")] == [1, 2]
    assert {"train_loss", "val_loss", "lr"} <= set(events.Tags()["scalars"])
