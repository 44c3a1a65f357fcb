"""Cell edge operations (DARTS), as OpSpecs (their PyTorch modules: :func:`hwnas.blocks.make_edge`).

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

from hwnas.errors import HwnasError
from hwnas.ops import CELL_KINDS, OpSpec  # noqa: F401  (CELL_KINDS re-exported)

PRIMITIVES = (
    "zero", "skip", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
    "max_pool_3x3", "avg_pool_3x3",
)


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
