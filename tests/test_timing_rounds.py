"""Interleaved profiling (hwnas.timing_rounds, ``hwnas profile --rounds``): kill and resume, rows written once,
another machine's table refused, int8, the main job's new-machine path, and the report's verdicts."""

import json
import random
import signal
import statistics
import subprocess
import sys
import time

import pytest

from hwnas.cli import main
from hwnas.costs import total_cost
from hwnas.errors import HwnasError
from hwnas.latency_data import (
    OpRow, append_op_row, describe_this_device, read_model_rows, read_op_rows, write_device,
)
from hwnas.ops import OpSpec
from hwnas.pipeline import prepare_predictor
from hwnas.run_config import validate_config
from hwnas.run_report import format_report, recommend, verdict
from hwnas.predictors import load_predictor
from hwnas.profiler import calibration_archs, profiled_ops, sample_archs
from hwnas.spaces import get_space
from hwnas.timing_rounds import profile_interleaved, store_rows, summarize

PARAMS = {"stages": [[16, 2, 1]], "kernels": [3, 5], "expands": [1, 3], "head_channels": 32, "resolution": 16,
          "width_choices": [1.0]}
SMALL = ["--space", "proxyless-tiny"] + [a for k, v in PARAMS.items() for a in ("--set", f"{k}={json.dumps(v)}")]
FAST = ["--repeats", "1", "--no-progress"]


def small_space(**extra):
    return get_space("proxyless-tiny", dict(PARAMS, **extra))


def data_lines(path):
    return [line for line in path.read_text().splitlines()[1:] if line.strip()] if path.exists() else []


def test_interleaved_profile_killed_resumes_and_writes_rows_once(tmp_path):
    out, cache = tmp_path / "d" / "dev.csv", tmp_path / "cache"
    cmd = [sys.executable, "-m", "hwnas", "profile", *SMALL, "--runtime", "onnxruntime", *FAST, "--models", "3",
           "--rounds", "2", "--out", str(out), "--cache", str(cache)]
    log = cache / describe_this_device()["name"] / "onnxruntime-t1" / "rounds.jsonl"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while (not log.exists() or len(log.read_text().splitlines()) < 4) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert data_lines(out) == []  # rows only when every round is done
    timed_before = len(log.read_text().splitlines())
    with open(log, "a") as f:
        f.write('{"round": 1, "name": "op-fp')  # killed in the middle of a write

    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    n_files = len(profiled_ops(small_space())) + 3
    records = [json.loads(line) for line in log.read_text().splitlines() if line.endswith("}")]
    assert len(records) == 2 * n_files  # what the killed run timed is not timed again
    assert len({(r["round"], r["name"]) for r in records}) == 2 * n_files > timed_before
    ops, models = read_op_rows(out), read_model_rows(out.parent / "dev-models.csv")
    assert [r.op for r in ops] == profiled_ops(small_space())
    assert all(r.repeats == 2 and r.median_ms > 0 and r.runtime == "onnxruntime" for r in ops + models)
    assert len(models) == len({m.arch_file for m in models}) == 3
    assert f"{out}: {len(ops)} rows added, 0 replaced, 0 unchanged" in result.stdout

    # The same command again times nothing and writes nothing.
    table, timed = out.read_text(), log.read_text()
    assert main(["profile", *SMALL, "--runtime", "onnxruntime", *FAST, "--models", "3", "--rounds", "2",
                 "--out", str(out), "--cache", str(cache)]) == 0
    assert out.read_text() == table and log.read_text() == timed
    # One more round: only that round is timed, and every row is replaced in place (repeats 3).
    assert main(["profile", *SMALL, "--runtime", "onnxruntime", *FAST, "--models", "3", "--rounds", "3",
                 "--out", str(out), "--cache", str(cache)]) == 0
    assert len(log.read_text().splitlines()) == len(timed.splitlines()) + n_files
    assert [r.op for r in read_op_rows(out)] == [r.op for r in ops]
    assert all(r.repeats == 3 for r in read_op_rows(out))


def test_store_rows_appends_new_replaces_changed_keeps_the_rest(tmp_path):
    path = tmp_path / "t.csv"
    a, b, c = (OpSpec("conv", 3, n, 16, 16, kernel=3) for n in (8, 16, 24))
    other = OpRow(a, "tflite", "fp32", 1, 1.0, 0.1, 5, 10)
    append_op_row(path, other)
    append_op_row(path, OpRow(b, "onnxruntime", "fp32", 1, 2.0, 0.1, 5, 10))
    new = [OpRow(b, "onnxruntime", "fp32", 1, 1.5, 0.0, 3, 10), OpRow(c, "onnxruntime", "fp32", 1, 0.5, 0.0, 3, 10)]
    assert store_rows(path, new, "op") == (1, 1, 0)
    assert read_op_rows(path) == [other, *new]  # replaced where it stood, the new one at the end
    text = path.read_text()
    assert store_rows(path, new, "op") == (0, 0, 2) and path.read_text() == text


def test_another_machines_table_or_cache_is_refused_before_any_work(tmp_path, capsys):
    space, out = small_space(), tmp_path / "dev.csv"
    from hwnas.runners import get_runner

    runner = get_runner("onnxruntime", 1)
    here = dict(describe_this_device("dev"), runners={"onnxruntime": runner.describe()})
    write_device(tmp_path / "dev.device.json", dict(here, cpu="Other CPU 9000"))
    with pytest.raises(HwnasError, match="device description mismatch: stored cpu 'Other CPU 9000'"):
        profile_interleaved(space, runner, here, "fp32", 2, 1, out, tmp_path / "dev-models.csv", tmp_path / "m",
                            tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "m").exists()

    (tmp_path / "dev.device.json").unlink()
    stamp = tmp_path / "cache" / "dev" / "onnxruntime-t1" / "runner.json"
    stamp.parent.mkdir(parents=True)
    stamp.write_text(json.dumps({"device": "dev", "cpu": "Other CPU 9000"}))
    args = ["profile", *SMALL, "--runtime", "onnxruntime", *FAST, "--rounds", "1", "--device", "dev", "--out",
            str(out), "--cache", str(tmp_path / "cache")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("hwnas: error: ") and "runner.json: the cached timings were taken with other settings" in err
    assert list(stamp.parent.iterdir()) == [stamp]  # nothing exported
    assert main(args[:-4] + ["--rounds", "0"]) == 2 and "--rounds must be at least 1" in capsys.readouterr().err
    assert main(args[:-4] + ["--models", "-1"]) == 2 and "--models must be 0 or more" in capsys.readouterr().err


def test_calibration_archs_spread_down_to_the_fastest():
    space = get_space("proxyless-tiny")
    archs = calibration_archs(space, 20, seed=0)
    assert len({a.to_dict()["choices"].__repr__() + repr(a.space_params) for a in archs}) == 20
    flops = [total_cost(a.ops()).flops for a in archs]
    uniform = [total_cost(a.ops()).flops for a in sample_archs(space, 200, 5)]
    assert flops[0] < min(uniform)  # the fastest architecture itself comes first
    assert archs[0].space.stage_widths == (1.0,) * 4 and "zero" in archs[0].choices
    assert sum(f < sorted(uniform)[20] for f in flops) >= 4  # several below the uniform 10th percentile
    assert len({tuple(a.space.stage_widths) for a in archs}) > 5  # stage widths vary too
    assert [a.to_dict() for a in calibration_archs(space, 20, seed=0)] == [a.to_dict() for a in archs]


def test_tflite_int8_interleaved_then_fit(tmp_path, converter):
    from hwnas.predictors.fit import fit_device
    from hwnas.runners import TimingPolicy, get_runner

    runner = get_runner("tflite", 1, TimingPolicy(repeats=1, warmup_ms=5, repeat_ms=5))
    device = dict(describe_this_device("dev"), runners={"tflite": runner.describe()})
    space = small_space()
    data = tmp_path / "data"
    result = profile_interleaved(space, runner, device, "int8", 2, 1, data / "dev.csv", data / "dev-models.csv",
                                 data / "models", tmp_path / "cache", limit=5, converter=converter, progress=False)
    assert [r.dtype for r in read_op_rows(data / "dev.csv")] == ["int8"] * 5
    assert [r.dtype for r in read_model_rows(data / "dev-models.csv")] == ["int8"] * 2 == \
        [r.dtype for r in result.model_rows]
    fitted = fit_device(data, "dev", "tflite", "int8", space=space.name, methods=["per-kind-linear"])
    assert fitted.lut.dtype == "int8" and fitted.n_op_rows == 5


def test_main_job_profiles_a_new_machine_interleaved(tmp_path):
    cfg = validate_config({
        "run": {"out": str(tmp_path / "run")}, "space": {"params": PARAMS},
        "latency": {"runtime": "onnxruntime", "reference_predictors": str(tmp_path / "none"),
                    "reference_latency_data": str(tmp_path / "none"), "profile_models": 4, "profile_rounds": 2}})
    lines = []
    path, loaded, chosen = prepare_predictor(cfg, small_space(), tmp_path / "run", lines.append, progress=False)
    assert chosen == "profiled and fitted on this machine"
    name = describe_this_device()["name"]
    data = tmp_path / "run" / "latency_data"
    ops, models = read_op_rows(data / f"{name}.csv"), read_model_rows(data / f"{name}-models.csv")
    assert len(ops) == len(profiled_ops(small_space())) and len(models) == 4
    assert all(r.repeats == 2 for r in ops + models)  # timed in the 2 interleaved rounds
    assert any("timed in 2 interleaved rounds" in line for line in lines)
    predictor = load_predictor(path)
    assert loaded.runtime == "onnxruntime" and loaded.device == predictor.device
    assert predictor.runtime == "onnxruntime" and predictor.covers(small_space().unique_ops())
    fit, held = predictor.overhead["models"], predictor.overhead["held_out"]
    assert sorted(fit + held) == sorted(m.arch_file for m in models)
    # Resumed: the predictor of this run is reused, nothing profiled again.
    again = []
    assert prepare_predictor(cfg, small_space(), tmp_path / "run", again.append)[0] == path
    assert not any("interleaved" in line for line in again)

    # Committed as this CPU's table: the next run times anchor models before it uses it ...
    import shutil

    refs = tmp_path / "refs"
    refs.mkdir()
    for f in path.parent.iterdir():
        shutil.copy(f, refs / f.name)
    cfg2 = validate_config({**cfg, "run": {"out": str(tmp_path / "run2")},
                            "latency": {**cfg["latency"], "reference_predictors": str(refs), "anchors": 3,
                                        "recognise_tolerance": 0.9}})
    log2 = []
    path2, _, chosen2 = prepare_predictor(cfg2, small_space(), tmp_path / "run2", log2.append, progress=False)
    assert path2 == refs / path.name and chosen2.startswith("recognised by timing 3 anchor models")
    record = json.loads((tmp_path / "run2" / "device_match.json").read_text())
    assert [f["name"] for f in record["fits"]] == [path.name] and len(record["anchors"]) == 3
    assert any("this machine is" in line for line in log2)
    kept = []
    assert prepare_predictor(cfg2, small_space(), tmp_path / "run2", kept.append)[0] == path2
    assert any("recognition kept" in line for line in kept)
    # ... and a machine whose anchors do not fit it (here: a tolerance nothing meets) is profiled as its own
    cfg3 = validate_config({**cfg2, "run": {"out": str(tmp_path / "run3")},
                            "latency": {**cfg2["latency"], "recognise_tolerance": 1e-9, "adapt_models": 0}})
    log3 = []
    path3, loaded3, chosen3 = prepare_predictor(cfg3, small_space(), tmp_path / "run3", log3.append, progress=False)
    assert chosen3 == "profiled and fitted on this machine" and path3.parent == tmp_path / "run3" / "predictor"
    assert any("tables are another machine's" in line for line in log3)
    assert loaded3.device["name"] == f"{name}-local"
    device = json.loads((tmp_path / "run3" / "latency_data" / f"{name}-local.device.json").read_text())
    assert [a["choices"] for a in device["fingerprint"]["anchors"]] == [a["choices"] for a in record["anchors"]]
    # ... or, when the nearest table is near, that table adapted to children timed here
    cfg4 = validate_config({**cfg2, "run": {"out": str(tmp_path / "run4")},
                            "latency": {**cfg2["latency"], "recognise_tolerance": 1e-9, "adapt_models": 5,
                                        "adapt_tolerance": 0.99}})
    log4 = []
    path4, loaded4, chosen4 = prepare_predictor(cfg4, small_space(), tmp_path / "run4", log4.append, progress=False)
    assert chosen4 == f"adapted from {path.name} to this machine with 5 children timed here"
    assert path4.parent == tmp_path / "run4" / "predictor" and loaded4.device["name"] == f"{name}-local"
    assert loaded4.overhead["adapt"]["models"] == 5 and loaded4.covers(small_space().unique_ops())
    assert prepare_predictor(cfg4, small_space(), tmp_path / "run4", [].append)[0] == path4  # resumed: kept


def test_report_judges_every_variant_and_recommends_from_measurements():
    rows = [{"quant": "fp32", "measured_ms": 1.03, "spread_ms": 0.01, "file": "m-fp32.tflite"},
            {"quant": "dynamic", "measured_ms": 1.24, "spread_ms": 0.01, "file": "m-dynamic.tflite"},
            {"quant": "int8", "measured_ms": 5.51, "spread_ms": 0.02, "file": "m-int8.tflite"}]
    assert [verdict(r["measured_ms"], 1.2) for r in rows] == ["within budget", "within +5%", "OVER budget"]
    assert recommend(rows, 1.2).startswith("fp32 (1.030 ms, the fastest within budget")
    assert recommend(rows, 1.0).startswith("none meets the 1.000 ms budget; the fastest, fp32, measured 1.030 ms")
    fast_int8 = [dict(rows[0]), dict(rows[2], measured_ms=0.6)]
    assert recommend(fast_int8, 1.2).startswith("int8 (0.600 ms")
    assert recommend(fast_int8, 1.2, failed={"int8"}).startswith("fp32")
    data = {
        "space": "proxyless-tiny", "dataset": "digits", "device": "here", "runtime": "tflite", "dtype": "fp32",
        "threads": 1, "budget_ms": 1.2, "budget_note": "from the config", "choices": ["k3_e3"],
        "predicted_ms": 1.0, "predictor": "p.json", "measured": rows, "val_acc": 0.9, "n_val": 10,
        "train_epochs": 1, "mflops": 1.0, "mparams": 0.1, "run_dir": "r", "seconds": {"train": 1.0},
        "total_seconds": 1.0, "export": [{"path": r["file"], "format": "tflite", "quant": r["quant"],
                                          "agreement": 1.0, "passed": True} for r in rows]}
    report = format_report(data)
    assert "fp32 1.030 ± 0.010 ms = 0.86x budget (within budget), dynamic 1.240 ± 0.010 ms = 1.03x budget " \
           "(within +5%), int8 5.510 ± 0.020 ms = 4.59x budget (OVER budget)" in report
    assert "recommended     fp32 (1.030 ms, the fastest within budget; others: dynamic 1.20x, int8 5.35x" in report
    assert "architecture    k3_e3\n" in report  # no stage widths: a fixed-width space
    assert "architecture    k3_e3, stage widths 1.25, 2\n" in format_report({**data, "stage_widths": [1.25, 2.0]})
    # the header names the device of the latency table used, and this machine when it is another one
    assert report.startswith("hwnas main job: proxyless-tiny on digits; latency on here (tflite fp32, 1 thread)\n")
    # rows measured in rounds give the fastest round and the rounds' median
    rounds = format_report({**data, "measured": [dict(rows[0], median_ms=1.31)]})
    assert "measured        fp32 1.030 (median 1.310) ms = 0.86x budget (within budget)\n" in rounds
    other = format_report({**data, "device": "amd-epyc-2c-b", "machine": "amd-epyc-2c"})
    assert other.startswith("hwnas main job: proxyless-tiny on digits; latency on amd-epyc-2c-b (tflite fp32, 1 "
                            "thread), measured on amd-epyc-2c\n")


def test_drift_correction_takes_out_the_machines_slow_moments():
    from hwnas.timing_rounds import Timing, file_latencies

    true = {f"f{i}": 0.1 * (i + 1) for i in range(60)}
    timings = []
    for r in range(3):
        order = sorted(true)
        random.Random(r).shuffle(order)
        for j, name in enumerate(order):
            # other jobs: the machine slows down by up to 15% during round 2 and recovers during round 3
            slow = {0: 1.0, 1: 1 + 0.15 * j / 59, 2: 1.15 - 0.15 * j / 59}[r]
            noise = 1 + 0.002 * ((j * 7 + r) % 5 - 2)
            timings.append(Timing(name, r, true[name] * slow * noise, 10))

    def err(latency):  # largest error of one file against the others (a common level cannot be told apart)
        ratios = [latency[n][0] / true[n] for n in true]
        return max(abs(q / statistics.median(ratios) - 1) for q in ratios)

    plain, corrected = file_latencies(timings, drift_window=0), file_latencies(timings)
    assert err(plain) > 0.07  # files timed late in round 2 and early in round 3: the plain median is slow
    assert err(corrected) < 0.035
    timings[5] = Timing(timings[5].name, 0, timings[5].median_ms * 1.5, 10)  # one disturbed timing stays local
    assert err(file_latencies(timings)) < 0.035


def test_spread_of_equal_rounds_is_never_negative():
    """Two rounds equal up to the last bit: the interpolated quartiles differ by -5.6e-17, which a latency file
    would refuse as a negative spread (CI met it once in the kill-and-resume test)."""
    median, spread = summarize([0.33333333333333337, 0.3333333333333333])
    assert spread == 0.0 and median == pytest.approx(1 / 3)


def test_a_round_log_set_aside_is_renamed_to_the_first_free_number(tmp_path):
    """``--retime`` (calibration, zoo) sets the round log aside so that every file is timed again; earlier
    logs are kept."""
    from hwnas.timing_rounds import set_aside

    log = tmp_path / "rounds-tflite.jsonl"
    assert set_aside(log) is None
    for text in ("first\n", "second\n"):
        log.write_text(text)
        set_aside(log)
    assert not log.exists()
    assert (tmp_path / "rounds-tflite.1.jsonl").read_text() == "first\n"
    assert (tmp_path / "rounds-tflite.2.jsonl").read_text() == "second\n"


def test_times_now_takes_each_rounds_fastest_repeat_and_the_latency_is_the_fastest_round(tmp_path):
    """A core's speed jumps between levels on a shared VM: the fastest repeat of a round and the fastest round
    are what a time taken now is made of; logs written before the field existed still read."""
    from hwnas.runners import latency_now
    from hwnas.timing_rounds import read_round_log

    log = tmp_path / "rounds.jsonl"
    log.write_text(json.dumps({"round": 0, "name": "a", "median_ms": 0.45, "iters": 9, "fastest_ms": 0.31}) + "\n"
                   + json.dumps({"round": 1, "name": "a", "median_ms": 0.33, "iters": 9}) + "\n")
    first, second = read_round_log(log, ["a"], 2)
    assert (first.median_ms, first.fastest_ms) == (0.45, 0.31) and second.fastest_ms is None
    assert latency_now([0.45, 0.305, 0.339, 0.424]) == 0.305
    with pytest.raises(ValueError, match="no rounds"):
        latency_now([])


def test_latencies_by_median_or_fastest_and_the_measurement_against_itself():
    from hwnas.timing_rounds import Timing, file_latencies, latencies_by, repeatability

    timings = []
    for r in range(4):  # "steady" repeats itself; "jumpy" reads 30% slower in the odd rounds
        timings.append(Timing("steady", r, 1.0 + 0.01 * r, 9, 0.98))
        timings.append(Timing("jumpy", r, 2.0 if r % 2 == 0 else 2.6, 9, 1.9 if r % 2 == 0 else 2.5))
    fastest = latencies_by(timings, "fastest")
    assert fastest == {"steady": 0.98, "jumpy": 1.9}
    assert latencies_by(timings, "median") == {n: v[0] for n, v in file_latencies(timings).items()}
    with pytest.raises(HwnasError, match="unknown timing statistic 'mean'"):
        latencies_by(timings, "mean")
    rep = repeatability(timings, ["steady", "jumpy"], "fastest")
    assert rep["files"] == 2 and rep["within"] == 0.5 and rep["median_gap"] == pytest.approx((1 - 1.9 / 2.5) / 2)
    with pytest.raises(HwnasError, match="at least two rounds"):
        repeatability([t for t in timings if t.round == 0], ["steady"])
