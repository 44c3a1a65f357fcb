"""Cell edge operations (DARTS), as OpSpecs and as PyTorch modules.

Edge candidates, in ``PRIMITIVES`` order: ``zero`` (no connection), ``skip``
(identity; a factorized reduce when the edge has stride 2), separable convs
``sep_conv_3x3``/``sep_conv_5x5``, dilated convs ``dil_conv_3x3``/``dil_conv_5x5``
(dilation 2), ``max_pool_3x3`` and ``avg_pool_3x3``. Convolutions are in the
ReLU-Conv-BN order of DARTS.

Each edge maps to one :class:`~hwnas.ops.OpSpec` of a cell kind, so the cost
model, the profiler and the latency tables handle cell operators like any other:

``rcb``          ReLU, k x k conv, BN (cell input preprocessing, 1 x 1).
``sep_conv``     (ReLU, k x k depthwise, 1 x 1, BN) twice; only the first strides.
``dil_conv``     ReLU, k x k depthwise with dilation 2, 1 x 1, BN.
``max_pool``     k x k max pooling, padding k // 2.
``avg_pool``     k x k average pooling, padding k // 2, padding not counted.
``fact_reduce``  ReLU, two 1 x 1 stride-2 convs (one shifted by a pixel) concatenated, BN.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.blocks import BN_EPS, activation
from hwnas.errors import HwnasError
from hwnas.ops import CELL_KINDS, OpSpec  # noqa: F401  (CELL_KINDS re-exported)

PRIMITIVES = (
    "zero", "skip", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
    "max_pool_3x3", "avg_pool_3x3",
)
DILATION = 2


def edge_op(name: str, channels: int, h: int, w: int, stride: int) -> OpSpec:
    """The OpSpec of edge candidate ``name`` on a ``channels x h x w`` input."""
    c = channels
    if name == "zero":
        return OpSpec("zero", c, c, h, w, stride=stride, act="none")
    if name == "skip":
        if stride == 1:
            return OpSpec("skip", c, c, h, w, act="none")
        return OpSpec("fact_reduce", c, c, h, w, stride=stride, act="relu")
    try:
        kind, size = name.rsplit("_", 1)
        kernel = int(size.split("x")[0])
    except ValueError:
        kind = ""
    if kind in ("sep_conv", "dil_conv", "max_pool", "avg_pool") and name in PRIMITIVES:
        act = "none" if kind.endswith("pool") else "relu"
        return OpSpec(kind, c, c, h, w, kernel=kernel, stride=stride, act=act)
    raise HwnasError(f"unknown cell operation {name!r}; expected one of {', '.join(PRIMITIVES)}")


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convs (DARTS)."""

    def __init__(self, c_in: int, c_out: int, act: str = "relu", affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise HwnasError(f"factorized reduce needs an even channel count, got {c_out}")
        self.act = activation(act)
        self.conv1 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        return self.bn(torch.cat([self.conv1(x), self.conv2(x[:, :, 1:, 1:])], dim=1))


class Zero(nn.Module):
    """Multiply by zero, keeping the (strided) output shape."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::self.stride, ::self.stride] * 0.0


def _act_conv_bn(op: OpSpec, c_in: int, c_out: int, kernel: int, stride: int, dilation: int, depthwise: bool,
                 affine: bool) -> list[nn.Module]:
    pad = dilation * (kernel - 1) // 2
    layers = [activation(op.act)]
    if depthwise:
        layers += [nn.Conv2d(c_in, c_in, kernel, stride, pad, dilation=dilation, groups=c_in, bias=False),
                   nn.Conv2d(c_in, c_out, 1, bias=False)]
    else:
        layers.append(nn.Conv2d(c_in, c_out, kernel, stride, pad, dilation=dilation, bias=False))
    layers.append(nn.BatchNorm2d(c_out, eps=BN_EPS, affine=affine))
    return layers


def make_cell_block(op: OpSpec, affine: bool = True) -> nn.Module:
    """The PyTorch module of a cell-kind OpSpec (``affine=False`` for search, as in DARTS)."""
    k, s = op.kernel, op.stride
    if op.kind == "rcb":
        return nn.Sequential(*_act_conv_bn(op, op.c_in, op.c_out, k, s, 1, False, affine))
    if op.kind == "sep_conv":
        return nn.Sequential(*_act_conv_bn(op, op.c_in, op.c_in, k, s, 1, True, affine),
                             *_act_conv_bn(op, op.c_in, op.c_out, k, 1, 1, True, affine))
    if op.kind == "dil_conv":
        return nn.Sequential(*_act_conv_bn(op, op.c_in, op.c_out, k, s, DILATION, True, affine))
    if op.kind == "max_pool":
        return nn.MaxPool2d(k, s, k // 2)
    if op.kind == "avg_pool":
        return nn.AvgPool2d(k, s, k // 2, count_include_pad=False)
    if op.kind == "fact_reduce":
        return FactorizedReduce(op.c_in, op.c_out, op.act, affine)
    raise ValueError(f"no cell block for kind {op.kind!r}")


def make_edge(op: OpSpec, affine: bool = True) -> nn.Module:
    """Any edge OpSpec (cell kinds, zero, identity skip) as a module."""
    if op.kind == "zero":
        return Zero(op.stride)
    if op.is_identity:
        return nn.Identity()
    return make_cell_block(op, affine)
