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


def _conv(c_in: int, c_out: int, h: int, w: int, kernel: int, stride: int, groups: int) -> Cost:
    """kxk conv (no bias) followed by BN."""
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    weights = kernel * kernel * (c_in // groups) * c_out
    flops = weights * oh * ow
    params = weights + 2 * c_out
    mac = c_in * h * w + c_out * oh * ow + weights
    return Cost(flops, params, mac)


def op_cost(op: OpSpec) -> Cost:
    """FLOPs, params and MAC of one operator (see the module docstring)."""
    if op.kind == "zero" or op.is_identity:
        return Cost()
    if op.kind in CELL_KINDS:
        from hwnas.cells.costs import cell_op_cost
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
