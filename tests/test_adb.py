"""adb runner: benchmark_model output parsing, command construction, device errors.

No phone is attached here: a small stand-in ``adb`` script records its arguments
and answers like adb does, so the real subprocess path is exercised.
"""

import json
import stat
import sys

import pytest

from hwnas.errors import HwnasError
from hwnas.runners.adb import Adb, AdbRunner, benchmark_command, parse_benchmark_output, parse_devices

NEW_FORM = """\
STARTING!
Log parameter values verbosely: [0]
Num threads: [1]
Graph: [/data/local/tmp/hwnas/op0.tflite]
#threads used for CPU inference: [1]
Loaded model /data/local/tmp/hwnas/op0.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
The input model file size (MB): 0.017024
Initialized session in 3.254ms.
Running benchmark for at least 10 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=1220123

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=21404 curr=20862 min=20648 max=22001 avg=20948.2 std=267

Inference timings in us: Init: 3254, First inference: 1.22012e+06, Warmup (avg): 1.22012e+06, Inference (avg): 20948.2
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your risk.
Memory footprint delta from the start of the tool (MB): init=2.94531 overall=10.3711
"""

OLD_FORM = """\
Initialized session in 4.731ms
Running benchmark for at least 1 iterations and at least 0.5 seconds
count=12 first=83235 curr=79011 min=78563 max=83235 avg=79422.4 std=1213

Running benchmark for at least 50 iterations and at least 1 seconds
count=50 first=79102 curr=79102 min=79102 max=79102 avg=79102.1 std=0

Average inference timings in us: Warmup: 83235, Init: 4731, Inference: 79102.1
"""

ALL_SAME = """\
Running benchmark for at least 3 iterations and at least 0.5 seconds
count=3 curr=512(all same)
"""


def test_parse_current_form():
    result = parse_benchmark_output(NEW_FORM)
    assert result.init_us == 3254 and result.first_us == 1.22012e06 and result.warmup_avg_us == 1.22012e06
    assert result.inference_avg_us == 20948.2 and result.inference_std_us == 267
    assert result.runs[0] == {"count": 1, "curr": 1220123.0, "first": 1220123.0, "min": 1220123.0,
                              "max": 1220123.0, "avg": 1220123.0, "std": 0.0}
    assert result.runs[1]["min"] == 20648 and result.runs[1]["count"] == 50


def test_parse_older_form():
    result = parse_benchmark_output(OLD_FORM)
    assert result.warmup_avg_us == 83235 and result.init_us == 4731 and result.inference_avg_us == 79102.1
    assert result.first_us is None and len(result.runs) == 2


def test_parse_all_same_line_without_summary():
    result = parse_benchmark_output(ALL_SAME)
    assert result.inference_avg_us == 512 and result.runs[0]["std"] == 0 and result.runs[0]["count"] == 3


@pytest.mark.parametrize("text", ["", "ERROR: Could not open '/data/local/tmp/x.tflite'.\nBenchmarking failed.\n"])
def test_parse_failure_is_a_clear_error(text):
    with pytest.raises(HwnasError, match="no inference timings"):
        parse_benchmark_output(text)


def test_benchmark_command_is_an_argument_list():
    assert benchmark_command("/data/local/tmp/bm", "/data/local/tmp/m.tflite", threads=4, num_runs=30,
                             warmup_runs=5) == [
        "/data/local/tmp/bm", "--graph=/data/local/tmp/m.tflite", "--num_threads=4", "--num_runs=30",
        "--warmup_runs=5"]
    cmd = benchmark_command("bm", "m.tflite", taskset="f0", use_xnnpack=False)
    assert cmd[:3] == ["taskset", "f0", "bm"] and cmd[-1] == "--use_xnnpack=false"
    assert Adb("adb", "R58M").command("shell", "ls") == ["adb", "-s", "R58M", "shell", "ls"]
    assert Adb().command("devices") == ["adb", "devices"]


def test_parse_devices():
    text = "List of devices attached\n* daemon started successfully\nR58M\tdevice\nemulator-5554\tunauthorized\n\n"
    assert parse_devices(text) == {"R58M": "device", "emulator-5554": "unauthorized"}


FAKE_ADB = """\
#!{python}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
if args and args[0] == "-s":
    args = args[2:]
if args == ["devices"]:
    print("List of devices attached")
    print(os.environ.get("FAKE_ADB_DEVICES", ""))
elif args[0] == "push":
    print("1 file pushed")
elif args[:2] == ["shell", "getprop"]:
    print({{"ro.product.model": "Pixel 7", "ro.soc.model": "Tensor G2", "ro.build.version.release": "14"}}
          .get(args[2], ""))
elif args[:2] == ["shell", "cat"]:
    print("processor\\t: 0\\nCPU part\\t: 0xd05\\nprocessor\\t: 1\\nCPU part\\t: 0xd44\\n")
elif args[0] == "shell" and any(a.startswith("--graph=") for a in args):
    if os.environ.get("FAKE_ADB_FAIL"):
        print("ERROR: Failed to load model"); sys.exit(1)
    print(os.environ["FAKE_ADB_OUTPUT"])
"""


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    path = tmp_path / "adb"
    path.write_text(FAKE_ADB.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "adb.log"
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_OUTPUT", NEW_FORM)

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return str(path), calls


def test_device_errors(fake_adb, monkeypatch, tmp_path):
    adb, _ = fake_adb
    with pytest.raises(HwnasError, match="adb not found"):
        Adb(str(tmp_path / "no-adb")).check()
    monkeypatch.setenv("FAKE_ADB_DEVICES", "")
    with pytest.raises(HwnasError, match="no Android device connected"):
        Adb(adb).check()
    monkeypatch.setenv("FAKE_ADB_DEVICES", "R58M\tunauthorized")
    with pytest.raises(HwnasError, match="R58M is unauthorized"):
        Adb(adb).check()
    monkeypatch.setenv("FAKE_ADB_DEVICES", "R58M\toffline")
    with pytest.raises(HwnasError, match="offline"):
        Adb(adb).check()
    monkeypatch.setenv("FAKE_ADB_DEVICES", "A\tdevice\nB\tdevice")
    with pytest.raises(HwnasError, match="choose one with --serial"):
        Adb(adb).check()
    assert Adb(adb, "B").check() == "B"
    with pytest.raises(HwnasError, match="C is not connected"):
        Adb(adb, "C").check()


def test_runner_pushes_runs_and_parses(fake_adb, monkeypatch, tmp_path):
    adb, calls = fake_adb
    monkeypatch.setenv("FAKE_ADB_DEVICES", "R58M\tdevice")
    client = Adb(adb)
    assert client.check() == "R58M"
    info = client.info()
    assert info["model"] == "Pixel 7" and info["cpu"] == "Tensor G2" and info["cores"] == 2
    assert info["cpu_parts"] == ["0xd05", "0xd44"] and info["os"] == "Android 14"
    model = tmp_path / "op0.tflite"
    model.write_bytes(b"x")
    runner = AdbRunner(threads=2, taskset="f0", repeats=3, num_runs=20, adb_client=client)
    timing = runner.time(model)
    assert timing.median_ms == pytest.approx(20.9482) and timing.spread_ms == 0 and timing.repeats == 3
    log = calls()
    assert ["-s", "R58M", "push", str(model), "/data/local/tmp/hwnas/op0.tflite"] in log
    runs = [c for c in log if "--graph=/data/local/tmp/hwnas/op0.tflite" in c]
    assert len(runs) == 3 and runs[0][:6] == ["-s", "R58M", "shell", "taskset", "f0",
                                              "/data/local/tmp/hwnas/benchmark_model"]
    assert "--num_threads=2" in runs[0] and "--num_runs=20" in runs[0]
    monkeypatch.setenv("FAKE_ADB_FAIL", "1")
    with pytest.raises(HwnasError, match="benchmark_model failed on the device.*Failed to load model"):
        runner.time(model)


def load_phone_tool():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "phone.py"
    spec = importlib.util.spec_from_file_location("phone_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_phone_tool_check_and_command_line(fake_adb, monkeypatch, capsys):
    adb, _ = fake_adb
    phone = load_phone_tool()
    monkeypatch.setenv("FAKE_ADB_DEVICES", "R58M\tdevice")
    assert phone.main(["--adb", adb, "check"]) == 0
    assert "Pixel 7, SoC Tensor G2, 2 cores" in capsys.readouterr().out
    monkeypatch.setenv("FAKE_ADB_DEVICES", "R58M\tunauthorized")
    assert phone.main(["--adb", adb, "check"]) == 2
    assert "unauthorized" in capsys.readouterr().err
    args = phone.build_parser().parse_args(["--serial", "R58M", "measure", "--space", "proxyless-tiny", "--archs",
                                            "5", "--taskset", "f0", "--set", "width_mult=0.5"])
    argv = phone.hwnas_argv(args, "measure")
    assert argv[:5] == ["measure", "--archs", "5", "--seed", "0"]
    assert argv[argv.index("--runtime") + 1] == "adb-tflite" and argv[argv.index("--taskset") + 1] == "f0"
    assert argv[argv.index("--set") + 1] == "width_mult=0.5" and argv[argv.index("--serial") + 1] == "R58M"
    from hwnas.cli import build_parser

    parsed = build_parser().parse_args(argv)  # hwnas accepts every option the tool passes
    assert parsed.runtime == "adb-tflite" and parsed.archs == 5
