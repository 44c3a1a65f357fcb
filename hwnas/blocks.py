"""PyTorch modules for every operator kind: ``make_block(op)`` builds the block an OpSpec describes.

Cell kinds (``rcb``, ``sep_conv``, ``dil_conv``, pools, ``fact_reduce``; see :mod:`hwnas.cells.ops`) are built by
:func:`make_cell_block`, in the ReLU-Conv-BN order of DARTS; :func:`make_edge` also builds ``zero`` and identity edges.
"""

from __future__ import annotations

import torch
from torch import nn

from hwnas.errors import HwnasError
from hwnas.ops import CELL_KINDS, OpSpec

BN_EPS = 1e-5
DILATION = 2  # of the dilated cell convs


def activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "relu6": nn.ReLU6, "none": nn.Identity}[name]()


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int, groups: int, act: str) -> nn.Sequential:
    """Conv (no bias, padding k // 2) + BN + activation."""
    layers = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, eps=BN_EPS),
    ]
    if act != "none":
        layers.append(activation(act))
    return nn.Sequential(*layers)


class ChannelShuffle(nn.Module):
    """Interleave the channels of ``groups`` groups (ShuffleNet)."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class InvertedResidual(nn.Module):
    """MBConv (``kind='mbconv'``) or FBNet IR block (``kind='ir'``)."""

    def __init__(self, op: OpSpec):
        super().__init__()
        mid = op.mid_channels
        layers: list[nn.Module] = []
        if op.kind == "ir" or op.expand != 1:
            layers.append(conv_bn(op.c_in, mid, 1, 1, op.groups, op.act))
            if op.groups > 1:
                layers.append(ChannelShuffle(op.groups))
        layers.append(conv_bn(mid, mid, op.kernel, op.stride, mid, op.act))
        layers.append(conv_bn(mid, op.c_out, 1, 1, op.groups, "none"))
        self.body = nn.Sequential(*layers)
        self.residual = op.has_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.residual else out


def make_block(op: OpSpec) -> nn.Module:
    """The PyTorch module for one operator."""
    if op.kind in ("mbconv", "ir"):
        return InvertedResidual(op)
    if op.kind == "conv":
        return conv_bn(op.c_in, op.c_out, op.kernel, op.stride, op.groups, op.act)
    if op.is_identity:
        return nn.Identity()
    if op.kind in CELL_KINDS:
        return make_cell_block(op)
    if op.kind == "skip":
        return conv_bn(op.c_in, op.c_out, 1, op.stride, 1, op.act)
    if op.kind == "pool":
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if op.kind == "linear":
        return nn.Linear(op.c_in, op.c_out)
    raise ValueError(f"no PyTorch block for kind {op.kind!r}")


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
