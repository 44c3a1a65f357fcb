"""adb runner: benchmark_model output parsing, command construction, device errors.

No phone is attached here: a small stand-in ``adb`` script records its arguments
and answers like adb does, so the real subprocess path is exercised.
"""

import hashlib
import json
import stat
import sys

import pytest

from hwnas.errors import HwnasError
from hwnas.runners.adb import (DELEGATES, Adb, AdbRunner, benchmark_command, core_clusters, parse_benchmark_output,
                               parse_devices)

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
import hashlib, json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as f:
    f.write(json.dumps(args) + "\\n")
if args and args[0] == "-s":
    args = args[2:]
state_path = os.environ["FAKE_ADB_LOG"] + ".state"
state = json.load(open(state_path)) if os.path.exists(state_path) else {{}}
files = {{"/proc/cpuinfo": "processor\\t: 0\\nCPU part\\t: 0xd05\\nprocessor\\t: 1\\nCPU part\\t: 0xd44\\n",
         **json.loads(os.environ.get("FAKE_ADB_FILES", "{{}}")), **state.get("files", {{}})}}
if args == ["devices"]:
    print("List of devices attached")
    print(os.environ.get("FAKE_ADB_DEVICES", ""))
elif args[0] == "push":
    data = open(args[1], "rb").read()
    state.setdefault("files", {{}})[args[2]] = data.decode("utf-8", "replace").strip()
    state.setdefault("sha", {{}})[args[2]] = hashlib.sha256(data).hexdigest()
    json.dump(state, open(state_path, "w"))
    print("1 file pushed")
elif args[:2] == ["shell", "getprop"]:
    print({{"ro.product.model": "Pixel 7", "ro.soc.model": "Tensor G2", "ro.build.version.release": "14"}}
          .get(args[2], ""))
elif args[:2] == ["shell", "cat"]:
    if args[2] not in files:
        print("cat: " + args[2] + ": No such file or directory", file=sys.stderr); sys.exit(1)
    print(files[args[2]])
elif args[:2] == ["shell", "ls"]:
    prefix = args[2].rstrip("/") + "/"
    print("\\n".join(sorted({{p[len(prefix):].split("/")[0] for p in files if p.startswith(prefix)}})))
elif args[:2] == ["shell", "sha256sum"]:
    if args[2] not in state.get("sha", {{}}):
        print("sha256sum: " + args[2] + ": No such file", file=sys.stderr); sys.exit(1)
    print(state["sha"][args[2]] + "  " + args[2])
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


# -- delegates, core clusters, thermal waits, the binary's version ---------------------------------
def test_benchmark_command_delegate_flags():
    flags = {d: benchmark_command("bm", "m.tflite", delegate=d)[5:] for d in DELEGATES}
    assert flags == {"default": [], "xnnpack": ["--use_xnnpack=true"], "gpu": ["--use_gpu=true"],
                     "nnapi": ["--use_nnapi=true"], "cpu": ["--use_xnnpack=false"]}
    with pytest.raises(HwnasError, match="unknown delegate 'dsp'"):
        benchmark_command("bm", "m.tflite", delegate="dsp")


@pytest.mark.parametrize("mhz, masks", [
    ([2016] * 3 + [2803] * 4 + [3187], ["07", "78", "80"]),  # Snapdragon 8 Gen 2: 3 little, 4 big, 1 prime
    ([1803] * 4 + [2348] * 2 + [2850] * 2, ["0f", "30", "c0"]),  # Tensor G2: 4 + 2 + 2
    ([1690] * 4 + [2314] * 4, ["0f", "f0"]),  # Exynos 9610 (Galaxy A50): 4 + 4
])
def test_core_clusters_give_taskset_masks(mhz, masks):
    clusters = core_clusters([m * 1000 for m in mhz])
    assert [c["mask"] for c in clusters] == masks
    assert [c["max_mhz"] for c in clusters] == sorted(set(mhz))
    assert core_clusters([1800000, None, 1800000]) == [{"cores": [0, 2], "max_mhz": 1800, "mask": "5"}]


EIGHT_CORES = {"/proc/cpuinfo": "".join(f"processor\t: {i}\nCPU part\t: 0xd46\n" for i in range(8)),
               **{f"/sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_max_freq": str(khz) for i, khz in
                  enumerate([1785600] * 4 + [2419200] * 3 + [2841600])},
               **{f"/sys/devices/system/cpu/cpu{i}/cpufreq/scaling_governor": "schedutil" for i in range(8)},
               "/sys/class/thermal/thermal_zone0/type": "battery", "/sys/class/thermal/thermal_zone0/temp": "30000",
               "/sys/class/thermal/thermal_zone1/type": "cpu-1-0-usr", "/sys/class/thermal/thermal_zone1/temp": "41500",
               "/sys/class/thermal/thermal_zone2/type": "cpu-1-1-usr", "/sys/class/thermal/thermal_zone2/temp": "47000"}


def test_phone_check_names_clusters_masks_governors_and_temperatures(fake_adb, monkeypatch, capsys):
    adb, _ = fake_adb
    monkeypatch.setenv("FAKE_ADB_DEVICES", "R58M\tdevice")
    monkeypatch.setenv("FAKE_ADB_FILES", json.dumps(EIGHT_CORES))
    assert load_phone_tool().main(["--adb", adb, "check"]) == 0
    out = capsys.readouterr().out
    assert "8 cores" in out
    assert "cpu0-3 1786 MHz (mask 0f), cpu4-6 2419 MHz (mask 70), cpu7 2842 MHz (mask 80)" in out
    assert "fastest cluster (1 core(s)): --taskset 80" in out and "all but the little cores: --taskset f0" in out
    assert "middle (big) cluster: --taskset 70" in out and "mask 70 schedutil" in out
    assert "cpu-1-0-usr 41.5 C, cpu-1-1-usr 47.0 C" in out and "battery" not in out


def test_runner_cools_down_and_waits_for_temperature(fake_adb, monkeypatch, tmp_path):
    adb, calls = fake_adb
    monkeypatch.setenv("FAKE_ADB_DEVICES", "R58M\tdevice")
    monkeypatch.setenv("FAKE_ADB_FILES", json.dumps(EIGHT_CORES))
    sleeps = []
    monkeypatch.setattr("hwnas.runners.adb._sleep", sleeps.append)
    model = tmp_path / "op0.tflite"
    model.write_bytes(b"x")
    runner = AdbRunner(repeats=3, cooldown=2.0, max_temp=50, adb_client=Adb(adb))
    runner.time(model)
    assert sleeps == [2.0, 2.0, 2.0]  # before every run; 47 C is below 50 C, so no extra wait
    sleeps.clear()
    hot = AdbRunner(repeats=1, max_temp=45, max_wait=10, adb_client=Adb(adb))
    with pytest.raises(HwnasError, match=r"stayed above --max-temp 45 C for 10 s \(hottest CPU zone 47.0 C\)"):
        hot.time(model)
    assert sleeps == [5.0, 5.0]
    assert len([c for c in calls() if "--graph=/data/local/tmp/hwnas/op0.tflite" in c]) == 3  # the hot one never ran
    with pytest.raises(HwnasError, match="--cooldown must be >= 0"):
        AdbRunner(cooldown=-1, adb_client=Adb(adb))


def test_setup_records_the_binary_version_and_profile_records_version_and_delegate(fake_adb, monkeypatch,
                                                                                     tmp_path, capsys):
    adb, calls = fake_adb
    monkeypatch.setenv("FAKE_ADB_DEVICES", "R58M\tdevice")
    binary = tmp_path / "android_aarch64_benchmark_model"
    binary.write_bytes(b"\x7fELF fake benchmark_model")
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()[:16]
    phone = load_phone_tool()
    assert phone.main(["--adb", adb, "setup", "--binary", str(binary), "--version", "nightly 2026-11-30"]) == 0
    assert f"recorded as: nightly 2026-11-30, sha256 {digest}" in capsys.readouterr().out
    assert ["-s", "R58M", "shell", "chmod", "755", "/data/local/tmp/hwnas/benchmark_model"] in calls()

    from hwnas.cli import build_parser
    from hwnas.cli.profile import runner_and_device

    args = build_parser().parse_args(["profile", "--space", "proxyless-tiny", "--runtime", "adb-tflite", "--adb", adb,
                                      "--delegate", "gpu", "--taskset", "80", "--cooldown", "1"])
    runner, device = runner_and_device(args)
    assert device["runtimes"] == {"adb-tflite": f"nightly 2026-11-30, sha256 {digest}"}
    assert device["runners"]["adb-tflite"]["delegate"] == "gpu" and runner.cooldown == 1.0
    args = build_parser().parse_args(["profile", "--space", "proxyless-tiny", "--runtime", "adb-tflite", "--adb", adb,
                                      "--no-xnnpack", "--delegate", "gpu"])
    with pytest.raises(HwnasError, match="--no-xnnpack contradicts --delegate gpu"):
        runner_and_device(args)
    args = phone.build_parser().parse_args(["profile", "--space", "proxyless-tiny", "--delegate", "nnapi",
                                            "--cooldown", "3", "--max-temp", "42"])
    argv = phone.hwnas_argv(args, "profile")
    parsed = build_parser().parse_args(argv)
    assert (parsed.delegate, parsed.cooldown, parsed.max_temp) == ("nnapi", 3.0, 42.0)
