"""hwnas tune: grid parsing and errors, trial order, logging, resume, best trial, CLI."""

from __future__ import annotations

import json

import pytest

import hwnas.train
from hwnas.arch import architecture_of
from hwnas.cli import main
from hwnas.data import load_dataset
from hwnas.errors import HwnasError
from hwnas.spaces import get_space
from hwnas.tune import DEFAULT_GRID, TuneConfig, best_trial, parse_grid, read_trials, run_tune, trial_order

STAGES = [[24, 1, 2], [40, 1, 2]]


@pytest.fixture(scope="module")
def tiny():
    space = get_space("proxyless-tiny", {"stages": STAGES})
    arch = architecture_of(space, [p.names[0] for p in space.positions])
    splits = load_dataset("digits", 32, seed=0, limit_train=64, limit_val=32)
    return arch, splits


def test_parse_grid_accepts_numbers_and_rejects_bad_grids():
    assert parse_grid("1e-4, 0.001,1,10", "lr") == [1e-4, 1e-3, 1.0, 10.0]
    assert parse_grid("0,1e-4", "wd", allow_zero=True) == [0.0, 1e-4]
    for bad, match in [("", "comma-separated"), ("1e-3,,1e-2", "comma-separated"), ("1e-3,fast", "'fast' is not"),
                       ("-0.1", "positive"), ("0", "positive"), ("inf", "positive"), ("nan", "positive"),
                       ("0.1,1e-1", "twice")]:
        with pytest.raises(HwnasError, match=match):
            parse_grid(bad, "lr")
    with pytest.raises(HwnasError, match="non-negative"):
        parse_grid("-1", "wd", allow_zero=True)


def test_trial_order_is_a_seeded_sample_of_the_grid():
    cfg = TuneConfig(trials=10, seed=3)
    order = trial_order(cfg)
    grid = {(a, b) for a in DEFAULT_GRID for b in DEFAULT_GRID}
    assert len(order) == 10 and len(set(order)) == 10 and set(order) <= grid
    assert order == trial_order(TuneConfig(trials=10, seed=3))
    assert order != trial_order(TuneConfig(trials=10, seed=4))
    assert len(trial_order(TuneConfig())) == 36  # the whole default grid
    assert trial_order(TuneConfig(trials=36, seed=3))[:10] == order  # a larger budget extends the same order
    with pytest.raises(HwnasError, match="between 1 and the grid size 36"):
        TuneConfig(trials=37).check()


def test_best_trial_prefers_accuracy_then_loss():
    trials = [{"trial": 0, "val_acc": 0.5, "val_loss": 1.0}, {"trial": 1, "val_acc": 0.7, "val_loss": None},
              {"trial": 2, "val_acc": 0.7, "val_loss": 0.9}, {"trial": 3, "val_acc": 0.7, "val_loss": 0.9}]
    assert best_trial(trials)["trial"] == 2
    assert best_trial([]) is None


def test_run_tune_logs_resumes_and_matches_an_uninterrupted_run(tiny, tmp_path, monkeypatch):
    arch, splits = tiny
    cfg = TuneConfig(lrs=[0.01, 0.1], weight_decays=[0.0, 1e-4], trials=2, epochs=1, max_steps=1, batch_size=32)
    full = run_tune(arch, splits, cfg, tmp_path / "full", progress=False)
    assert [(t["lr"], t["weight_decay"]) for t in full] == trial_order(cfg)
    assert all(0 <= t["val_acc"] <= 1 and t["diverged"] is False for t in full)
    assert (tmp_path / "full" / "tune.png").stat().st_size > 1000

    real, calls = hwnas.train.train_model, []

    def interrupted(*args, **kwargs):
        calls.append(kwargs["lr"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(hwnas.train, "train_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_tune(arch, splits, cfg, tmp_path / "cut", progress=False)
    assert len(read_trials(tmp_path / "cut" / "trials.jsonl")) == 1
    monkeypatch.setattr(hwnas.train, "train_model", real)
    resumed = run_tune(arch, splits, cfg, tmp_path / "cut", resume=True, progress=False)
    strip = lambda ts: [(t["lr"], t["weight_decay"], t["val_acc"]) for t in ts]  # noqa: E731
    assert strip(resumed) == strip(full)

    other = TuneConfig(lrs=[0.01, 0.1], weight_decays=[0.0, 1e-4], trials=2, epochs=1, max_steps=1, batch_size=32,
                       seed=1)
    with pytest.raises(HwnasError, match="seed"):
        run_tune(arch, splits, other, tmp_path / "cut", resume=True, progress=False)


def test_diverged_trial_is_recorded_not_fatal(tiny, tmp_path, monkeypatch):
    arch, splits = tiny
    real = hwnas.train.train_model

    def nan_loss(*args, **kwargs):  # a real (1-step) training whose losses we then mark non-finite
        result = real(*args, **kwargs)
        result.val_loss = result.train_loss = float("nan")
        return result

    monkeypatch.setattr(hwnas.train, "train_model", nan_loss)
    cfg = TuneConfig(lrs=[10.0], weight_decays=[0.0], epochs=1, max_steps=1, batch_size=32)
    (trial,) = run_tune(arch, splits, cfg, tmp_path, progress=False)
    assert trial["diverged"] is True and trial["val_loss"] is None
    json.loads((tmp_path / "trials.jsonl").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the log"))


def test_cli_tune_prints_best_and_reports_bad_grid(tiny, tmp_path, capsys):
    arch, _ = tiny
    arch_file = tmp_path / "arch.json"
    arch.save(arch_file)
    assert main(["tune", str(arch_file), "--lr-grid", "0.01,x", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hwnas: error: learning-rate grid") and "'x' is not a number" in err
    assert err.count("\n") == 1
    assert main(["tune", str(arch_file), "--lr-grid", "0.05", "--wd-grid", "0,1e-4", "--trials", "5",
                 "--out", str(tmp_path / "t")]) == 2
    assert "between 1 and the grid size 2" in capsys.readouterr().err
    assert main(["tune", str(arch_file), "--lr-grid", "0.05", "--wd-grid", "1e-4", "--epochs", "1",
                 "--max-steps", "1", "--limit-train", "64", "--limit-val", "32", "--no-progress",
                 "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "best trial 0: lr 0.05, weight decay 0.0001" in out
