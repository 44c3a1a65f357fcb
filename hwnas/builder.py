"""Architecture -> standalone PyTorch network."""

from __future__ import annotations

from torch import nn

from hwnas.arch import Architecture
from hwnas.blocks import make_block
from hwnas.ops import OpSpec


def build_network(ops: list[OpSpec]) -> nn.Sequential:
    """A sequential network with one module per operator, in order."""
    return nn.Sequential(*[make_block(op) for op in ops if op.kind != "zero"])


def build_model(arch: Architecture) -> nn.Sequential:
    """The standalone network of ``arch``: exactly its chosen blocks, zero positions removed."""
    return build_network(arch.ops())
