"""PyTorch modules for operators: ``make_block(op)`` builds the block an OpSpec describes."""

from __future__ import annotations

import torch
from torch import nn

from hwnas.ops import CELL_KINDS, OpSpec

BN_EPS = 1e-5


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
        from hwnas.cells.ops import make_cell_block
        return make_cell_block(op)
    if op.kind == "skip":
        return conv_bn(op.c_in, op.c_out, 1, op.stride, 1, op.act)
    if op.kind == "pool":
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if op.kind == "linear":
        return nn.Linear(op.c_in, op.c_out)
    raise ValueError(f"no PyTorch block for kind {op.kind!r}")
