"""Search spaces, operator descriptions and analytic costs."""

import json
import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hwnas.arch import sample_architecture
from hwnas.builder import build_model
from hwnas.costs import op_cost
from hwnas.errors import HwnasError
from hwnas.ops import OpSpec
from hwnas.spaces import get_space, list_spaces


def test_opspec_is_hashable_and_round_trips_through_json_and_key():
    op = OpSpec("mbconv", 24, 40, 16, 16, kernel=5, stride=2, expand=6)
    assert {op: 1}[OpSpec("mbconv", 24, 40, 16, 16, kernel=5, stride=2, expand=6)] == 1
    assert OpSpec.from_dict(json.loads(op.to_json())) == op
    assert OpSpec.from_key(op.key()) == op
    assert op.out_h == 8 and not op.has_residual


@pytest.mark.parametrize("bad", [
    {"kind": "conv3d", "c_in": 3, "c_out": 8, "h": 8, "w": 8},
    {"kind": "conv", "c_in": 0, "c_out": 8, "h": 8, "w": 8},
    {"kind": "conv", "c_in": 3, "c_out": 8, "h": 8, "w": 8, "colour": "red"},
    {"kind": "conv", "c_in": 3, "c_out": 8, "h": 8, "w": 8, "act": "gelu"},
])
def test_opspec_rejects_bad_fields(bad):
    with pytest.raises(HwnasError):
        OpSpec.from_dict(bad)


def test_proxyless_mobile_space_layout():
    space = get_space("proxyless-mobile")
    assert len(space.positions) == 21
    first = space.positions[0]
    assert "zero" not in first.names and len(first.names) == 6  # stride 2 layer: no zero
    assert "zero" in space.positions[1].names
    assert space.positions[-1].ops[0].c_out == 320
    assert space.head[0].c_out == 1280 and space.head[-1].c_out == 1000
    assert space.size == 6 ** 6 * 7 ** 15


def test_cifar_preset_has_fewer_downsamplings():
    mobile, cifar = get_space("proxyless-mobile"), get_space("proxyless-cifar")
    assert mobile.head[0].h == 7 and cifar.head[0].h == 4  # 224/32 vs 32/8
    assert cifar.params["num_classes"] == 10


def test_space_overrides_change_the_network_and_are_validated():
    space = get_space("proxyless-cifar", {"width_mult": 0.5, "num_classes": 7, "resolution": 64})
    assert space.stem[0].c_out == 16 and space.stem[0].h == 64
    assert space.head[-1].c_out == 7
    with pytest.raises(HwnasError, match="unknown field 'depth'"):
        get_space("proxyless-cifar", {"depth": 3})
    with pytest.raises(HwnasError, match="stages\\[0\\]"):
        get_space("proxyless-cifar", {"stages": [[24, 4, 3]]})
    with pytest.raises(HwnasError, match="unknown search space"):
        get_space("mnasnet")


def test_fbnet_space_matches_its_definition():
    space = get_space("fbnet-cifar100")
    assert len(space.positions) == 22 and len(space.positions[0].names) == 9
    assert [p.ops[0].c_out for p in space.positions][:6] == [16, 24, 24, 24, 24, 32]
    assert [p.ops[0].stride for p in space.positions if p.ops[0].stride == 2] == [2, 2, 2]
    g2 = space.positions[1].op("k5_e1_g2")
    assert (g2.kind, g2.groups, g2.expand, g2.kernel) == ("ir", 2, 1, 5)
    skip = space.positions[1].op("skip")  # 16 -> 24 channels: a 1x1 conv
    assert not skip.is_identity and op_cost(skip).params == 16 * 24 + 2 * 24
    assert space.positions[2].op("skip").is_identity
    assert space.head[0].c_out == 1504 and space.head[-1].c_out == 100
    imagenet = get_space("fbnet-imagenet")
    assert imagenet.head[0].c_out == 1984 and imagenet.head[0].h == 7


def test_space_listing_names_positions_and_size():
    text = get_space("proxyless-tiny").describe()
    assert "pos  0" in text and "k7_e6" in text and "architectures" in text


@pytest.mark.parametrize("name", list_spaces())
def test_costs_agree_with_torch_flop_counter_and_parameter_count(name):
    space = get_space(name)
    rng = random.Random(1)
    res = space.params["resolution"]
    for _ in range(4 if res <= 32 else 2):
        arch = sample_architecture(space, rng)
        model = build_model(arch).eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.randn(1, 3, res, res))
        cost = arch.cost()
        # FlopCounterMode counts a multiply-add as 2 FLOPs; hwnas counts multiply-adds.
        assert counter.get_total_flops() == 2 * cost.flops
        assert sum(p.numel() for p in model.parameters()) == cost.params


def test_mac_counts_inputs_outputs_and_weights():
    op = OpSpec("conv", 3, 16, 32, 32, kernel=3, stride=1)
    assert op_cost(op).mac == 3 * 32 * 32 + 16 * 32 * 32 + 3 * 3 * 3 * 16
    assert op_cost(OpSpec("zero", 16, 16, 8, 8, act="none")).mac == 0
