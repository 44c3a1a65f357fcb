"""The shared latency CSV formats: round trips, crash tails, corrupted rows, device files."""

import json

import pytest

from hwnas.errors import HwnasError
from hwnas.latency_data import (
    ModelRow, OpRow, append_model_row, append_op_row, check_same_device, describe_this_device,
    default_device_name, device_file, read_device, read_model_rows, read_op_rows, write_device,
)
from hwnas.ops import OpSpec

OP = OpSpec("mbconv", 16, 24, 32, 32, kernel=5, stride=2, expand=6)


def row(op=OP, ms=0.25):
    return OpRow(op, "tflite", "fp32", 1, ms, 0.01, 5, 100)


def test_op_rows_round_trip(tmp_path):
    path = tmp_path / "dev.csv"
    append_op_row(path, row())
    append_op_row(path, row(OpSpec("skip", 24, 32, 16, 16, stride=2, act="relu"), 0.5))
    lines = path.read_text().splitlines()
    assert lines[0].startswith("op_key,kind,c_in") and len(lines) == 3
    rows = read_op_rows(path)
    assert rows[0] == row() and rows[1].op.kind == "skip" and rows[1].median_ms == 0.5
    assert rows[0].key == (OP.key(), "tflite", "fp32", 1)


def test_model_rows_round_trip(tmp_path):
    path = tmp_path / "dev-models.csv"
    m = ModelRow("latency_data/models/s/a.json", "proxyless-tiny", ("k3_e6", "zero"), "onnxruntime", "fp32", 1,
                 1.5, 0.1, 5)
    append_model_row(path, m)
    assert read_model_rows(path) == [m]
    assert device_file(path) == tmp_path / "dev.device.json"
    assert device_file(tmp_path / "dev.csv") == tmp_path / "dev.device.json"


def test_unterminated_tail_is_ignored_then_repaired(tmp_path):
    path = tmp_path / "dev.csv"
    append_op_row(path, row())
    with open(path, "a") as f:
        f.write(row().to_record()["op_key"] + ",mbconv,16,24")  # a row cut short by a crash
    with pytest.warns(UserWarning, match="incomplete"):
        assert len(read_op_rows(path)) == 1
    other = OpSpec("skip", 24, 32, 16, 16, stride=2, act="relu")
    with pytest.warns(UserWarning, match="removed"):
        append_op_row(path, row(other, ms=0.3))
    assert [r.median_ms for r in read_op_rows(path)] == [0.25, 0.3]


@pytest.mark.parametrize("mutate, message", [
    (lambda v: v.__setitem__(2, "abc"), "c_in"),
    (lambda v: v.__setitem__(11, "coreml"), "runtime"),
    (lambda v: v.__setitem__(14, "-1"), "median_ms"),
    (lambda v: v.__setitem__(0, "conv:1x1x1->1:k1:s1:e1:g1:relu"), "op_key"),
    (lambda v: v.pop(), "columns"),
])
def test_corrupted_row_names_file_and_line(tmp_path, mutate, message):
    path = tmp_path / "dev.csv"
    append_op_row(path, row())
    append_op_row(path, row())
    lines = path.read_text().splitlines()
    values = lines[2].split(",")
    mutate(values)
    lines[2] = ",".join(values)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(HwnasError, match=rf"dev\.csv, line 3: corrupted row.*{message}"):
        read_op_rows(path)


def test_repeated_rows_exact_copy_counts_once_conflict_is_refused(tmp_path):
    """Issue 15 case 3: a second row of the same measurement (an edited or merged table)."""
    path = tmp_path / "dev.csv"
    append_op_row(path, row())
    append_op_row(path, row(OpSpec("skip", 24, 32, 16, 16, stride=2, act="relu"), 0.5))
    append_op_row(path, row())  # the same line again
    with pytest.warns(UserWarning, match=r"dev\.csv, line 4: repeats line 2 .*counted once"):
        assert [r.median_ms for r in read_op_rows(path)] == [0.25, 0.5]
    append_op_row(path, row(ms=5.0))  # the same operator with another value
    with pytest.warns(UserWarning), pytest.raises(
            HwnasError, match=rf"dev\.csv, lines 2 and 5: operator {OP.key()} measured twice for tflite fp32 "
                              r"1 thread\(s\) with different values \(0\.25 ms and 5 ms\)"):
        read_op_rows(path)
    models = tmp_path / "dev-models.csv"
    m = ModelRow("a.json", "proxyless-tiny", ("k3_e6",), "tflite", "fp32", 1, 1.5, 0.1, 5)
    append_model_row(models, m)
    append_model_row(models, m)
    with pytest.warns(UserWarning, match="model a.json.*counted once"):
        assert read_model_rows(models) == [m]  # counted once, not twice
    append_model_row(models, ModelRow("a.json", "proxyless-tiny", ("k3_e6",), "tflite", "fp32", 1, 9.0, 0.1, 5))
    with pytest.warns(UserWarning), pytest.raises(HwnasError, match="lines 2 and 4: model a.json measured twice"):
        read_model_rows(models)


def test_bad_header_and_missing_file(tmp_path):
    path = tmp_path / "dev.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(HwnasError, match="line 1: header"):
        read_op_rows(path)
    with pytest.raises(HwnasError, match="no such latency file"):
        read_op_rows(tmp_path / "nope.csv")


def test_device_description(tmp_path):
    desc = describe_this_device()
    assert desc["name"] == default_device_name() and desc["cores"] >= 1
    assert "onnxruntime" in desc["runtimes"] and "tflite" in desc["runtimes"]
    write_device(tmp_path / "d.device.json", desc)
    assert read_device(tmp_path / "d.device.json") == json.loads(json.dumps(desc))
    check_same_device(desc, desc, "tflite", "x")
    other = dict(desc, cpu="Snapdragon 865")
    with pytest.raises(HwnasError, match="mismatch.*cpu"):
        check_same_device(other, desc, "tflite", "x")
    if "vector_isa" in desc:  # Linux: same CPU string, another instruction set (AVX-512 vs AVX2) is another device
        assert desc["vector_isa"] in ("avx512", "avx2", "avx", "sse4.2", "sve", "neon")
        wider = dict(desc, vector_isa="avx512" if desc["vector_isa"] != "avx512" else "avx2")
        with pytest.raises(HwnasError, match="mismatch: stored vector_isa"):
            check_same_device(wider, desc, "tflite", "x")
        check_same_device({k: v for k, v in desc.items() if k != "vector_isa"}, desc, "tflite", "x")  # older file
    old = dict(desc, runtimes={"tflite": "0.0.1"})
    with pytest.raises(HwnasError, match="mismatch.*tflite"):
        check_same_device(old, desc, "tflite", "x")
    check_same_device(old, desc, "onnxruntime", "x")  # only the runtime being profiled matters
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(HwnasError, match="bad JSON"):
        read_device(tmp_path / "bad.json")
