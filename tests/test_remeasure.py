"""tools/remeasure_interleaved.py: re-times one runtime's rows in rounds, keeps everything else, resumes."""

import importlib.util
import json
import random
from pathlib import Path

from hwnas.arch import sample_architecture
from hwnas.latency_data import (
    ModelRow, OpRow, append_model_row, append_op_row, describe_this_device, read_model_rows, read_op_rows, write_device,
)
from hwnas.ops import OpSpec
from hwnas.spaces import get_space

TOOL = Path(__file__).resolve().parents[1] / "tools" / "remeasure_interleaved.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("remeasure_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_remeasure_rewrites_one_runtime_in_rounds_and_resumes(tmp_path):
    space = get_space("proxyless-tiny", {"resolution": 16, "stages": [[24, 1, 2]], "head_channels": 32})
    arch = sample_architecture(space, random.Random(0))
    arch_file = tmp_path / "arch.json"
    arch.save(arch_file)
    data = tmp_path / "data"
    write_device(data / "dev.device.json", describe_this_device("dev"))
    ops = [OpSpec("conv", 3, 16, 16, 16, kernel=3), OpSpec("mbconv", 16, 24, 16, 16, kernel=5, stride=2, expand=3)]
    other = OpRow(ops[0], "tflite", "fp32", 1, 9.0, 0.1, 5, 100)  # another runtime: must stay as it is
    append_op_row(data / "dev.csv", other)
    for op in ops:
        append_op_row(data / "dev.csv", OpRow(op, "onnxruntime", "fp32", 1, 9.0, 0.1, 5, 100))
    append_model_row(data / "dev-models.csv", ModelRow(str(arch_file), space.name, tuple(arch.choices),
                                                       "onnxruntime", "fp32", 1, 9.0, 0.1, 5))
    cache = tmp_path / "cache"
    args = ["--device", "dev", "--runtime", "onnxruntime", "--rounds", "2", "--data", str(data),
            "--cache", str(cache)]

    assert load_tool().main(args) == 0
    rows = read_op_rows(data / "dev.csv")
    assert rows[0] == other
    assert [r.op for r in rows[1:]] == ops  # order kept
    assert all(r.repeats == 2 and 0 < r.median_ms < 9.0 for r in rows[1:])
    (model,) = read_model_rows(data / "dev-models.csv")
    assert model.repeats == 2 and 0 < model.median_ms < 9.0
    log = cache / "dev" / "onnxruntime-t1" / "rounds.jsonl"
    assert len(log.read_text().splitlines()) == 2 * 3  # 2 rounds x (2 operators + 1 model)

    # Interrupted mid-write: a torn last line. A second run with more rounds times only the missing round.
    with open(log, "a") as f:
        f.write('{"round": 2, "na')
    assert load_tool().main([*args[:5], "3", *args[6:]]) == 0
    lines = log.read_text().splitlines()
    assert lines[6] == '{"round": 2, "na'
    records = [json.loads(line) for line in lines[:6] + lines[7:]]
    assert len(records) == 3 * 3 and {r["round"] for r in records[6:]} == {2}
    assert all(r.repeats == 3 for r in read_op_rows(data / "dev.csv")[1:])

    # Fewer rounds than the log holds: only those rounds count, nothing is timed again.
    assert load_tool().main([*args[:5], "1", *args[6:]]) == 0
    assert len(log.read_text().splitlines()) == len(lines)
    assert all(r.repeats == 1 for r in read_op_rows(data / "dev.csv")[1:])
    assert read_model_rows(data / "dev-models.csv")[0].repeats == 1


def test_remeasure_refuses_zero_rounds(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        load_tool().main(["--device", "dev", "--runtime", "tflite", "--rounds", "0", "--data", str(tmp_path)])
    assert exc.value.code == 2 and "--rounds must be at least 1" in capsys.readouterr().err


def test_remeasure_refuses_another_machines_table(tmp_path, capsys):
    data = tmp_path / "data"
    write_device(data / "dev.device.json", dict(describe_this_device("dev"), cpu="Other CPU 9000"))
    append_op_row(data / "dev.csv", OpRow(OpSpec("conv", 3, 16, 16, 16, kernel=3), "tflite", "fp32", 1, 9.0, 0.1, 5, 1))
    before = (data / "dev.csv").read_text()
    from hwnas.errors import HwnasError
    import pytest

    with pytest.raises(HwnasError, match="device description mismatch: stored cpu 'Other CPU 9000'"):
        load_tool().main(["--device", "dev", "--runtime", "tflite", "--data", str(data), "--cache", str(tmp_path)])
    assert (data / "dev.csv").read_text() == before
