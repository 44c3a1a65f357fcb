"""What a new user hits first: help texts, progress bars in logs, space listing, dataset paths,
config overrides, errors under torchrun, table summaries from another folder, phone-fit output."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hwnas.cli import build_parser, main
from hwnas.errors import HwnasError
from hwnas.progress import progress_bar

ROOT = Path(__file__).resolve().parents[1]


def _subparsers(parser):
    """(name, parser) of every command and sub-action, depth first."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", p) for n, p in _subparsers(sub))


# -- help texts -------------------------------------------------------------------------------------
def test_every_file_named_in_help_exists():
    named = set()
    for _, sub in _subparsers(build_parser()):
        named.update(re.findall(r"\b((?:tools|docs|configs|benchmarks)/[\w./-]+\.\w+)", sub.format_help()))
    assert "tools/phone.py" in named
    assert [p for p in named if not (ROOT / p).exists()] == []


# -- progress bars ------------------------------------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_only_on_a_terminal_and_only_when_enabled():
    assert progress_bar(range(3), file=io.StringIO()).disable  # a log file or pipe: no bar
    assert not progress_bar(range(3), file=_Terminal()).disable
    assert progress_bar(range(3), file=_Terminal(), enabled=False).disable


def test_every_bar_goes_through_the_one_helper():
    files = [p for folder in ("hwnas", "tools", "benchmarks") for p in (ROOT / folder).rglob("*.py")]
    direct = [str(p.relative_to(ROOT)) for p in files
              if p.name != "progress.py" and re.search(r"^\s*(from tqdm|import tqdm)", p.read_text(), re.M)]
    assert direct == []


@pytest.mark.parametrize("command", ["profile --space proxyless-tiny", "measure", "fit", "search", "train a.json",
                                     "tune a.json", "run", "phones fit m.csv --out p.json"])
def test_commands_with_bars_take_no_progress(command):
    args = build_parser().parse_args([*command.split(), "--no-progress"])
    assert args.no_progress


# -- spaces -------------------------------------------------------------------------------------------
def test_space_list_and_show_include_the_cell_space(capsys):
    assert main(["space", "list"]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("darts-cell")]
    assert len(line) == 1 and "14 edges" in line[0] and "1.93e+25 architectures" in line[0]
    assert main(["space", "show", "--space", "darts-cell", "--set", "layers=5"]) == 0
    out = capsys.readouterr().out
    assert "darts-cell: 5 cells (reduction at [1, 3])" in out and "cell 4: normal" in out
    assert "edge candidates: zero, skip, sep_conv_3x3" in out
    assert main(["space", "show", "--space", "darts-cell", "--set", "layer=5"]) == 2
    assert "unknown darts-cell field(s): layer" in capsys.readouterr().err
    assert main(["space", "show", "--space", "nope"]) == 2
    assert "known: proxyless-mobile" in (err := capsys.readouterr().err) and "darts-cell" in err


# -- hwnas run: dataset path and --set -----------------------------------------------------------------
def test_run_checks_the_dataset_path_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--config", str(ROOT / "configs" / "cifar10.toml"), "--dataset", "no/such.tar.gz"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hwnas: error: --dataset no/such.tar.gz: dataset no/such.tar.gz does not exist")
    assert "--dataset PATH" in err and len(err.splitlines()) == 1
    config = tmp_path / "c.toml"
    config.write_text('[data]\ndataset = "../shared/datasets/cifar10-train.tar.gz"\n')
    assert main(["run", "--config", str(config)]) == 2
    assert f"{config}: field 'data.dataset': dataset ../shared/datasets/" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing started


def test_shipped_configs_name_no_machine_path():
    for path in (ROOT / "configs").glob("*.toml"):
        assert "/work/" not in path.read_text(), path


def test_run_set_overrides_config_fields_and_checks_them():
    from hwnas.run_config import default_config, set_field

    cfg = default_config()
    set_field(cfg, "train.epochs=2")
    set_field(cfg, "export.quant=[\"fp32\"]")
    set_field(cfg, "latency.predictor=predictors/x.json")
    assert (cfg["train"]["epochs"], cfg["export"]["quant"], cfg["latency"]["predictor"]) == (
        2, ["fp32"], "predictors/x.json")
    with pytest.raises(HwnasError, match=r"--set train.epoch=2: unknown field 'train.epoch'; known: run.out"):
        set_field(cfg, "train.epoch=2")
    with pytest.raises(HwnasError, match=r"--set train.epochs=0: field 'train.epochs' must be a positive integer"):
        set_field(cfg, "train.epochs=0")
    with pytest.raises(HwnasError, match="expects SECTION.FIELD=VALUE"):
        set_field(cfg, "epochs=2")


# -- torchrun -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rank", [0, 1])
def test_a_rank_under_torchrun_ends_on_one_line(rank, tmp_path, monkeypatch, capsys):
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    assert main(["search", "--fast", "--budget-ms", "0.5", "--device", "cpu", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    line = "hwnas: error: budget 0.5 ms is below the fastest architecture of the space"
    assert (err.startswith(line) and len(err.strip().splitlines()) == 1) if rank == 0 else err == ""
    record = json.loads(error_file.read_text())["message"]
    assert record["message"].startswith(line) and record["extraInfo"]["py_callstack"] == record["message"]


# -- tools/summarize_tables.py ---------------------------------------------------------------------------
def test_summarize_tables_draws_both_plots_from_another_folder(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("summarize_tables", ROOT / "tools" / "summarize_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.chdir(tmp_path)  # architecture files in the models table are relative to the repository root
    assert module.main(["--device", "amd-epyc-2c", "--dir", str(ROOT / "latency_data"), "--plots", "plots"]) == 0
    out = capsys.readouterr().out
    assert "sum of operator rows vs whole model, proxyless-tiny tflite fp32: n=120" in out
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "amd-epyc-2c-int8-vs-fp32.png", "amd-epyc-2c-model-vs-sum.png"]


# -- hwnas phones fit: which settings belong to which fit -----------------------------------------------
def test_phone_settings_are_described_with_their_correction():
    from hwnas.phones import describe_settings

    assert describe_settings({"robust": True, "drift_block": 0, "features": ["position"], "alpha": 1000.0}) == \
        "huber loss, drift blocks off, correction position (alpha 1000)"
    assert describe_settings({"robust": False, "drift_block": 250, "features": [], "alpha": 0.0}) == \
        "squared loss, drift blocks 250, correction none"
    shipped = json.loads((ROOT / "predictors" / "phones" / "samsung_a50.json").read_text())["meta"]
    text = (ROOT / "docs" / "phones" / "results.md").read_text()
    assert f"samsung_a50: {describe_settings(shipped['evaluation']['settings'])}" in text  # the held-out fit's


def test_torchrun_failure_shows_the_hwnas_line_once_and_no_hwnas_traceback(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "hwnas",
           "search", "--fast", "--budget-ms", "0.5", "--device", "cpu", "--out", str(tmp_path / "s")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    out = proc.stdout + proc.stderr
    line = "hwnas: error: budget 0.5 ms is below the fastest architecture of the space"
    assert proc.returncode != 0 and out.count(line) == 3  # rank 0's line + the launcher's summary of both ranks
    assert out.count("exitcode  : 2") == 2  # both ranks exit with the usage code
    assert not re.search(r'File ".*/hwnas/', out)  # no traceback from hwnas code (torchrun adds its own summary)
