"""Synthetic latency tables for predictor tests: a known cost formula written in the shared CSV formats."""

from __future__ import annotations

import random
from pathlib import Path

from hwnas.arch import sample_architecture
from hwnas.costs import op_cost
from hwnas.latency_data import ModelRow, OpRow, append_model_row, append_op_row, write_device
from hwnas.spaces import get_space

OVERHEAD_MS = 0.05


def synthetic_ms(op) -> float:
    """A latency law with a kernel-7 penalty that FLOPs alone cannot explain."""
    cost = op_cost(op)
    dw = op.kernel * op.kernel * op.c_in * op.expand * op.out_h * op.out_w if op.kind == "mbconv" else 0
    return 0.003 + cost.flops / 2e9 + cost.mac / 4e8 + (dw * 4 / 1e9 if op.kernel == 7 else 0.0)


def training_ops(spaces=("proxyless-tiny", "proxyless-cifar")):
    ops = {}
    for name in spaces:
        for op in get_space(name).unique_ops():
            if op.kind != "zero":
                ops[op] = None
    return list(ops)


def write_tables(folder: Path, device: str = "dev", n_models: int = 24, runtime: str = "tflite",
                 per_op_ms: float = 0.0) -> Path:
    """latency_data-style folder: op rows, whole-model rows (sum + OVERHEAD_MS + per_op_ms * operators),
    device description."""
    folder.mkdir(parents=True, exist_ok=True)
    for op in training_ops():
        append_op_row(folder / f"{device}.csv", OpRow(op, runtime, "fp32", 1, synthetic_ms(op), 0.0, 5, 20))
    space = get_space("proxyless-tiny")
    rng = random.Random(0)
    for i in range(n_models):
        arch = sample_architecture(space, rng)
        rel = f"{folder.name}/models/{device}-{i:03d}.json"  # relative to the folder's parent, as to a repo root
        arch.save(folder.parent / rel)
        ms = OVERHEAD_MS + sum(synthetic_ms(op) + per_op_ms for op in arch.ops())
        append_model_row(folder / f"{device}-models.csv",
                         ModelRow(rel, space.name, tuple(arch.choices), runtime, "fp32", 1, ms, 0.0, 5))
    write_device(folder / f"{device}.device.json", {"name": device, "cpu": "test cpu", "cores": 2, "runtimes": {}})
    return folder
