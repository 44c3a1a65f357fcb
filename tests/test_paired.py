"""hwnas.paired: paired bootstrap and exact McNemar on per-image correctness."""

import numpy as np
import pytest

from hwnas.errors import HwnasError
from hwnas.paired import mcnemar, paired_bootstrap


def test_mcnemar_counts_only_disagreements_and_matches_the_binomial():
    a = np.array([1, 1, 1, 1, 1, 1, 0, 0, 1, 0], bool)
    b = np.array([1, 0, 0, 0, 0, 0, 0, 1, 1, 0], bool)
    only_a, only_b, p = mcnemar(a, b)
    assert (only_a, only_b) == (5, 1)
    assert p == pytest.approx(2 * (1 + 6) / 2 ** 6)  # P(X <= 1), X ~ Bin(6, 1/2), two-sided
    assert mcnemar(a, a) == (0, 0, 1.0)


def test_bootstrap_sees_a_one_point_gap_on_10000_images_and_not_a_null_one():
    rng = np.random.default_rng(1)
    base = rng.random(10_000) < 0.66
    better = base.copy()
    flip = rng.choice(np.flatnonzero(~base), 100, replace=False)  # +1 point
    better[flip] = True
    res = paired_bootstrap([better], [base], resamples=2000)
    assert res.diff == pytest.approx(0.01)
    assert res.low > 0 and res.p < 0.01 and res.images == 10_000
    noise = base.copy()
    lost = rng.choice(np.flatnonzero(base), 200, replace=False)  # as many images lost as won: no gap
    won = rng.choice(np.flatnonzero(~base), 200, replace=False)
    noise[lost], noise[won] = False, True
    res = paired_bootstrap([noise], [base], resamples=2000)
    assert res.diff == 0 and res.low < 0 < res.high and res.p > 0.5


def test_groups_are_averaged_per_image_and_shapes_must_match():
    a1, a2 = np.array([1, 0, 1, 0], bool), np.array([1, 1, 0, 0], bool)
    b = np.array([0, 0, 0, 0], bool)
    assert paired_bootstrap([a1, a2], [b], resamples=100).diff == pytest.approx(0.5)
    with pytest.raises(HwnasError, match="same images"):
        paired_bootstrap([a1], [np.zeros(5, bool)], resamples=10)
    with pytest.raises(HwnasError, match="no model"):
        paired_bootstrap([], [b], resamples=10)


def load_compare():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "paired_compare.py"
    spec = importlib.util.spec_from_file_location("paired_compare", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_compare_reads_finished_models_and_skips_running_ones(tmp_path, capsys):
    tool = load_compare()
    for name, right in (("proxy-seed0", [1, 1, 1, 0]), ("proxy-seed1", [1, 1, 0, 0]), ("mbv2-w1", [1, 0, 0, 0])):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "test_correct.npy", np.array(right, bool))
    (tmp_path / "proxy-seed2").mkdir()  # still training: no test_correct.npy
    assert tool.main(["--a", str(tmp_path / "proxy-*"), "--b", str(tmp_path / "mbv2-*"), "--resamples", "200"]) == 0
    out = capsys.readouterr().out
    assert "proxy-seed2" not in out and "A: proxy-seed1: 50.00% of 4 test images" in out
    assert "A - B: +37.50 points" in out and "2 vs 1 models" in out
    assert tool.main(["--a", str(tmp_path / "proxy-seed0"), str(tmp_path / "proxy-seed1"), "--b",
                      str(tmp_path / "mbv2-*"), "--resamples", "200"]) == 0  # several globs make one group
    assert "A - B: +37.50 points" in capsys.readouterr().out
    with pytest.raises(HwnasError, match="no scored model"):
        tool.main(["--a", str(tmp_path / "nothing-*"), "--b", str(tmp_path / "mbv2-*")])


def test_paired_compare_refuses_a_file_that_is_not_a_correctness_array(tmp_path):
    tool = load_compare()
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "test_correct.npy").write_bytes(b"not numpy")
    with pytest.raises(HwnasError, match="not a saved array"):
        tool.load_group(str(tmp_path / "m"))
    np.save(tmp_path / "m" / "test_correct.npy", np.zeros((2, 2), bool))
    with pytest.raises(HwnasError, match="one value per test image"):
        tool.load_group(str(tmp_path / "m"))
