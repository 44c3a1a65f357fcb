"""Analytic FLOPs / params / MAC of the cell operator kinds (conventions of :mod:`hwnas.costs`).

Depthwise and pointwise convs count like any conv (multiply-adds, weights,
input + output + weights accessed); BN adds 2 parameters per channel; pooling
has no FLOPs and reads its input, writes its output. The sum at a cell node of
``n >= 2`` inputs reads ``n`` tensors and writes one (MAC only), as a residual
add does; :func:`hwnas.cells.network.network_cost` adds it.
"""

from __future__ import annotations

from hwnas.costs import Cost
from hwnas.ops import OpSpec


def _conv(c_in: int, c_out: int, h: int, w: int, kernel: int, stride: int, groups: int) -> Cost:
    """A bias-free conv with padding keeping ``ceil(h / stride)``; no BN."""
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    weights = kernel * kernel * (c_in // groups) * c_out
    return Cost(weights * oh * ow, weights, c_in * h * w + c_out * oh * ow + weights)


def _bn(c: int) -> Cost:
    return Cost(0, 2 * c, 0)


def cell_op_cost(op: OpSpec) -> Cost:
    """Cost of one operator of a cell kind (``rcb``, ``sep_conv`` ...; see :mod:`hwnas.cells.ops`)."""
    c_in, c_out, h, w, k, s = op.c_in, op.c_out, op.h, op.w, op.kernel, op.stride
    oh, ow = op.out_h, op.out_w
    if op.kind == "rcb":
        return _conv(c_in, c_out, h, w, k, s, 1) + _bn(c_out)
    if op.kind == "sep_conv":
        return (_conv(c_in, c_in, h, w, k, s, c_in) + _conv(c_in, c_in, oh, ow, 1, 1, 1) + _bn(c_in)
                + _conv(c_in, c_in, oh, ow, k, 1, c_in) + _conv(c_in, c_out, oh, ow, 1, 1, 1) + _bn(c_out))
    if op.kind == "dil_conv":
        return _conv(c_in, c_in, h, w, k, s, c_in) + _conv(c_in, c_out, oh, ow, 1, 1, 1) + _bn(c_out)
    if op.kind in ("max_pool", "avg_pool"):
        return Cost(0, 0, c_in * h * w + c_in * oh * ow)
    if op.kind == "fact_reduce":
        weights = c_in * c_out  # two convs of c_in -> c_out / 2
        return Cost(weights * oh * ow, weights + 2 * c_out, 2 * c_in * h * w + c_out * oh * ow + weights)
    raise ValueError(f"not a cell operator kind: {op.kind!r}")
