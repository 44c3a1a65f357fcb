"""Adapting a committed CPU table to this machine from N timed children (hwnas.predictors.adapt_table)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.predictors import load_predictor
from hwnas.predictors.adapt_table import adapt_table, group_of, random_children
from hwnas.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "predictors/amd-epyc-2c-tflite-fp32.json"
SPACE = get_space("proxyless-tiny")
TRUE_SCALES = {"fixed": 1.6, "mbconv:k7:e3:wide": 0.9, "mbconv:k7:e6:wide": 0.9, "mbconv:k3:e6:narrow": 2.2}


def _machine(table, archs) -> np.ndarray:
    """Another machine: the table at 1.5x, with some groups relatively cheaper or dearer."""
    return np.array([table.overhead_ms * TRUE_SCALES["fixed"]
                     + sum(TRUE_SCALES.get(group_of(op), 1.5) * table.predict_op(op) for op in a.ops())
                     for a in archs])


def test_group_scales_recover_a_machine_one_scalar_cannot():
    table = load_predictor(TABLE, space="proxyless-tiny")
    fit, unseen = random_children(SPACE, 20, 1), random_children(SPACE, 80, 2)[50:]
    adapted = adapt_table(table, fit, _machine(table, fit), {"name": "other"}, TABLE.name)
    y = _machine(table, unseen)
    pred = np.array([adapted.predict_ops(a.ops()) for a in unseen])
    level = adapted.overhead["adapt"]["session_level"]
    scalar = level * np.array([table.predict_ops(a.ops()) for a in unseen])
    assert np.mean(np.abs(pred / y - 1) <= 0.02) >= 0.95
    assert np.max(np.abs(pred / y - 1)) < np.max(np.abs(scalar / y - 1)) / 2
    assert adapted.overhead["adapt"]["scales"]["mbconv:k3:e6:narrow"] > 1.8


def test_adapting_refuses_fewer_than_five_models():
    table = load_predictor(TABLE, space="proxyless-tiny")
    archs = random_children(SPACE, 4, 3)
    with pytest.raises(HwnasError, match="at least 5 timed models, got 4"):
        adapt_table(table, archs, _machine(table, archs), {"name": "x"})


def test_cli_fit_adapt_writes_a_table_that_loads(tmp_path, monkeypatch, capsys):
    import hwnas.predictors.adapt_table as module

    table = load_predictor(TABLE, space="proxyless-tiny")
    monkeypatch.setattr(module, "time_children",  # no timing in a unit test: the synthetic machine above
                        lambda archs, *a, **k: list(_machine(table, archs)))
    assert main(["fit", "--adapt", str(TABLE), "--models", "8", "--out", str(tmp_path), "--no-progress",
                 "--device", "here"]) == 0
    out = tmp_path / f"here-adapted-from-{TABLE.stem}.json"
    assert f"wrote {out}" in capsys.readouterr().out
    loaded = load_predictor(out, space="proxyless-tiny")
    assert loaded.type_name == "lut" and loaded.overhead["adapt"]["models"] == 8
    a = random_children(SPACE, 1, 9)[0]
    assert loaded.predict_ops(a.ops()) == pytest.approx(_machine(table, [a])[0], rel=0.15)


def test_cli_fit_adapt_bad_arguments_exit_2(tmp_path, capsys):
    assert main(["fit", "--adapt", str(TABLE), "--models", "3", "--out", str(tmp_path)]) == 2
    assert "--models must be at least 5, got 3" in capsys.readouterr().err
    phone = ROOT / "predictors/phones/pixel2.json"
    assert main(["fit", "--adapt", str(phone), "--models", "5", "--out", str(tmp_path)]) == 2
    assert "needs a CPU lookup table" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
