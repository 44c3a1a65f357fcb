"""Analytic costs of an operator: FLOPs, parameters and memory access (MAC).

Conventions (the same everywhere in hwnas):

* ``flops``: multiply-adds of convolutions and fully connected layers, batch 1.
  BN, activations, residual adds and pooling are not counted (they fold into
  convs or are negligible). PyTorch's ``FlopCounterMode`` counts a multiply-add
  as 2 FLOPs, so its total is exactly ``2 * flops``.
* ``params``: trainable parameters, as ``sum(p.numel())`` of the built module
  (conv weights without bias, BN weight and bias, linear weight and bias).
* ``mac``: memory access cost in *elements* (not bytes), as in ShuffleNetV2: for
  each conv / linear layer, input + output + weights; a residual add reads two
  tensors and writes one; pooling reads its input and writes its output.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwnas.ops import CELL_KINDS, OpSpec


@dataclass(frozen=True)
class Cost:
    flops: int = 0
    params: int = 0
    mac: int = 0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.flops + other.flops, self.params + other.params, self.mac + other.mac)


def _bare_conv(c_in: int, c_out: int, h: int, w: int, kernel: int, stride: int, groups: int) -> Cost:
    """A bias-free conv with padding keeping ``ceil(h / stride)``, without BN."""
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    weights = kernel * kernel * (c_in // groups) * c_out
    return Cost(weights * oh * ow, weights, c_in * h * w + c_out * oh * ow + weights)


def _bn(c: int) -> Cost:
    return Cost(0, 2 * c, 0)


def _conv(c_in: int, c_out: int, h: int, w: int, kernel: int, stride: int, groups: int) -> Cost:
    """kxk conv (no bias) followed by BN."""
    return _bare_conv(c_in, c_out, h, w, kernel, stride, groups) + _bn(c_out)


def cell_op_cost(op: OpSpec) -> Cost:
    """Cost of one operator of a cell kind (``rcb``, ``sep_conv`` ...; see :mod:`hwnas.cells.ops`).

    Depthwise and pointwise convs count like any conv; BN adds 2 parameters per channel (no BN inside
    :func:`_bare_conv`); pooling has no FLOPs. The node sums of a cell network are added by
    :func:`hwnas.cells.genotype.network_cost`.
    """
    c_in, c_out, h, w, k, s = op.c_in, op.c_out, op.h, op.w, op.kernel, op.stride
    oh, ow = op.out_h, op.out_w
    if op.kind == "rcb":
        return _bare_conv(c_in, c_out, h, w, k, s, 1) + _bn(c_out)
    if op.kind == "sep_conv":
        return (_bare_conv(c_in, c_in, h, w, k, s, c_in) + _bare_conv(c_in, c_in, oh, ow, 1, 1, 1) + _bn(c_in)
                + _bare_conv(c_in, c_in, oh, ow, k, 1, c_in) + _bare_conv(c_in, c_out, oh, ow, 1, 1, 1) + _bn(c_out))
    if op.kind == "dil_conv":
        return _bare_conv(c_in, c_in, h, w, k, s, c_in) + _bare_conv(c_in, c_out, oh, ow, 1, 1, 1) + _bn(c_out)
    if op.kind in ("max_pool", "avg_pool"):
        return Cost(0, 0, c_in * h * w + c_in * oh * ow)
    if op.kind == "fact_reduce":
        weights = c_in * c_out  # two convs of c_in -> c_out / 2
        return Cost(weights * oh * ow, weights + 2 * c_out, 2 * c_in * h * w + c_out * oh * ow + weights)
    raise ValueError(f"not a cell operator kind: {op.kind!r}")


def op_cost(op: OpSpec) -> Cost:
    """FLOPs, params and MAC of one operator (see the module docstring)."""
    if op.kind == "zero" or op.is_identity:
        return Cost()
    if op.kind in CELL_KINDS:
        return cell_op_cost(op)
    if op.kind == "conv":
        return _conv(op.c_in, op.c_out, op.h, op.w, op.kernel, op.stride, op.groups)
    if op.kind == "skip":  # projection shortcut: 1x1 conv + BN + act
        return _conv(op.c_in, op.c_out, op.h, op.w, 1, op.stride, 1)
    if op.kind == "pool":
        return Cost(0, 0, op.c_in * op.h * op.w + op.c_in)
    if op.kind == "linear":
        weights = op.c_in * op.c_out
        return Cost(weights, weights + op.c_out, op.c_in + op.c_out + weights)
    # inverted residuals
    mid = op.mid_channels
    total = Cost()
    if op.kind == "ir" or op.expand != 1:
        total += _conv(op.c_in, mid, op.h, op.w, 1, 1, op.groups)
    total += _conv(mid, mid, op.h, op.w, op.kernel, op.stride, mid)
    total += _conv(mid, op.c_out, op.out_h, op.out_w, 1, 1, op.groups)
    if op.has_residual:
        total += Cost(0, 0, 3 * op.c_out * op.out_h * op.out_w)
    return total


def total_cost(ops) -> Cost:
    """Sum of :func:`op_cost` over a sequence of operators."""
    total = Cost()
    for op in ops:
        total += op_cost(op)
    return total
