"""Operator features for learned latency predictors.

:func:`op_features` turns an :class:`~hwnas.ops.OpSpec` into a fixed-length
vector of numbers (names in :data:`FEATURE_NAMES`): the description itself
(kind one-hot, channels, sizes, kernel, stride, expansion, groups), the analytic
costs (FLOPs, params, MAC) and derived quantities that track how runtimes spend
time on an inverted residual, split into its expand / depthwise / project parts
as nn-Meter splits a model into kernels.
"""

from __future__ import annotations

import numpy as np

from hwnas.costs import op_cost
from hwnas.ops import OpSpec

# Fixed here (not taken from hwnas.ops.KINDS) so that saved predictors keep their meaning when kinds are
# added; an operator of another kind gets all zeros in the one-hot part.
FEATURE_KINDS = ("conv", "mbconv", "ir", "skip", "pool", "linear",
                 "rcb", "sep_conv", "dil_conv", "max_pool", "avg_pool", "fact_reduce")
BASE = ["c_in", "c_out", "h", "w", "out_h", "out_w", "kernel", "stride", "expand", "groups", "mid"]
COSTS = ["flops", "params", "mac"]
DERIVED = [
    "in_elems",       # c_in * h * w
    "out_elems",      # c_out * out_h * out_w
    "mid_elems",      # expanded activation, c_in * expand * out_h * out_w
    "pw_flops",       # multiply-adds of the 1x1 convs (or the whole op when not an inverted residual)
    "dw_flops",       # multiply-adds of the depthwise conv
    "dw_k5",          # depthwise work at kernel 5
    "dw_k7",          # depthwise work at kernel 7 (XNNPACK is slow there on x86)
    "dw_s2",          # depthwise work at stride 2
    "expand_flops",   # multiply-adds of the 1x1 expansion conv
    "residual",       # 1 when the block adds its input
    "log_flops",
    "log_mac",
    "k5", "k7",       # kernel indicators
    "log_pw_flops", "log_dw_flops", "log_dw_k7", "log_mid_elems", "log_in_elems", "log_out_elems",
]
FEATURE_NAMES = [f"is_{k}" for k in FEATURE_KINDS] + BASE + COSTS + DERIVED


def op_features(op: OpSpec) -> np.ndarray:
    """The feature vector of one operator, in :data:`FEATURE_NAMES` order."""
    cost = op_cost(op)
    inverted = op.kind in ("mbconv", "ir")
    mid = op.mid_channels if inverted else op.c_out
    oh, ow = op.out_h, op.out_w
    dw_flops = op.kernel * op.kernel * mid * oh * ow if inverted else 0
    has_expand = inverted and (op.kind == "ir" or op.expand != 1)
    d = {
        "in_elems": op.c_in * op.h * op.w,
        "out_elems": op.c_out * oh * ow,
        "mid_elems": (op.c_in * op.expand * oh * ow) if inverted else 0,
        "pw_flops": cost.flops - dw_flops,
        "dw_flops": dw_flops,
        "dw_k5": dw_flops if op.kernel == 5 else 0,
        "dw_k7": dw_flops if op.kernel == 7 else 0,
        "dw_s2": dw_flops if op.stride == 2 else 0,
        "expand_flops": (op.c_in * mid * op.h * op.w // op.groups) if has_expand else 0,
        "residual": 1.0 if op.has_residual else 0.0,
        "log_flops": np.log1p(cost.flops),
        "log_mac": np.log1p(cost.mac),
        "k5": 1.0 if op.kernel == 5 else 0.0,
        "k7": 1.0 if op.kernel == 7 else 0.0,
    }
    for name in ("pw_flops", "dw_flops", "dw_k7", "mid_elems", "in_elems", "out_elems"):
        d[f"log_{name}"] = np.log1p(d[name])
    values = [1.0 if op.kind == k else 0.0 for k in FEATURE_KINDS]
    values += [op.c_in, op.c_out, op.h, op.w, oh, ow, op.kernel, op.stride, op.expand, op.groups, mid]
    values += [cost.flops, cost.params, cost.mac]
    values += [d[name] for name in DERIVED]
    return np.asarray(values, dtype=np.float64)


def feature_matrix(ops: list[OpSpec]) -> np.ndarray:
    """Stack :func:`op_features` for many operators into an (n, n_features) array."""
    if not ops:
        return np.zeros((0, len(FEATURE_NAMES)))
    return np.stack([op_features(op) for op in ops])


def flops_column(X: np.ndarray) -> np.ndarray:
    """The FLOPs feature as an (n, 1) array (the naive baseline's only input)."""
    return X[:, [FEATURE_NAMES.index("flops")]]
