"""Latency predictors: lookup table, regressor fitting, whole-device fit, differentiable tensors."""

import random

import numpy as np
import pytest
import torch

from _predictor_data import OVERHEAD_MS, synthetic_ms, training_ops, write_tables
from hwnas.arch import sample_architecture
from hwnas.errors import HwnasError
from hwnas.ops import OpSpec
from hwnas.predictors.calibration import fit_calibration
from hwnas.predictors.differentiable import (
    check_budget, expected_latency, fixed_latency, latency_tensors, max_latency, min_latency,
)
from hwnas.predictors.evaluate import metrics
from hwnas.predictors.features import FEATURE_NAMES, op_features
from hwnas.predictors.fit import fit_device
from hwnas.predictors.lut import LookupTable
from hwnas.predictors.regressor import METHODS, RegressorPredictor, cross_validate, fit_method
from hwnas.spaces import get_space

DEVICE = {"name": "dev"}
FAST = ["flops-linear", "per-kind-linear"]


def _lut(ops, overhead=0.0):
    return LookupTable(DEVICE, "proxyless-tiny", "tflite", "fp32", 1,
                       {op.key(): synthetic_ms(op) for op in ops}, overhead)


@pytest.fixture(scope="module")
def linear_regressor():
    ops = training_ops()
    fitted = fit_method(METHODS["per-kind-linear"], ops, np.array([synthetic_ms(op) for op in ops]))
    return RegressorPredictor(DEVICE, "proxyless-tiny", "tflite", "fp32", 1, fitted, overhead_ms=0.01)


def test_features_describe_the_operator():
    op = OpSpec("mbconv", 16, 24, 32, 32, kernel=7, stride=2, expand=6)
    f = dict(zip(FEATURE_NAMES, op_features(op)))
    assert f["is_mbconv"] == 1 and f["is_conv"] == 0
    assert (f["out_h"], f["mid"], f["kernel"]) == (16, 96, 7)
    assert f["dw_flops"] == 7 * 7 * 96 * 16 * 16 == f["dw_k7"]
    assert f["pw_flops"] + f["dw_flops"] == f["flops"]


def test_lut_sums_operators_plus_overhead_and_skips_zero():
    space = get_space("proxyless-tiny")
    lut = _lut(space.unique_ops(), overhead=0.25)
    choices = ["k3_e3", "zero", "k7_e6", "zero", "zero", "k5_e3", "zero", "zero", "k3_e6"]
    ops = space.ops_for(choices)
    assert lut.predict_ops(ops) == pytest.approx(0.25 + sum(synthetic_ms(op) for op in ops))
    assert len(ops) == 5 + 4


def test_lut_missing_entry_names_the_operator_and_can_fall_back(linear_regressor):
    lut = _lut(get_space("proxyless-tiny").unique_ops())
    unseen = OpSpec("mbconv", 24, 32, 16, 16, kernel=5, stride=1, expand=3)
    with pytest.raises(HwnasError, match="no latency entry for operator " + unseen.key().replace("->", "->")):
        lut.predict_op(unseen)
    lut.enable_fallback(linear_regressor)
    assert lut.predict_op(unseen) == pytest.approx(linear_regressor.predict_op(unseen))
    seen = get_space("proxyless-tiny").positions[0].ops[0]
    assert lut.predict_op(seen) == synthetic_ms(seen)  # entries still win over the fallback


def test_lut_without_named_fallback_refuses_to_enable_it():
    with pytest.raises(HwnasError, match="names no fallback"):
        _lut([]).enable_fallback()


def _cal(sums, measured, n_ops=None, per_op=True):
    groups = [{"mbconv:k3": s} for s in sums]
    return fit_calibration(groups, n_ops or [7] * len(sums), measured, per_op)


def test_calibration_is_a_median_line_chosen_by_cross_validation():
    cal = _cal([1.0, 2.0, 3.0], [1.5, 2.5, 13.0])  # too few models: the median residual only
    assert (cal.form, cal.overhead_ms, cal.scale, cal.per_op_ms) == ("constant", pytest.approx(0.5), 1.0, 0.0)
    assert _cal([], []).form == "none"
    n_ops = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 9, 12]
    sums = [0.1 * n + 0.03 * (i % 3) for i, n in enumerate(n_ops)]
    measured = [0.2 + 1.2 * s - 0.01 * n for s, n in zip(sums, n_ops)]
    measured[3] *= 3  # one disturbed measurement does not move a median line
    cal = _cal(sums, measured, n_ops)
    assert cal.form == "scale+per-op"
    assert (cal.overhead_ms, cal.scale, cal.per_op_ms) == (pytest.approx(0.2), pytest.approx(1.2),
                                                           pytest.approx(-0.01))
    assert set(cal.cv) == {"constant", "scale", "scale+per-op", "group-scales+per-op"}
    assert cal.cv["scale+per-op"]["mape"] < cal.cv["constant"]["mape"]
    plain = _cal(sums, [0.2 + s for s in sums], n_ops)  # nothing but a constant: the simplest form wins the tie
    assert (plain.form, plain.scale, plain.per_op_ms) == ("constant", 1.0, 0.0)
    assert _cal(sums, measured, n_ops, per_op=False).form == "constant"
    assert _cal(sums, [50 * s for s in sums], n_ops).scale <= 4.0  # scales are bounded


def test_group_scales_recover_a_kind_that_is_slower_in_a_network():
    rng = np.random.default_rng(0)
    groups, measured = [], []
    for _ in range(40):
        alone = {"conv:k3": 0.05, "mbconv:k3": float(rng.uniform(0.1, 0.5)), "mbconv:k7": float(rng.uniform(0, 0.6))}
        groups.append(alone)
        measured.append(0.02 + alone["conv:k3"] + alone["mbconv:k3"] + 2.0 * alone["mbconv:k7"])
    cal = fit_calibration(groups, [9] * 40, measured)
    assert cal.form == "group-scales+per-op"
    assert cal.group_scales["mbconv:k7"] == pytest.approx(2.0, rel=0.02)
    assert cal.group_scales["mbconv:k3"] == pytest.approx(1.0, rel=0.02)
    assert cal.group_scales["conv:k3"] == pytest.approx(cal.scale)  # in every model: keeps the common scale
    assert cal.cv["group-scales+per-op"]["mape"] < 0.5 * cal.cv["scale+per-op"]["mape"]


def test_group_scales_apply_per_operator_and_round_trip(tmp_path):
    from hwnas.predictors import load_predictor

    space = get_space("proxyless-tiny")
    ops = [op for op in space.unique_ops() if op.kind != "zero"]
    lut = _lut(ops, overhead=0.1)
    lut.group_scales = {"mbconv:k7": 2.0}
    k7 = next(op for op in ops if op.kind == "mbconv" and op.kernel == 7)
    k3 = next(op for op in ops if op.kind == "mbconv" and op.kernel == 3)
    assert lut.predict_op(k7) == pytest.approx(2.0 * synthetic_ms(k7))
    assert lut.predict_op(k3) == pytest.approx(synthetic_ms(k3))
    lut.save(tmp_path / "t.json")
    again = load_predictor(tmp_path / "t.json")
    assert again.group_scales == {"mbconv:k7": 2.0}
    arch = sample_architecture(space, random.Random(1))
    fixed = fixed_latency(arch.space, again)  # the sampled stage widths' operators
    tensors = latency_tensors(arch.space, again)
    onehot = [torch.tensor([1.0 if n == c else 0.0 for n in pos.names])
              for pos, c in zip(arch.space.positions, arch.choices)]
    assert float(expected_latency(onehot, tensors, fixed)) == pytest.approx(again.predict_ops(arch.ops()), rel=1e-5)
    import json
    data = json.loads((tmp_path / "t.json").read_text())
    del data["group_scales"]  # an older file: no group scales
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert load_predictor(tmp_path / "old.json").predict_op(k7) == pytest.approx(synthetic_ms(k7))
    data["group_scales"] = {"mbconv:k7": "fast"}
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(HwnasError, match="group_scales|mbconv:k7"):
        load_predictor(tmp_path / "bad.json")


def test_regressor_predicts_unseen_widths_and_resolutions(linear_regressor):
    wide = get_space("proxyless-tiny", {"width_mult": 1.5, "resolution": 48})
    unseen = [op for op in wide.unique_ops() if op.kind != "zero"]
    assert not set(unseen) & set(training_ops())
    predicted = linear_regressor.predict_many(unseen)
    measured = np.array([synthetic_ms(op) for op in unseen])
    assert np.max(np.abs(predicted - measured) / measured) < 0.10


def test_cross_validation_ranks_a_kernel_aware_model_above_flops_linear():
    ops = training_ops()
    ms = np.array([synthetic_ms(op) for op in ops])
    cv = cross_validate(ops, ms, FAST)
    assert set(cv) == set(FAST)
    assert cv["per-kind-linear"]["wape"] < 0.5 * cv["flops-linear"]["wape"]


def test_fit_device_holds_models_out_and_fits_the_overhead(tmp_path):
    data = write_tables(tmp_path / "ld")
    result = fit_device(data, "dev", "tflite", "fp32", 1, "proxyless-tiny", holdout=0.5, methods=FAST)
    assert result.regressor.method == "per-kind-linear"
    assert result.fit_models and result.held_out_models
    assert not set(result.fit_models) & set(result.held_out_models)
    assert len(result.fit_models) + len(result.held_out_models) == 24
    assert result.lut.overhead_ms == pytest.approx(OVERHEAD_MS, abs=1e-4)
    assert result.lut.per_op_ms == pytest.approx(0.0, abs=1e-5)
    assert result.lut.scale == pytest.approx(1.0, abs=1e-4)
    assert result.lut.overhead["models"] == result.fit_models
    assert result.regressor.overhead_ms == pytest.approx(OVERHEAD_MS, rel=0.3)


def test_fit_device_recovers_a_per_operator_correction(tmp_path):
    data = write_tables(tmp_path / "ld", n_models=30, per_op_ms=-0.002)
    result = fit_device(data, "dev", "tflite", "fp32", 1, "proxyless-tiny", methods=FAST)
    assert result.lut.per_op_ms == pytest.approx(-0.002, abs=2e-5)
    assert result.lut.scale == pytest.approx(1.0, abs=1e-3)
    assert result.lut.overhead_ms == pytest.approx(OVERHEAD_MS, abs=2e-4)
    op = training_ops()[0]
    assert result.lut.predict_op(op) == pytest.approx(synthetic_ms(op) - 0.002, abs=2e-5)
    result = fit_device(data, "dev", "tflite", "fp32", 1, "proxyless-tiny", methods=FAST, per_op=False)
    assert (result.lut.scale, result.lut.per_op_ms, result.lut.group_scales) == (1.0, 0.0, {})
    assert "median of (measured - sum" in result.lut.overhead["source"]
    assert result.lut.overhead["form"] == "constant"


def test_fit_device_without_model_rows_sets_zero_overhead_and_says_so(tmp_path):
    data = write_tables(tmp_path / "ld")
    (data / "dev-models.csv").unlink()
    result = fit_device(data, "dev", "tflite", "fp32", 1, "proxyless-tiny", methods=FAST)
    assert result.lut.overhead_ms == 0.0 and "none" in result.lut.overhead["source"]


def test_fit_device_with_no_rows_for_the_runtime_is_a_clear_error(tmp_path):
    data = write_tables(tmp_path / "ld")
    with pytest.raises(HwnasError, match="only 0 operator rows for onnxruntime"):
        fit_device(data, "dev", "onnxruntime", "fp32", 1, "proxyless-tiny", methods=FAST)


def test_metrics_shares_within_bands():
    m = metrics([1.0, 1.0, 1.0, 1.0], [1.04, 1.08, 0.8, 1.0])
    assert (m.n, m.within5, m.within10) == (4, 50.0, 75.0)
    assert m.mape == pytest.approx(100 * (0.04 + 0.08 + 0.2) / 4)


def test_latency_tensors_follow_candidate_order_with_zero_at_zero(linear_regressor):
    space = get_space("proxyless-tiny")
    tensors = latency_tensors(space, linear_regressor)
    assert len(tensors) == len(space.positions)
    for pos, t in zip(space.positions, tensors):
        assert t.shape == (len(pos.names),) and t.dtype == torch.float32
        for name, op, value in zip(pos.names, pos.ops, t.tolist()):
            expected = 0.0 if name == "zero" else linear_regressor.predict_op(op)
            assert value == pytest.approx(expected, rel=1e-6)
    assert any("zero" in pos.names for pos in space.positions)


def test_expected_latency_of_one_hot_paths_is_the_architecture_latency(linear_regressor):
    space = get_space("proxyless-tiny")
    rng = random.Random(1)
    for _ in range(5):
        arch = sample_architecture(space, rng)
        concrete = arch.space  # at the sampled stage widths
        tensors, fixed = latency_tensors(concrete, linear_regressor), fixed_latency(concrete, linear_regressor)
        low, high = min_latency(concrete, linear_regressor), max_latency(concrete, linear_regressor)
        probs = [torch.nn.functional.one_hot(torch.tensor(pos.names.index(c)), len(pos.names)).float()
                 for pos, c in zip(space.positions, arch.choices)]
        value = float(expected_latency(probs, tensors, fixed))
        assert value == pytest.approx(linear_regressor.predict_ops(arch.ops()), rel=1e-5)
        assert low <= value <= high


def test_gradient_flows_to_architecture_logits(linear_regressor):
    space = get_space("proxyless-tiny")
    tensors, fixed = latency_tensors(space, linear_regressor), fixed_latency(space, linear_regressor)
    logits = [torch.zeros(len(p.names), requires_grad=True) for p in space.positions]
    expected_latency([torch.softmax(a, 0) for a in logits], tensors, fixed).backward()
    for pos, a, t in zip(space.positions, logits, tensors):
        assert a.grad is not None and torch.isfinite(a.grad).all()
        # raising the logit of the slowest candidate raises latency, of the fastest lowers it
        assert a.grad[int(t.argmax())] > 0 > a.grad[int(t.argmin())]


def test_budget_below_the_fastest_architecture_is_refused(linear_regressor):
    space = get_space("proxyless-tiny")
    low = min_latency(space, linear_regressor)
    check_budget(space, linear_regressor, low * 1.01)
    with pytest.raises(HwnasError, match="below the fastest architecture"):
        check_budget(space, linear_regressor, low * 0.9)


def test_latency_tensors_refuse_a_predictor_for_another_space(linear_regressor):
    with pytest.raises(HwnasError, match="fitted for space 'proxyless-tiny', not 'proxyless-cifar'"):
        latency_tensors(get_space("proxyless-cifar"), linear_regressor)


def test_evaluation_on_unseen_models_with_baseline_and_plot(tmp_path, linear_regressor):
    from hwnas.predictors.evaluate import FlopsLinear, evaluate, scatter_plot, unseen_rows
    from hwnas.predictors.fit import model_ops
    from hwnas.latency_data import read_model_rows

    data = write_tables(tmp_path / "ld")
    result = fit_device(data, "dev", "tflite", "fp32", 1, "proxyless-tiny", methods=FAST)
    rows = read_model_rows(data / "dev-models.csv")
    test = unseen_rows(rows, result.lut, result.regressor)
    assert sorted(r.arch_file for r in test) == sorted(result.held_out_models)
    fit = [r for r in rows if r not in test]
    ops = [model_ops(r, tmp_path) for r in test]
    measured = [r.median_ms for r in test]
    baseline = FlopsLinear.fit([model_ops(r, tmp_path) for r in fit], [r.median_ms for r in fit])
    results = evaluate({"lut": result.lut, "flops": baseline}, ops, measured)
    assert results["lut"][0].within5 == 100.0 and results["lut"][0].mape < 0.1
    assert results["flops"][0].mape > results["lut"][0].mape
    png = scatter_plot(results, measured, tmp_path / "scatter.png", "test")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_calibration_never_fits_a_negative_overhead():
    """Issue 15 case 3: models faster than their operators timed alone keep the overhead at 0 and say so."""
    cal = _cal([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])  # constant form: the median residual is -0.5
    assert cal.overhead_ms == 0.0 and "held at 0 ms" in cal.note and "-0.5000" in cal.note
    n_ops = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 9, 12]
    sums = [0.1 * n + 0.03 * (i % 3) for i, n in enumerate(n_ops)]
    cal = _cal(sums, [0.9 * s - 0.05 for s in sums], n_ops)  # a negative intercept would fit exactly
    assert cal.overhead_ms == 0.0 and "lower bound" in cal.note
    assert cal.form != "constant" and cal.cv[cal.form]["within5"] >= 90  # the scale takes up the difference
    assert _cal(sums, [0.2 + 1.1 * s for s in sums], n_ops).note == ""  # a positive overhead: nothing to say


def test_fit_device_never_writes_a_negative_overhead(tmp_path):
    from hwnas.predictors import load_predictor
    from hwnas.predictors.fit import save

    data = write_tables(tmp_path / "ld", per_op_ms=-0.006)  # models faster than the sum of their operators
    result = fit_device(data, "dev", "tflite", "fp32", 1, "proxyless-tiny", methods=FAST, per_op=False)
    for predictor in (result.lut, result.regressor):
        assert predictor.overhead_ms == 0.0
        assert "overhead held at 0 ms" in predictor.overhead["source"]
    paths = save(result, tmp_path / "pred", "dev-tflite-fp32")
    assert load_predictor(paths[0]).overhead_ms == 0.0  # what was written loads
