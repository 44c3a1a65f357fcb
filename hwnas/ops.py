"""The operator description shared by every stage of hwnas.

An :class:`OpSpec` describes one block of a network together with its input
shape. The search space lists candidate OpSpecs per position, the cost model,
profiler, latency tables and builders all take OpSpecs, so data flows between
stages without any stage knowing another's internals.

Kinds
-----
``conv``     k x k convolution + BN + activation (the stem, the final 1x1 conv).
``mbconv``   MobileNetV2/ProxylessNAS inverted residual: 1x1 expand (left out
             when ``expand == 1``), k x k depthwise, 1x1 project, BN after each,
             activation after the first two, residual when stride 1 and
             ``c_in == c_out``.
``ir``       FBNet inverted residual: like ``mbconv`` but the 1x1 expand conv is
             always there (also at ``expand == 1``), and with ``groups == 2`` the
             two 1x1 convs are grouped and a channel shuffle follows the first.
``skip``     identity; when the stride is 2 or the channel count changes, a
             1x1 conv + BN + activation (FBNet's definition).
``zero``     the block is removed (the network continues with its input).
``pool``     global average pooling to 1 x 1.
``linear``   fully connected classifier on a flattened ``c_in`` vector.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from hwnas.errors import HwnasError

# cell operator kinds (DARTS cells), see hwnas.cells.ops
CELL_KINDS = ("rcb", "sep_conv", "dil_conv", "max_pool", "avg_pool", "fact_reduce")
KINDS = ("conv", "mbconv", "ir", "skip", "zero", "pool", "linear") + CELL_KINDS
ACTIVATIONS = ("relu", "relu6", "none")


@dataclass(frozen=True)
class OpSpec:
    """One block with its input shape (batch size 1, NCHW in PyTorch terms)."""

    kind: str
    c_in: int
    c_out: int
    h: int
    w: int
    kernel: int = 1
    stride: int = 1
    expand: int = 1
    groups: int = 1
    act: str = "relu6"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise HwnasError(f"unknown operator kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.act not in ACTIVATIONS:
            raise HwnasError(f"unknown activation {self.act!r}; expected one of {', '.join(ACTIVATIONS)}")
        for name in ("c_in", "c_out", "h", "w", "kernel", "stride", "expand", "groups"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise HwnasError(f"operator field {name!r} must be a positive integer, got {value!r}")

    # -- shapes ---------------------------------------------------------------
    @property
    def out_h(self) -> int:
        """Output height (padding k // 2, as in PyTorch's 'same'-style blocks)."""
        if self.kind == "pool":
            return 1
        if self.kind == "linear":
            return 1
        return (self.h - 1) // self.stride + 1

    @property
    def out_w(self) -> int:
        if self.kind in ("pool", "linear"):
            return 1
        return (self.w - 1) // self.stride + 1

    @property
    def mid_channels(self) -> int:
        """Channels after the expansion conv of an inverted residual."""
        return self.c_in * self.expand

    @property
    def has_residual(self) -> bool:
        """True when the block adds its input to its output."""
        return self.kind in ("mbconv", "ir") and self.stride == 1 and self.c_in == self.c_out

    @property
    def is_identity(self) -> bool:
        """True when the block computes nothing (zero, or a shape-keeping skip)."""
        if self.kind == "zero":
            return True
        return self.kind == "skip" and self.stride == 1 and self.c_in == self.c_out

    # -- serialization ----------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "OpSpec":
        if not isinstance(data, dict):
            raise HwnasError(f"operator must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise HwnasError(f"unknown operator field(s): {', '.join(sorted(unknown))}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise HwnasError(f"bad operator {data}: {exc}") from None

    def key(self) -> str:
        """A stable, human-readable string key, used by latency tables and CSV rows."""
        return (
            f"{self.kind}:{self.c_in}x{self.h}x{self.w}->{self.c_out}"
            f":k{self.kernel}:s{self.stride}:e{self.expand}:g{self.groups}:{self.act}"
        )

    @classmethod
    def from_key(cls, key: str) -> "OpSpec":
        """Inverse of :meth:`key`."""
        try:
            kind, shape, k, s, e, g, act = key.split(":")
            ins, c_out = shape.split("->")
            c_in, h, w = ins.split("x")
            return cls(
                kind=kind, c_in=int(c_in), c_out=int(c_out), h=int(h), w=int(w),
                kernel=int(k[1:]), stride=int(s[1:]), expand=int(e[1:]), groups=int(g[1:]), act=act,
            )
        except HwnasError:
            raise
        except (ValueError, IndexError):
            raise HwnasError(f"malformed operator key {key!r}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
