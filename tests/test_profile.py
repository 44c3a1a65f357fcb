"""``hwnas profile`` / ``hwnas measure``: real runs on small spaces, kill and resume, bad inputs."""

import json
import signal
import subprocess
import sys
import time

from hwnas.cli import main
from hwnas.latency_data import read_device, read_model_rows, read_op_rows
from hwnas.profiler import profiled_ops
from hwnas.spaces import get_space

# A small proxyless space: 2 positions x 4 candidates (+ zero) -> a handful of operators.
SMALL = ["--space", "proxyless-tiny", "--set", "stages=[[16,2,1]]", "--set", "kernels=[3,5]",
         "--set", "expands=[1,3]", "--set", "head_channels=32", "--set", "resolution=16"]
FAST = ["--repeats", "2", "--no-progress"]


def small_space():
    return get_space("proxyless-tiny", {"stages": [[16, 2, 1]], "kernels": [3, 5], "expands": [1, 3],
                                        "head_channels": 32, "resolution": 16})


def profile_cmd(out, *extra):
    return [sys.executable, "-m", "hwnas", "profile", *SMALL, "--runtime", "onnxruntime", "--out", str(out),
            *FAST, *extra]


def data_rows(path):
    return [line for line in path.read_text().splitlines()[1:] if line.strip()] if path.exists() else []


def test_profile_killed_part_way_resumes_without_loss_or_duplicates(tmp_path):
    out = tmp_path / "dev.csv"
    proc = subprocess.Popen(profile_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(data_rows(out)) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = len(data_rows(out))
    with open(out, "a") as f:  # as if the kill had landed in the middle of a write
        f.write("mbconv:16x16x16->16:k5:s1:e3:g1:relu6,mbconv,16,16,1")
    subprocess.run(profile_cmd(out), check=True, capture_output=True)
    rows = read_op_rows(out)
    keys = [r.op.key() for r in rows]
    expected = [op.key() for op in profiled_ops(small_space())]
    assert len(keys) == len(set(keys)) == len(expected) > killed_at
    assert set(keys) == set(expected)
    assert all(r.runtime == "onnxruntime" and r.dtype == "fp32" and r.threads == 1 and r.median_ms > 0
               for r in rows)
    # A second complete run adds nothing; another thread count is a new set of rows.
    assert main(["profile", *SMALL, "--runtime", "onnxruntime", "--out", str(out), *FAST, "--limit", "2"]) == 0
    assert len(read_op_rows(out)) == len(expected)
    assert main(["profile", *SMALL, "--runtime", "onnxruntime", "--out", str(out), *FAST, "--limit", "2",
                 "--threads", "2"]) == 0
    assert len(read_op_rows(out)) == len(expected) + 2
    assert read_device(tmp_path / "dev.device.json")["runtimes"]["onnxruntime"]


def test_profile_tflite_int8_and_measure_archs(tmp_path, capsys):
    out = tmp_path / "dev.csv"
    assert main(["profile", *SMALL, "--runtime", "tflite", "--dtype", "int8", "--out", str(out), *FAST,
                 "--limit", "2"]) == 0
    rows = read_op_rows(out)
    assert [r.dtype for r in rows] == ["int8", "int8"] and rows[0].op == profiled_ops(small_space())[0]
    models = tmp_path / "models"
    args = ["measure", "--archs", "2", *SMALL, "--runtime", "onnxruntime", "--out", str(tmp_path / "dev-models.csv"),
            "--models-dir", str(models), *FAST, "--seed", "3"]
    assert main(args) == 0
    assert main(args) == 0
    assert "0 models measured, 2 already there" in capsys.readouterr().out
    mrows = read_model_rows(tmp_path / "dev-models.csv")
    assert len(mrows) == 2 and len({r.arch_file for r in mrows}) == 2
    for r in mrows:
        saved = json.loads(open(r.arch_file).read())
        assert saved["choices"] == list(r.choices) and saved["space"] == "proxyless-tiny"
    model = tmp_path / "m.onnx"
    from hwnas.export import export_onnx

    export_onnx(small_space().ops_for(list(mrows[0].choices)), None, model)
    assert main(["measure", str(model), *FAST]) == 0
    assert "ms median" in capsys.readouterr().out


def error_of(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("hwnas: error: ") and "Traceback" not in err
    return err


def test_bad_inputs(tmp_path, capsys):
    base = ["profile", "--runtime", "onnxruntime", *FAST]
    assert "unknown search space 'nope'" in error_of(capsys, [*base, "--space", "nope"])
    (tmp_path / "file").write_text("")
    assert f"{tmp_path / 'file'} is a file, not a folder" in error_of(capsys, [*base, *SMALL, "--out", str(tmp_path / "file" / "x.csv")])
    out = tmp_path / "dev.csv"
    assert main([*base, *SMALL, "--out", str(out), "--limit", "1"]) == 0
    out.write_text(out.read_text() + "garbage,row\n")
    assert "dev.csv, line 3: corrupted row" in error_of(capsys, [*base, *SMALL, "--out", str(out)])
    out.write_text("\n".join(out.read_text().splitlines()[:2]) + "\n")
    desc = json.loads((tmp_path / "dev.device.json").read_text())
    (tmp_path / "dev.device.json").write_text(json.dumps(dict(desc, cpu="Qualcomm Snapdragon 865")))
    assert "device description mismatch" in error_of(capsys, [*base, *SMALL, "--out", str(out)])
    (tmp_path / "dev.device.json").unlink()
    assert "no device description" in error_of(capsys, [*base, *SMALL, "--out", str(out)])
    assert "fp32 only" in error_of(capsys, [*base, *SMALL, "--out", str(tmp_path / "o.csv"), "--dtype", "int8"])
    assert "no such model file" in error_of(capsys, ["measure", str(tmp_path / "missing.onnx")])
    assert "expected a .tflite or .onnx" in error_of(capsys, ["measure", str(tmp_path / "file")])
    assert "--archs needs --space" in error_of(capsys, ["measure", "--archs", "3"])
