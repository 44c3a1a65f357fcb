"""Recognising the machine by timing: anchors, level-corrected error, the verdict."""

from __future__ import annotations

import pytest

from hwnas.costs import total_cost
from hwnas.errors import HwnasError
from hwnas.predictors.device_match import anchor_architectures, fit_tables
from hwnas.spaces import get_space


class ScaledFlops:
    """A predictor pricing a model at ``scale`` x its MFLOPs, with kernel-7 blocks ``k7`` times as dear."""

    def __init__(self, scale: float, k7: float = 1.0):
        self.scale, self.k7 = scale, k7

    def predict_ops(self, ops) -> float:
        return self.scale * (0.5 + sum(total_cost([op]).flops * 1e-6 * (self.k7 if op.kernel == 7 else 1.0)
                                       for op in ops))


def test_anchors_are_fixed_valid_and_spread_over_flops():
    space = get_space("proxyless-tiny")
    a, b = anchor_architectures(space, 6), anchor_architectures(space, 6)
    assert [x.choices for x in a] == [x.choices for x in b]
    assert [x.space.stage_widths for x in a] == [x.space.stage_widths for x in b]
    flops = [total_cost(x.ops()).flops for x in a]
    assert flops == sorted(flops) and flops[-1] > 3 * flops[0]
    assert len({x.space.stage_widths for x in a}) > 1  # stage widths are drawn too
    with pytest.raises(HwnasError, match="at least 2 anchor"):
        anchor_architectures(space, 1)


def test_the_table_whose_relative_costs_fit_is_chosen_whatever_its_level():
    space = get_space("proxyless-tiny")
    anchors = anchor_architectures(space, 8)
    here = ScaledFlops(0.02, k7=0.7)  # this machine: k7 relatively cheap
    measured = [here.predict_ops(a.ops()) for a in anchors]
    match = fit_tables(anchors, measured, {"same-cpu-other-vm": ScaledFlops(0.03, k7=1.3),
                                           "this-vm-slower-day": ScaledFlops(0.035, k7=0.7)})
    assert match.best is not None and match.best.name == "this-vm-slower-day"
    assert match.best.error < 1e-6 and match.best.level == pytest.approx(0.02 / 0.035, rel=1e-3)
    assert match.fits[1].error > 0.05
    assert "this-vm-slower-day" in match.describe().splitlines()[-1]


def test_no_table_within_tolerance_means_none():
    space = get_space("proxyless-tiny")
    anchors = anchor_architectures(space, 8)
    measured = [ScaledFlops(0.02, k7=0.5).predict_ops(a.ops()) for a in anchors]
    match = fit_tables(anchors, measured, {"other": ScaledFlops(0.02, k7=1.5)})
    assert match.best is None
    assert "no table fits" in match.describe()


def test_bad_anchor_times_are_refused():
    space = get_space("proxyless-tiny")
    anchors = anchor_architectures(space, 3)
    with pytest.raises(HwnasError, match="positive and finite"):
        fit_tables(anchors, [1.0, 0.0, 1.0], {"x": ScaledFlops(1.0)})
    with pytest.raises(HwnasError, match="3 anchors but 2"):
        fit_tables(anchors, [1.0, 1.0], {"x": ScaledFlops(1.0)})


def test_one_anchor_the_table_itself_misses_does_not_make_its_machine_a_stranger():
    """Measured here: 7 anchors within 1% of this machine's table, the heaviest 10.8% off (the table's own
    error there); another machine's relative costs move every anchor."""
    space = get_space("proxyless-tiny")
    anchors = anchor_architectures(space, 8)
    own = ScaledFlops(0.02)
    measured = [own.predict_ops(a.ops()) for a in anchors]
    measured[-1] *= 1.108
    match = fit_tables(anchors, measured, {"own": own, "other": ScaledFlops(0.03, k7=1.6)})
    assert match.best is not None and match.best.name == "own"
    assert match.best.worst == pytest.approx(0.108, abs=1e-3) and match.best.error < 0.02
