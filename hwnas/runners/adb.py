"""Android phone over adb: TFLite's ``benchmark_model`` run on the device.

* :class:`Adb` wraps the ``adb`` client (argument lists only, never a shell
  string on this side): :meth:`Adb.check` finds exactly one ready device
  (missing adb, no device, unauthorized/offline device -> HwnasError),
  :meth:`Adb.info` reads model, SoC and cores (getprop, /proc/cpuinfo),
  :meth:`Adb.push`, :meth:`Adb.shell`.
* :func:`benchmark_command` builds the ``adb shell`` arguments of one run:
  ``[taskset MASK] BINARY --graph=M --num_threads=T --num_runs=R --warmup_runs=W [delegate flag]``;
  ``delegate`` is one of :data:`DELEGATES` (benchmark_model's ``--use_xnnpack``,
  ``--use_gpu``, ``--use_nnapi``; ``cpu`` = plain builtin kernels, ``--use_xnnpack=false``).
* :func:`core_clusters` groups the cores by their maximum frequency (read by
  :meth:`Adb.info` from ``/sys/devices/system/cpu/cpuN/cpufreq/cpuinfo_max_freq``)
  and gives each cluster's taskset mask; :meth:`Adb.cpu_temperatures` reads the CPU
  thermal zones; :meth:`Adb.binary_version` names the benchmark_model binary (the label
  ``tools/phone.py setup --version`` left beside it and its SHA-256).
* :func:`parse_benchmark_output` reads benchmark_model's summary, in the
  current form ``Inference timings in us: Init: ..., First inference: ...,
  Warmup (avg): ..., Inference (avg): ...``, the older form ``Average
  inference timings in us: Warmup: ..., Init: ..., Inference: ...``, and the
  ``count=... first=... curr=... min=... max=... avg=... std=...`` lines
  (also ``count=1 curr=...`` and ``curr=...(all same)``).
* :class:`AdbRunner` pushes a .tflite file and runs benchmark_model
  ``repeats`` times; median and IQR of the per-run averages. Before each run it
  waits ``cooldown`` seconds and, with ``max_temp``, until the hottest CPU thermal
  zone is at or below that many degrees C.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnas.errors import HwnasError
from hwnas.runners.base import Runner, Timing

REMOTE_DIR = "/data/local/tmp/hwnas"
VERSION_SUFFIX = ".version"  # label file beside the binary, written by tools/phone.py setup
DELEGATES = ("default", "xnnpack", "gpu", "nnapi", "cpu")
_DELEGATE_FLAGS = {"default": [], "xnnpack": ["--use_xnnpack=true"], "gpu": ["--use_gpu=true"],
                   "nnapi": ["--use_nnapi=true"], "cpu": ["--use_xnnpack=false"]}
THERMAL_DIR = "/sys/class/thermal"
_CPU_ZONE = re.compile(r"cpu|big|mid|little", re.I)


def _sleep(seconds: float) -> None:
    """Waits of :meth:`AdbRunner.settle` (one name, so tests can record them)."""
    time.sleep(seconds)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass
class BenchmarkResult:
    """Parsed benchmark_model output; times in microseconds (None when absent)."""

    init_us: float | None = None
    first_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    runs: list[dict] = field(default_factory=list)  # each 'count=...' line as a dict

    @property
    def inference_std_us(self) -> float | None:
        return self.runs[-1].get("std") if self.runs else None


def parse_benchmark_output(text: str) -> BenchmarkResult:
    """Parse benchmark_model's output; HwnasError when it holds no inference timing."""
    result = BenchmarkResult()
    new = re.search(rf"Inference timings in us:\s*Init:\s*({_NUMBER}),\s*First inference:\s*({_NUMBER}),"
                    rf"\s*Warmup \(avg\):\s*({_NUMBER}),\s*Inference \(avg\):\s*({_NUMBER})", text)
    old = re.search(rf"Average inference timings in us:\s*Warmup:\s*({_NUMBER}),\s*Init:\s*({_NUMBER}),"
                    rf"\s*(?:no stats:\s*)?Inference:\s*({_NUMBER})", text)
    if new:
        result.init_us, result.first_us, result.warmup_avg_us, result.inference_avg_us = map(float, new.groups())
    elif old:
        result.warmup_avg_us, result.init_us, result.inference_avg_us = map(float, old.groups())
    for line in text.splitlines():
        match = re.search(r"count=(\d+)(.*)", line)
        if not match:
            continue
        stats: dict = {"count": int(match.group(1))}
        for key, value in re.findall(rf"(first|curr|min|max|avg|std)=({_NUMBER})", match.group(2)):
            stats[key] = float(value)
        if "(all same)" in line or ("curr" in stats and "avg" not in stats):
            for key in ("first", "min", "max", "avg"):
                stats.setdefault(key, stats.get("curr"))
            stats.setdefault("std", 0.0)
        result.runs.append(stats)
    if result.inference_avg_us is None and result.runs and result.runs[-1].get("avg") is not None:
        result.inference_avg_us = result.runs[-1]["avg"]
    if result.inference_avg_us is None:
        tail = " | ".join(line.strip() for line in text.strip().splitlines()[-3:])
        raise HwnasError(f"benchmark_model printed no inference timings: {tail or '(no output)'}")
    return result


def benchmark_command(binary: str, graph: str, threads: int = 1, num_runs: int = 50, warmup_runs: int = 10,
                      taskset: str | None = None, use_xnnpack: bool | None = None,
                      delegate: str = "default") -> list[str]:
    """The arguments after ``adb shell`` for one benchmark_model run (``use_xnnpack`` False/True is
    the older spelling of ``delegate`` "cpu"/"xnnpack")."""
    if use_xnnpack is not None:
        delegate = "xnnpack" if use_xnnpack else "cpu"
    if delegate not in DELEGATES:
        raise HwnasError(f"unknown delegate {delegate!r}; known: {', '.join(DELEGATES)}")
    cmd = ["taskset", taskset] if taskset else []
    cmd += [binary, f"--graph={graph}", f"--num_threads={threads}", f"--num_runs={num_runs}",
            f"--warmup_runs={warmup_runs}", *_DELEGATE_FLAGS[delegate]]
    return cmd


def core_clusters(max_khz: list[int | None]) -> list[dict]:
    """Cores grouped by maximum frequency, slowest cluster first, each with its taskset mask
    (hex, bit i = core i): ``[{"cores": [0, 1, 2, 3], "max_mhz": 1800, "mask": "0f"}, ...]``.
    Cores whose frequency could not be read are left out."""
    by_freq: dict[int, list[int]] = {}
    for core, khz in enumerate(max_khz):
        if khz:
            by_freq.setdefault(khz, []).append(core)
    width = max(1, (len(max_khz) + 3) // 4)
    return [{"cores": cores, "max_mhz": round(khz / 1000), "mask": format(sum(1 << c for c in cores), f"0{width}x")}
            for khz, cores in sorted(by_freq.items())]


def describe_clusters(clusters: list[dict]) -> str:
    """``cpu0-3 1800 MHz (mask 0f), cpu4-6 2500 MHz (mask 70), cpu7 3000 MHz (mask 80)``."""
    def span(cores: list[int]) -> str:
        contiguous = cores == list(range(cores[0], cores[-1] + 1))
        return (f"cpu{cores[0]}-{cores[-1]}" if contiguous and len(cores) > 1
                else "cpu" + ",".join(map(str, cores)))

    return ", ".join(f"{span(c['cores'])} {c['max_mhz']} MHz (mask {c['mask']})" for c in clusters)


class Adb:
    """The adb client for one device (``serial`` or the only one attached)."""

    def __init__(self, adb: str = "adb", serial: str | None = None, timeout: float = 300):
        self.adb = adb
        self.serial = serial
        self.timeout = timeout

    def command(self, *args: str) -> list[str]:
        """The full argument list of an adb call."""
        return [self.adb, *(["-s", self.serial] if self.serial else []), *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        if shutil.which(self.adb) is None and not Path(self.adb).is_file():
            raise HwnasError(f"adb not found ({self.adb!r}): install Android platform-tools or pass --adb PATH")
        try:
            proc = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise HwnasError(f"adb {' '.join(args[:2])} timed out after {self.timeout:.0f} s") from None
        except OSError as exc:
            raise HwnasError(f"cannot run adb ({self.adb!r}): {exc.strerror or exc}") from None
        if check and proc.returncode != 0:
            message = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
            raise HwnasError(f"adb {' '.join(args[:2])} failed (code {proc.returncode}): "
                             f"{message[-1] if message else 'no output'}")
        return proc

    def check(self) -> str:
        """The serial of the one ready device; clear errors otherwise."""
        out = self.run("devices").stdout if not self.serial else Adb(self.adb).run("devices").stdout
        states = parse_devices(out)
        if self.serial:
            if self.serial not in states:
                raise HwnasError(f"device {self.serial} is not connected (adb devices lists: "
                                 f"{', '.join(states) or 'none'})")
            states = {self.serial: states[self.serial]}
        if not states:
            raise HwnasError("no Android device connected (adb devices lists none): plug the phone in and "
                             "enable USB debugging")
        for serial, state in states.items():
            if state == "unauthorized":
                raise HwnasError(f"device {serial} is unauthorized: unlock the phone and accept the USB "
                                 "debugging prompt")
            if state != "device":
                raise HwnasError(f"device {serial} is {state}, not ready: reconnect it")
        if len(states) > 1:
            raise HwnasError(f"{len(states)} devices connected ({', '.join(states)}): choose one with --serial")
        self.serial = next(iter(states))
        return self.serial

    def shell(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("shell", *args, check=check)

    def push(self, local: str | Path, remote: str) -> None:
        self.run("push", str(local), remote)

    def read(self, path: str) -> str | None:
        """A file on the phone (``cat``), or None when it cannot be read."""
        proc = self.shell("cat", path, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def max_frequencies(self, cores: int) -> list[int | None]:
        """Each core's maximum frequency in kHz (None where cpufreq is not readable)."""
        values = []
        for core in range(cores):
            text = self.read(f"/sys/devices/system/cpu/cpu{core}/cpufreq/cpuinfo_max_freq")
            values.append(int(text) if text and text.isdigit() else None)
        return values

    def cpu_temperatures(self) -> dict[str, float]:
        """Degrees C of the CPU thermal zones (every zone when none is named like a CPU one);
        empty when the phone exposes none."""
        if not hasattr(self, "_zones"):
            listing = self.shell("ls", THERMAL_DIR, check=False).stdout.split()
            zones = {z: self.read(f"{THERMAL_DIR}/{z}/type") or z for z in listing if z.startswith("thermal_zone")}
            cpu = {z: t for z, t in zones.items() if _CPU_ZONE.search(t)}
            self._zones = cpu or zones
        temps = {}
        for zone, kind in self._zones.items():
            text = self.read(f"{THERMAL_DIR}/{zone}/temp")
            try:
                value = float(text)
            except (TypeError, ValueError):
                continue
            temps[kind] = value / 1000 if abs(value) > 1000 else value  # millidegrees on most phones
        return temps

    def binary_version(self, binary: str) -> str:
        """What names the benchmark_model build: the label ``tools/phone.py setup --version`` left
        in ``BINARY.version`` and the first 16 hex digits of its SHA-256 (benchmark_model has no
        version flag)."""
        label = self.read(binary + VERSION_SUFFIX)
        proc = self.shell("sha256sum", binary, check=False)
        digest = proc.stdout.split()[0] if proc.returncode == 0 and proc.stdout.split() else ""
        parts = [label or "unlabelled"]
        if re.fullmatch(r"[0-9a-f]{64}", digest):
            parts.append(f"sha256 {digest[:16]}")
        return ", ".join(parts)

    def info(self) -> dict:
        """Device description in the latency_data format (model, SoC, cores and their clusters,
        Android version)."""

        def prop(name: str) -> str:
            return self.shell("getprop", name).stdout.strip()

        cpuinfo = self.shell("cat", "/proc/cpuinfo").stdout
        cores = len(re.findall(r"^processor\s*:", cpuinfo, flags=re.M))
        hardware = re.search(r"^Hardware\s*:\s*(.+)$", cpuinfo, flags=re.M)
        parts = sorted(set(re.findall(r"^CPU part\s*:\s*(\S+)", cpuinfo, flags=re.M)))
        model = prop("ro.product.model")
        soc = prop("ro.soc.model") or prop("ro.board.platform") or (hardware.group(1).strip() if hardware else "")
        slug = re.sub(r"[^a-z0-9]+", "-", f"{model} {soc}".lower()).strip("-") or "android"
        return {
            "name": slug, "cpu": soc or "unknown", "cores": cores, "model": model,
            "manufacturer": prop("ro.product.manufacturer"), "abi": prop("ro.product.cpu.abi"),
            "cpu_parts": parts, "clusters": core_clusters(self.max_frequencies(cores)),
            "os": f"Android {prop('ro.build.version.release')}", "runtimes": {},
        }


def parse_devices(text: str) -> dict[str, str]:
    """``adb devices`` output -> {serial: state}."""
    states = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith(("List of devices", "*")):
            continue
        parts = line.split()
        if len(parts) >= 2:
            states[parts[0]] = parts[1]
    return states


class AdbRunner(Runner):
    """Times .tflite files on the phone with benchmark_model."""

    name = "adb-tflite"
    suffix = ".tflite"
    clock = "device"  # benchmark_model's own timing on the phone

    def __init__(self, threads: int = 1, binary: str = f"{REMOTE_DIR}/benchmark_model", adb: str = "adb",
                 serial: str | None = None, taskset: str | None = None, num_runs: int = 50,
                 warmup_runs: int = 10, repeats: int = 3, use_xnnpack: bool | None = None, adb_client=None,
                 delegate: str = "default", cooldown: float = 0.0, max_temp: float | None = None,
                 max_wait: float = 600.0):
        super().__init__(threads)
        if use_xnnpack is not None:
            delegate = "xnnpack" if use_xnnpack else "cpu"
        if delegate not in DELEGATES:
            raise HwnasError(f"unknown delegate {delegate!r}; known: {', '.join(DELEGATES)}")
        if cooldown < 0 or (max_temp is not None and max_temp <= 0):
            raise HwnasError("--cooldown must be >= 0 seconds and --max-temp a positive number of degrees C")
        self.binary, self.taskset, self.delegate = binary, taskset, delegate
        self.num_runs, self.warmup_runs, self.repeats = num_runs, warmup_runs, repeats
        self.cooldown, self.max_temp, self.max_wait = cooldown, max_temp, max_wait
        self.adb = adb_client or Adb(adb, serial)

    def settle(self) -> None:
        """Wait before a run: ``cooldown`` seconds, then (with ``max_temp``) until the hottest CPU zone
        is at or below it, polling every 5 s for at most ``max_wait`` seconds."""
        if self.cooldown:
            _sleep(self.cooldown)
        if self.max_temp is None:
            return
        waited = 0.0
        while True:
            temps = self.adb.cpu_temperatures()
            if not temps:
                raise HwnasError("--max-temp: the phone exposes no readable thermal zone "
                                 f"({THERMAL_DIR}/thermal_zone*/temp); use --cooldown alone")
            hottest = max(temps.values())
            if hottest <= self.max_temp:
                return
            if waited >= self.max_wait:
                raise HwnasError(f"the phone stayed above --max-temp {self.max_temp:g} C for {self.max_wait:.0f} s "
                                 f"(hottest CPU zone {hottest:.1f} C): let it cool, raise --max-temp, or use "
                                 "--cooldown")
            _sleep(5.0)
            waited += 5.0

    def run_once(self, remote_model: str) -> BenchmarkResult:
        self.settle()
        cmd = benchmark_command(self.binary, remote_model, self.threads, self.num_runs, self.warmup_runs,
                                self.taskset, delegate=self.delegate)
        proc = self.adb.shell(*cmd, check=False)
        text = proc.stdout + "\n" + proc.stderr
        if proc.returncode != 0:
            tail = " | ".join(line.strip() for line in text.strip().splitlines()[-2:])
            raise HwnasError(f"benchmark_model failed on the device (code {proc.returncode}): {tail}")
        return parse_benchmark_output(text)

    def time(self, model_path: str | Path) -> Timing:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise HwnasError(f"{model_path}: no such model file")
        remote = f"{REMOTE_DIR}/{model_path.name}"
        self.adb.push(model_path, remote)
        try:
            avgs = [self.run_once(remote).inference_avg_us / 1000.0 for _ in range(self.repeats)]
        finally:
            self.adb.shell("rm", "-f", remote, check=False)
        q1, q2, q3 = np.percentile(avgs, [25, 50, 75])
        return Timing(float(q2), float(q3 - q1), self.repeats, self.num_runs, avgs)

    def describe(self) -> dict:
        return {"runtime": self.name, "threads": self.threads, "binary": self.binary, "taskset": self.taskset,
                "delegate": self.delegate}
