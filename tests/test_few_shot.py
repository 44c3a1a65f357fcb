"""Few-shot predictors for a new device (hwnas.predictors.few_shot, ``hwnas phones adapt``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from hwnas.cli import main
from hwnas.errors import HwnasError
from hwnas.predictors import load_predictor
from hwnas.predictors.whole_model import Encoding
from hwnas.predictors.few_shot import (MIN_SAMPLES, adapt, criterion, load_sources, recency_weights, stage_scales,
                                       weighted_quantile, weights)
from hwnas.spaces import get_space

ROOT = Path(__file__).resolve().parents[1]
PHONES = ROOT / "predictors/phones"
SPACE = get_space("fbnet-cifar100")
TARGET = ("pixel3", "raspi4")  # the synthetic new device mixes these two; they are left out of the sources


def _random_choices(n: int, seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [[pos.names[rng.integers(len(pos.names))] for pos in SPACE.positions] for _ in range(n)]


def _truth(choices) -> np.ndarray:
    """An exact-sum device: 1.3 x (0.6 pixel3 + 0.4 raspi4) + 0.5 ms."""
    a, b = (load_predictor(PHONES / f"{name}.json") for name in TARGET)
    return 1.3 * (0.6 * a.predict_many_choices(choices) + 0.4 * b.predict_many_choices(choices)) + 0.5


def _sources(tmp_path: Path) -> Path:
    folder = tmp_path / "sources"
    folder.mkdir()
    for f in PHONES.glob("*.json"):
        if f.stem not in TARGET:
            (folder / f.name).write_text(f.read_text())
    return folder


def _samples_csv(path: Path, choices, ms, column="newdev_ms") -> Path:
    lines = [f"arch_id,ops,{column}"] + [f"{i},{' '.join(c)},{v:.4f}" for i, (c, v) in enumerate(zip(choices, ms))]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_adapt_recovers_a_device_mixed_from_known_tables_from_ten_samples():
    sources = {n: load_predictor(PHONES / f"{n}.json") for n in ("samsung_a50", "gold_6226", "pixel2")}
    sources.update({n: load_predictor(PHONES / f"{n}.json") for n in TARGET})
    train, test = _random_choices(10, 1), _random_choices(300, 2)
    pred = adapt(SPACE, sources, train, _truth(train), {"name": "newdev"})
    y, p = _truth(test), pred.predict_many_choices(test)
    assert spearmanr(p, y)[0] > 0.99
    assert np.mean(np.abs(p / y - 1) <= 0.05) > 0.95
    shares = pred.meta["few_shot"]["shares"]
    assert shares["pixel3"] + shares["raspi4"] > 0.7  # the mix found the two tables it was made of
    assert min(pred.entries.values()) >= 0


def test_adapt_without_the_true_sources_still_ranks_well(tmp_path):
    sources = load_sources(_sources(tmp_path), "fbnet-cifar100")
    assert not set(TARGET) & set(sources) and len(sources) == 5
    train, test = _random_choices(20, 3), _random_choices(300, 4)
    pred = adapt(SPACE, sources, train, _truth(train), {"name": "newdev"})
    assert spearmanr(pred.predict_many_choices(test), _truth(test))[0] > 0.9


def test_weighted_quantile_and_recency_weights():
    assert weighted_quantile(np.array([3.0, 1.0, 2.0]), np.ones(3), 0.5) == pytest.approx(2.0)
    assert weighted_quantile(np.array([1.0, 2.0]), np.array([3.0, 1.0]), 0.5) < 1.5  # pulled toward the heavy one
    assert weighted_quantile(np.array([1.0, 2.0]), np.array([1.0, 3.0]), 0.5) > 1.5
    w = recency_weights(5, 1.0)
    assert w[-1] == pytest.approx(1.0) and w[0] == pytest.approx(np.exp(-1.0)) and np.all(np.diff(w) > 0)
    assert recency_weights(5, 0.5)[0] == pytest.approx(np.exp(-2.0))
    assert np.array_equal(recency_weights(5, None), np.ones(5))


def test_weighted_quantile_varies_less_than_one_order_statistic():
    """Harrell-Davis: from 20 samples, the 0.35 quantile of a unit normal (-0.385) with a smaller spread over draws
    than numpy's interpolated order statistics, and near it with recency weights too."""
    draws = np.random.default_rng(0).standard_normal((400, 20))
    ours = np.array([weighted_quantile(d, np.ones(20), 0.35) for d in draws])
    plain = np.quantile(draws, 0.35, axis=1)
    assert ours.mean() == pytest.approx(-0.385, abs=0.03)
    assert ours.std() < 0.95 * plain.std()
    recent = np.array([weighted_quantile(d, recency_weights(20, 0.5), 0.35) for d in draws])
    assert recent.mean() == pytest.approx(-0.385, abs=0.05)


def test_adapt_level_follows_the_latest_samples_of_a_drifting_device():
    """The same device measured 10% slower in the second half of its samples: the level leans to the latest
    runs, the ranking is the same."""
    sources = {n: load_predictor(PHONES / f"{n}.json") for n in ("samsung_a50", "gold_6226", "pixel2") + TARGET}
    train, test = _random_choices(20, 21), _random_choices(200, 22)
    drift = np.where(np.arange(20) < 10, 1.0, 1.1)
    from hwnas.predictors.few_shot import combine, fit_trials
    fitted = fit_trials(SPACE, sources, train, _truth(train) * drift)
    level = {r: float(np.median(combine(fitted, {"name": "x"}, recency=r).predict_many_choices(test) / _truth(test)))
             for r in (None, 1.0, 0.25)}
    assert level[None] < level[1.0] < level[0.25]
    assert level[0.25] == pytest.approx(1.1, abs=0.03)  # nearly the latest level
    assert combine(fitted, {"name": "x"}, recency=0.25).meta["few_shot"]["recency"] == 0.25
    reversed_order = fit_trials(SPACE, sources, train[::-1], (_truth(train) * drift)[::-1])
    late_first = combine(reversed_order, {"name": "x"}, recency=0.25).predict_many_choices(test) / _truth(test)
    assert float(np.median(late_first)) < level[None] - 0.01  # now the 1.0x runs are the latest


def test_stage_scales_recover_exact_scales_and_shrink_noise():
    rng = np.random.default_rng(0)
    parts = rng.uniform(0.5, 2.0, (50, 7))
    base = parts.sum(axis=1) + 1.0
    truth = np.array([0.0, 0.0, 0.0, 0.5, 0.0, 0.0, -0.3])
    level, r, noise = stage_scales(base + parts @ truth, base, parts, prior=0.2)
    assert np.abs(r - truth).max() < 0.03 and level == pytest.approx(1.0, abs=0.03) and noise < 0.005
    level, r, noise = stage_scales(base * (1 + 0.1 * rng.standard_normal(50)), base, parts, prior=0.2)
    assert 0.05 < noise < 0.2 and np.abs(r).max() < 0.2  # 10% noise: chosen as such, the scales stay small


def _late_stage_truth(choices) -> np.ndarray:
    """Pixel 3's table with its last stage (stage 6, one 352-channel layer) 1.6x as dear: an exact sum that no
    source mix has."""
    pred = load_predictor(PHONES / "pixel3.json")
    enc = Encoding(SPACE)
    entries = np.array([pred.entries.get(k, 0.0) for k in enc.keys])
    parts = enc.stage_sums(enc.indices(choices), entries)
    return pred.predict_many_choices(choices) + 0.6 * parts[:, enc.stages.index(6)]


def test_adapt_rescales_a_stage_the_sources_price_otherwise():
    from hwnas.predictors.few_shot import combine, fit_trials
    sources = {n: load_predictor(PHONES / f"{n}.json") for n in ("pixel2", "samsung_a50", "samsung_s7", "pixel3")}
    train, test = _random_choices(10, 31), _random_choices(300, 32)
    fitted = fit_trials(SPACE, sources, train, _late_stage_truth(train))
    y = _late_stage_truth(test)
    off, on = (combine(fitted, {"name": "x"}, stage_prior=p) for p in (0.0, 0.2))
    rho_on, rho_off = (spearmanr(p.predict_many_choices(test), y)[0] for p in (on, off))
    assert rho_on > rho_off + 0.005
    scales = on.meta["few_shot"]["stage_scales"]
    assert scales["scales"]["6"] > 1.15 and scales["noise"] < 0.05  # 1.25 when written
    assert off.meta["few_shot"]["stage_scales"] == {}


def _arithmetic_truth(choices) -> np.ndarray:
    """A device unlike every source mix: its time follows each stage's multiply-adds (later stages dearer)."""
    from hwnas.predictors.features import FEATURE_NAMES, op_features
    flops = FEATURE_NAMES.index("flops")
    return np.array([0.3 + sum(op_features(op)[flops] * 1e-6 * (1 + 0.3 * pos.stage)
                               for pos, name in zip(SPACE.positions, c) for op in [pos.ops[pos.names.index(name)]])
                     for c in choices])


def test_adapt_follows_a_device_whose_time_is_its_arithmetic():
    sources = {n: load_predictor(PHONES / f"{n}.json") for n in ("pixel2", "samsung_a50", "samsung_s7", "pixel3")}
    train, test = _random_choices(20, 11), _random_choices(300, 12)
    y = _arithmetic_truth(test)
    pred = adapt(SPACE, sources, train, _arithmetic_truth(train), {"name": "x"})
    few = pred.meta["few_shot"]
    assert few["base"] == "structure" or few["deviations"]  # not the plain mix of the phones
    assert spearmanr(pred.predict_many_choices(test), y)[0] > 0.97
    assert np.mean(np.abs(pred.predict_many_choices(test) / y - 1) <= 0.10) > 0.95


def _grouped_truth(choices) -> np.ndarray:
    """Pixel 3's table plus 1.5 ms per grouped layer: dearer although it has fewer multiply-adds, so no
    non-negative structural pseudo-source can carry it, only a deviation term."""
    grouped = np.array([sum(name.endswith("_g2") for name in c) for c in choices])
    return load_predictor(PHONES / "pixel3.json").predict_many_choices(choices) + 1.5 * grouped


def test_adapt_adds_a_deviation_that_the_samples_earn_and_weighs_the_fits():
    sources = {n: load_predictor(PHONES / f"{n}.json") for n in ("pixel2", "samsung_a50", "samsung_s7", "pixel3")}
    train, test = _random_choices(20, 11), _random_choices(300, 12)
    y = _grouped_truth(test)
    no_deviation = adapt(SPACE, sources, train, _grouped_truth(train), {"name": "x"}, deviation_cost=1e9)
    pred = adapt(SPACE, sources, train, _grouped_truth(train), {"name": "x"})
    few = pred.meta["few_shot"]
    assert "grouped_layers" in few["deviations"] and few["members"][0]["deviations"] == few["deviations"]
    assert not any(m["deviations"] for m in no_deviation.meta["few_shot"]["members"])
    assert sum(m["weight"] for m in few["members"]) == pytest.approx(1.0, abs=1e-3)
    within = lambda p: np.mean(np.abs(p.predict_many_choices(test) / y - 1) <= 0.05)
    assert within(pred) > within(no_deviation) + 0.1


def _per_channel_truth(choices) -> np.ndarray:
    """Pixel 3's table plus a cost per expanded channel, whatever the layer's spatial size (the Xeon Gold 6226
    of ../shared/phones behaves so: 1-2 ms for an e1 block, 10-26 ms for an e6 one in any stage)."""
    from hwnas.predictors.features import FEATURE_NAMES, op_features
    mid = FEATURE_NAMES.index("mid")
    extra = np.array([sum(op_features(op)[mid] * 0.002 for pos, name in zip(SPACE.positions, c)
                          for op in [pos.ops[pos.names.index(name)]]) for c in choices])
    return load_predictor(PHONES / "pixel3.json").predict_many_choices(choices) + extra


def test_adapt_follows_a_device_whose_time_is_its_expanded_channels_from_ten_samples():
    sources = {n: load_predictor(PHONES / f"{n}.json") for n in ("pixel2", "samsung_a50", "samsung_s7", "pixel3")}
    from hwnas.predictors.few_shot import combine, fit_trials
    train, test = _random_choices(10, 21), _random_choices(300, 22)
    y = _per_channel_truth(test)
    fitted = fit_trials(SPACE, sources, train, _per_channel_truth(train))
    pred = combine(fitted, {"name": "x"}, stage_prior=0.0)  # the weighted fits alone, no stage scales
    few = pred.meta["few_shot"]
    mix = [t for t in few["trials"] if t["base"] == "mix" and not t["deviations"]]
    # a per-channel term carries the extra cost, which no mix of the sources has: the "mid" deviation on the
    # mix, or the structure base's per-channel pseudo-source
    assert "mid" in few["deviations"] or (few["base"] == "structure" and few["structure"]["mid"] > 0.1)
    assert few["loo_criterion"] < 0.5 * min(t["loo_criterion"] for t in mix)
    assert spearmanr(pred.predict_many_choices(test), y)[0] > 0.98
    assert np.mean(np.abs(pred.predict_many_choices(test) / y - 1) <= 0.05) > 0.9
    # the default stage scales bend the stages to fit a misfit of another kind here (docs/phones.md): the
    # ranking stays, the share within +-5% drops (0.91 -> 0.80 with the Harrell-Davis level)
    rescaled = combine(fitted, {"name": "x"})
    assert spearmanr(rescaled.predict_many_choices(test), y)[0] > 0.98


def test_at_ten_samples_no_family_has_more_coefficients_than_one_per_two_samples():
    sources = {n: load_predictor(PHONES / f"{n}.json") for n in ("pixel2", "samsung_a50", "samsung_s7", "pixel3")}
    train = _random_choices(10, 13)
    tried = lambda p: {d for t in p.meta["few_shot"]["trials"] for d in t["deviations"]}
    capped = adapt(SPACE, sources, train, _arithmetic_truth(train), {"name": "x"}, per_coefficient=2)
    free = adapt(SPACE, sources, train, _arithmetic_truth(train), {"name": "x"}, per_coefficient=0)
    groups = {"stage_scales", "flops_per_stage"}  # 7 columns each: 1 + 7 > 10 / 2
    assert groups <= tried(free) and not groups & tried(capped)
    assert "stage6" in tried(capped) and capped.meta["few_shot"]["per_coefficient"] == 2


def test_selection_criteria_judge_the_leave_one_out_predictions():
    y = np.array([10.0, 20.0, 30.0, 40.0])
    assert criterion(1.1 * y, y, "error") == pytest.approx(0.1)
    assert criterion(1.1 * y, y, "shape") == pytest.approx(0.0)  # a common factor: the level, set afterwards
    assert criterion(np.array([10.0, 20.0, 30.0, 44.0]), y, "shape") > 0
    swapped = np.array([20.0, 10.0, 30.0, 40.0])  # 1 of the 6 pairs in the wrong order
    assert criterion(swapped, y, "pairs") == pytest.approx(1 / 6 + 0.01 * criterion(swapped, y, "error"))
    with pytest.raises(HwnasError, match="unknown few-shot selection criterion 'rank'"):
        criterion(y, y, "rank")


@pytest.mark.parametrize("kind", ["shape", "pairs"])
def test_adapt_with_another_criterion_records_it_and_still_recovers_a_mixed_device(kind):
    sources = {n: load_predictor(PHONES / f"{n}.json") for n in ("samsung_a50", "gold_6226", "pixel2") + TARGET}
    train, test = _random_choices(10, 1), _random_choices(300, 2)
    pred = adapt(SPACE, sources, train, _truth(train), {"name": "newdev"}, criterion_kind=kind)
    few = pred.meta["few_shot"]
    assert few["criterion"] == kind and all("loo_criterion" in t for t in few["trials"])
    assert spearmanr(pred.predict_many_choices(test), _truth(test))[0] > 0.99


def test_weights_favour_a_lower_leave_one_out_criterion_and_charge_each_deviation():
    trial = lambda loo, deviations=(), base="mix": {"loo_criterion": loo, "deviations": list(deviations), "base": base,
                                                     "loo_mean_abs_rel_error": loo}
    w = weights([trial(0.10), trial(0.11), trial(0.10, ["mid"]), trial(None)], tau=0.1, deviation_cost=2.0)
    assert w.sum() == pytest.approx(1.0) and w[3] == 0.0
    assert w[1] / w[0] == pytest.approx(np.exp(-1.0))  # 10% worse than the best, tau 0.1: 1/e as much
    assert w[2] / w[0] == pytest.approx(np.exp(-2.0))  # as good, but one deviation
    # a deviation that cuts the criterion by 60% outweighs its cost; below 1e-4 of the total a trial is dropped
    w = weights([trial(0.10), trial(0.04, ["stage6"])], tau=0.1, deviation_cost=4.0)
    assert w[1] > 0.99 and w[0] == 0.0


def test_a_trial_refused_by_the_shares_rule_weighs_nothing_and_the_file_still_saves(tmp_path):
    from hwnas.predictors.few_shot import combine, fit_trials
    sources = {n: load_predictor(PHONES / f"{n}.json") for n in ("samsung_a50", "pixel2") + TARGET}
    train = _random_choices(10, 1)
    fitted = fit_trials(SPACE, sources, train, _truth(train))
    keys = ("base", "deviations", "alpha_w", "alpha_s", "alpha_d")
    heaviest = {k: combine(fitted, {"name": "x"}).meta["few_shot"]["members"][0][k] for k in keys}
    best = next(i for i, t in enumerate(fitted.trials) if {k: t[k] for k in keys} == heaviest)
    fitted.trials[best]["loo_criterion"] = None  # as if its shares summed to less than 0.2
    pred = combine(fitted, {"name": "x"})
    assert heaviest not in [{k: m[k] for k in keys} for m in pred.meta["few_shot"]["members"]]
    pred.save(tmp_path / "x.json")  # JSON has no infinity: a refused trial is written as null
    assert load_predictor(tmp_path / "x.json").meta["few_shot"]["trials"][best]["loo_criterion"] is None


def test_adapt_refuses_fewer_samples_than_it_needs():
    sources = {"pixel2": load_predictor(PHONES / "pixel2.json")}
    train = _random_choices(MIN_SAMPLES - 1, 5)
    with pytest.raises(HwnasError, match=f"{MIN_SAMPLES - 1} measured architectures; .* needs at least {MIN_SAMPLES}"):
        adapt(SPACE, sources, train, _truth(train), {"name": "x"})


def test_cli_adapt_writes_a_loadable_file_that_states_samples_and_sources(tmp_path, capsys):
    choices = _random_choices(12, 6)
    samples = _samples_csv(tmp_path / "s.csv", choices, _truth(choices))
    out = tmp_path / "predictors" / "newdev.json"
    assert main(["phones", "adapt", str(samples), "--sources", str(_sources(tmp_path)), "--out", str(out)]) == 0
    assert "adapted from 12 samples" in capsys.readouterr().out
    data = json.loads(out.read_text())  # plain JSON, nothing executable
    assert data["type"] == "whole_model" and data["device"]["name"] == "newdev"
    few = data["meta"]["few_shot"]
    assert few["samples"] == 12 and sorted(few["sources"]) == ["essential_ph_1", "gold_6226", "pixel2",
                                                                 "samsung_a50", "samsung_s7"]
    loaded = load_predictor(out, space="fbnet-cifar100")
    test = _random_choices(50, 7)
    first = loaded.predict_many_choices(test)
    loaded.save(tmp_path / "again.json")
    assert np.allclose(load_predictor(tmp_path / "again.json").predict_many_choices(test), first)


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows[3].replace("k3_e", "k7_e", 1), "line 4: corrupted row: 'ops' layer"),
    (lambda rows: rows[5].rsplit(",", 1)[0] + ",fast", "line 6: corrupted row: 'newdev_ms' must be a number, got 'fast'"),
    (lambda rows: rows[2].rsplit(",", 1)[0] + ",-3", "line 3: corrupted row: 'newdev_ms' must be a number of ms in (0, 60000]"),
])
def test_cli_adapt_bad_samples_give_one_line_naming_the_row(tmp_path, capsys, edit, message):
    choices = _random_choices(10, 8)
    samples = _samples_csv(tmp_path / "s.csv", choices, _truth(choices))
    rows = samples.read_text().splitlines()
    index = {"line 4": 3, "line 6": 5, "line 3": 2}[message.split(":")[0]]
    rows[index] = edit(rows)
    samples.write_text("\n".join(rows) + "\n")
    out = tmp_path / "new.json"
    assert main(["phones", "adapt", str(samples), "--sources", str(PHONES), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and str(samples) in err
    assert not out.exists()


def test_cli_adapt_too_few_rows_is_refused_before_anything_is_written(tmp_path, capsys):
    choices = _random_choices(3, 9)
    samples = _samples_csv(tmp_path / "s.csv", choices, _truth(choices))
    out = tmp_path / "new.json"
    assert main(["phones", "adapt", str(samples), "--sources", str(PHONES), "--out", str(out)]) == 2
    assert "3 measured architectures; few-shot adaptation needs at least 5" in capsys.readouterr().err
    assert not out.exists()


def test_search_runs_end_to_end_on_an_adapted_predictor(tmp_path, capsys):
    choices = _random_choices(10, 10)
    samples = _samples_csv(tmp_path / "s.csv", choices, _truth(choices))
    pred = tmp_path / "newdev.json"
    assert main(["phones", "adapt", str(samples), "--sources", str(_sources(tmp_path)), "--out", str(pred)]) == 0
    run = tmp_path / "run"
    assert main(["search", "--space", "fbnet-cifar100", "--predictor", str(pred), "--budget-ms", "30", "--fast",
                 "--epochs", "1", "--warmup-epochs", "0", "--max-steps", "1", "--batch-size", "8",
                 "--limit-train", "16", "--limit-val", "8", "--threads", "1", "--no-progress", "--out", str(run)]) == 0
    arch = json.loads((run / "arch.json").read_text())
    predicted = load_predictor(pred).predict_choices(arch["choices"])
    assert predicted <= 30 * 1.05
    assert "predicted latency" in capsys.readouterr().out


def test_benchmark_settings_bad_item_named_in_one_line():
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "phone_few_shot.py"
    spec = importlib.util.spec_from_file_location("phone_few_shot", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.standard_error([0.5, 0.5]) == 0.0 and bench.standard_error([0.0, 2.0]) == pytest.approx(1.0)
    assert bench.standard_error([0.7]) == 0.0
    parsed = bench.parse_settings("0.1:4:2:pairs:1:0.2, 0.2:3:0:error:none:0")
    assert parsed == [(0.1, 4.0, 2.0, "pairs", 1.0, 0.2), (0.2, 3.0, 0.0, "error", None, 0.0)]
    for bad in ("0.6:1", "0.6:5:2:nope:1:0", "x:5:2:pairs:1:0", "0:4:2:error:1:0", "0.1:4:2:error:1",
                "0.1:4:2:error:0:0", "0.1:4:2:error:1:-1"):
        with pytest.raises(HwnasError, match=f"--settings: '{bad}' is not "
                                             "TAU:DEVIATION_COST:PER_COEFFICIENT:CRITERION:RECENCY:STAGE_PRIOR"):
            bench.parse_settings(f"0.1:4:2:pairs:1:0.2,{bad}")
