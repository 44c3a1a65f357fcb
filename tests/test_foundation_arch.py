"""Architecture files, the builder and the CLI for them."""

import json
import random
import subprocess
import sys

import pytest
import torch

from hwnas.arch import Architecture, sample_architecture
from hwnas.builder import build_model
from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.spaces import get_space


def _write(tmp_path, data, name="a.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_save_and_load_round_trip_keeps_overrides(tmp_path):
    space = get_space("proxyless-cifar", {"width_mult": 0.5})
    arch = sample_architecture(space, random.Random(0))
    arch.save(tmp_path / "x.json")
    loaded = Architecture.load(tmp_path / "x.json")
    assert loaded.choices == arch.choices
    assert loaded.space.params["width_mult"] == 0.5
    saved = json.loads((tmp_path / "x.json").read_text())["space_params"]
    assert saved["width_mult"] == 0.5
    # the sampled stage widths travel with the file (none when every stage is at width 1)
    assert saved.get("stage_widths") == arch.space.params["stage_widths"]
    assert loaded.space.stage_widths == arch.space.stage_widths
    assert [op.c_out for op in loaded.ops()] == [op.c_out for op in arch.ops()]


@pytest.mark.parametrize("content, message", [
    ('{"space": "proxyless-tiny", "choices": [', "bad JSON at line 1"),
    ('[1, 2]', "must be a JSON object"),
    ({"choices": []}, "missing field 'space'"),
    ({"space": "nope", "choices": []}, "unknown search space 'nope'"),
    ({"space": "proxyless-tiny", "choices": ["k3_e3"]}, "has 1 entries, space proxyless-tiny has 9"),
    ({"space": "proxyless-tiny", "choices": ["k9_e3"] + ["k3_e3"] * 8}, "choices\\[0\\]' is 'k9_e3'"),
    ({"space": "proxyless-tiny", "choices": ["zero"] + ["k3_e3"] * 8}, "not allowed at position 0"),
    ({"space": "proxyless-tiny", "choices": [3] * 9}, "choices\\[0\\]' must be a string"),
    ({"space": "proxyless-tiny", "choices": ["k3_e3"] * 9, "layers": 3}, "unknown field"),
    ({"space": "proxyless-tiny", "space_params": {"width": 2}, "choices": ["k3_e3"] * 9}, "unknown field 'width'"),
])
def test_bad_architecture_files_name_the_file_and_field(tmp_path, content, message):
    path = _write(tmp_path, content)
    with pytest.raises(HwnasError, match=message) as info:
        Architecture.load(path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(HwnasError, match="no such file"):
        Architecture.load(tmp_path / "absent.json")


def test_builder_has_exactly_the_chosen_blocks_and_runs():
    space = get_space("proxyless-tiny")
    choices = ["k3_e3"] + ["zero"] + ["k5_e6"] * 7
    arch = Architecture("proxyless-tiny", choices)
    arch.validate()
    model = build_model(arch).eval()
    # stem conv + fixed first block + 8 non-zero positions + head conv, pool, linear
    assert len(model) == 2 + 8 + 3
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert len(space.ops_for(choices)) == len(model)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_builder_runs_on_cuda():
    arch = sample_architecture(get_space("proxyless-tiny"), random.Random(0))
    model = build_model(arch).cuda().eval()
    assert model(torch.randn(1, 3, 32, 32, device="cuda")).shape == (1, 10)


def test_cli_sample_then_show(tmp_path, capsys):
    assert main(["arch", "sample", "--space", "fbnet-cifar100", "--n", "3", "--seed", "5",
                 "--out", str(tmp_path)]) == 0
    files = sorted(tmp_path.glob("*.json"))
    assert len(files) == 3
    capsys.readouterr()
    assert main(["arch", "show", str(files[0])]) == 0
    out = capsys.readouterr().out
    arch = Architecture.load(files[0])
    assert f"{arch.cost().params:9d}" in out.splitlines()[-2]


def test_cli_bad_input_exits_nonzero_without_traceback(tmp_path):
    bad = _write(tmp_path, {"space": "proxyless-tiny", "choices": ["k3_e3"]})
    proc = subprocess.run([sys.executable, "-m", "hwnas", "arch", "show", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert str(bad) in proc.stderr and "choices" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "hwnas", "arch", "sample", "--space", "nope"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown search space" in proc.stderr


def test_every_subcommand_has_help(capsys):
    from hwnas.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"space", "arch"} <= set(commands)
    for name in commands:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
