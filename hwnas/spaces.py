"""Search spaces: a fixed stem and head around a chain of searchable positions.

Two families are defined, each with presets:

* ``proxyless`` (ProxylessNAS mobile space): stem conv, a fixed MBConv k3 e1
  block, then stages of MBConv blocks where each layer picks a kernel in
  {3, 5, 7} and an expansion in {3, 6}, plus ``zero`` (block removed) on layers
  that keep their shape; head: 1x1 conv, global pool, classifier.
  Presets: ``proxyless-mobile`` (224x224, ImageNet), ``proxyless-cifar`` (32x32,
  three downsamplings), ``proxyless-tiny`` (32x32, narrow and shallow; the
  embedded default that trains in minutes on a CPU).
* ``fbnet`` (FBNet space as used by HW-NAS-Bench): 22 searchable layers with
  the 9 candidates k3_e1, k3_e1_g2, k3_e3, k3_e6, k5_e1, k5_e1_g2, k5_e3, k5_e6,
  skip. Presets: ``fbnet-cifar100`` (32x32, 100 classes) and ``fbnet-imagenet``.

Any preset field can be overridden (resolution, width_mult, num_classes, stages
...); an architecture file stores the preset name and all fields.

Width search (proxyless family): ``width_choices`` lists multipliers a search
may give each stage (``proxyless-tiny`` and ``proxyless-cifar``: 1, 1.25, 1.5,
1.75, 2); ``stage_widths`` holds the multiplier of every stage of one concrete
network (default: 1 everywhere). A stage's channels are
``make_divisible(channels x width_mult x stage_width)``. With more than one
width choice a block may be skipped (``zero``) only where it keeps its shape at
every width: after the first layer of a stage. :meth:`SearchSpace.at_widths`
gives the same space at other stage widths; :meth:`SearchSpace.unique_ops`
covers every width choice, so profiling a space times all its widths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwnas.errors import HwnasError
from hwnas.ops import OpSpec

PROXYLESS_DEFAULTS = {
    "family": "proxyless",
    "resolution": 224,
    "width_mult": 1.0,
    "num_classes": 1000,
    "stem_channels": 32,
    "stem_stride": 2,
    "first_block_channels": 16,
    # [output channels, layers, stride of the first layer]
    "stages": [[24, 4, 2], [40, 4, 2], [80, 4, 2], [96, 4, 1], [192, 4, 2], [320, 1, 1]],
    "kernels": [3, 5, 7],
    "expands": [3, 6],
    "allow_zero": True,
    "head_channels": 1280,
    "width_choices": [1.0],
    "stage_widths": None,  # one multiplier per stage; None: 1 everywhere
}

WIDTH_CHOICES = [1.0, 1.25, 1.5, 1.75, 2.0]

FBNET_DEFAULTS = {
    "family": "fbnet",
    "resolution": 224,
    "width_mult": 1.0,
    "num_classes": 1000,
    "stem_channels": 16,
    "stem_stride": 2,
    "stages": [[16, 1, 1], [24, 4, 2], [32, 4, 2], [64, 4, 2], [112, 4, 1], [184, 4, 2], [352, 1, 1]],
    "head_channels": 1984,
}

FBNET_CANDIDATES = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")

PRESETS: dict[str, dict] = {
    "proxyless-mobile": dict(PROXYLESS_DEFAULTS),
    "proxyless-cifar": dict(
        PROXYLESS_DEFAULTS,
        resolution=32,
        num_classes=10,
        stem_stride=1,
        stages=[[24, 4, 1], [40, 4, 2], [80, 4, 2], [96, 4, 1], [192, 4, 2], [320, 1, 1]],
        width_choices=WIDTH_CHOICES,
    ),
    "proxyless-tiny": dict(
        PROXYLESS_DEFAULTS,
        resolution=32,
        num_classes=10,
        stem_channels=16,
        stem_stride=1,
        first_block_channels=16,
        stages=[[24, 2, 2], [40, 3, 2], [64, 3, 2], [96, 1, 1]],
        head_channels=256,
        width_choices=WIDTH_CHOICES,
    ),
    "fbnet-cifar100": dict(
        FBNET_DEFAULTS,
        resolution=32,
        num_classes=100,
        stem_stride=1,
        stages=[[16, 1, 1], [24, 4, 1], [32, 4, 2], [64, 4, 2], [112, 4, 1], [184, 4, 2], [352, 1, 1]],
        head_channels=1504,
    ),
    "fbnet-imagenet": dict(FBNET_DEFAULTS),
}

DEFAULT_SPACE = "proxyless-tiny"


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class Position:
    """One searchable layer: its index, stage, and candidate operators by name."""

    index: int
    stage: int
    names: tuple[str, ...]
    ops: tuple[OpSpec, ...]

    def op(self, name: str) -> OpSpec:
        return self.ops[self.names.index(name)]


class SearchSpace:
    """Fixed stem ops, searchable positions, fixed head ops."""

    def __init__(self, name: str, params: dict, stem: list[OpSpec], positions: list[Position], head: list[OpSpec]):
        self.name = name
        self.params = params
        self.stem = stem
        self.positions = positions
        self.head = head

    @property
    def size(self) -> int:
        """Number of distinct architectures (product of candidate and stage-width counts)."""
        return math.prod(len(p.names) for p in self.positions) * len(self.width_choices) ** self.num_stages

    # -- width search -----------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.params["stages"])

    @property
    def width_choices(self) -> tuple[float, ...]:
        """Multipliers a search may give each stage (one entry: no width search)."""
        return tuple(float(w) for w in self.params.get("width_choices") or [1.0])

    @property
    def searches_width(self) -> bool:
        return len(self.width_choices) > 1

    @property
    def stage_widths(self) -> tuple[float, ...]:
        """This network's multiplier per stage."""
        widths = self.params.get("stage_widths")
        return tuple(float(w) for w in widths) if widths else (1.0,) * self.num_stages

    def at_widths(self, widths) -> "SearchSpace":
        """The same space with ``widths`` (one multiplier per stage); all 1 gives the preset's channels."""
        widths = [float(w) for w in widths]
        return get_space(self.name, dict(self.params, stage_widths=None if all(w == 1.0 for w in widths)
                                         else widths))

    def ops_for(self, choices: list[str]) -> list[OpSpec]:
        """All operators of the network for one choice per position, zero blocks removed."""
        chosen = [p.op(c) for p, c in zip(self.positions, choices, strict=True)]
        return list(self.stem) + [op for op in chosen if op.kind != "zero"] + list(self.head)

    def unique_ops(self) -> list[OpSpec]:
        """Every distinct operator that any architecture of the space can contain (at every width choice)."""
        seen: dict[OpSpec, None] = {}
        for space in [self] + self._width_variants():
            for op in space.stem:
                seen[op] = None
            for pos in space.positions:
                for op in pos.ops:
                    seen[op] = None
            for op in space.head:
                seen[op] = None
        return list(seen)

    def _width_variants(self) -> list["SearchSpace"]:
        """Spaces whose operators together cover every (previous stage, stage) width pair."""
        if not self.searches_width:
            return []
        choices, n = self.width_choices, self.num_stages
        variants = []
        for s in range(n):
            for a in (choices if s > 0 else choices[:1]):
                for b in choices:
                    widths = [choices[0]] * n
                    if s > 0:
                        widths[s - 1] = a
                    widths[s] = b
                    variants.append(self.at_widths(widths))
        return variants

    def describe(self) -> str:
        """A readable listing of positions, candidates and the space size."""
        lines = [f"space {self.name} ({self.params['family']}), input {self.params['resolution']}x"
                 f"{self.params['resolution']}, {self.params['num_classes']} classes"]
        for op in self.stem:
            lines.append(f"  fixed   {op.kind:6s} {op.c_in:4d}->{op.c_out:<4d} {op.h}x{op.w} k{op.kernel} s{op.stride}")
        for pos in self.positions:
            first = pos.ops[0]
            lines.append(
                f"  pos {pos.index:2d} stage {pos.stage} {first.c_in:4d}->{first.c_out:<4d} {first.h}x{first.w} "
                f"s{first.stride}: {', '.join(pos.names)}"
            )
        for op in self.head:
            lines.append(f"  fixed   {op.kind:6s} {op.c_in:4d}->{op.c_out:<4d} {op.h}x{op.w}")
        if self.searches_width:
            lines.append(f"  stage widths {', '.join(f'{w:g}' for w in self.stage_widths)} "
                         f"(choices per stage: {', '.join(f'{w:g}' for w in self.width_choices)})")
        lines.append(f"{len(self.positions)} positions, {self.size:.3e} architectures")
        return "\n".join(lines)


# Upper bounds of the numeric fields (beyond them a network is too large to build or makes no sense here);
# the same rules hold for `--set` overrides and an architecture file's space_params.
MAX_INT_FIELDS = {"resolution": 1024, "num_classes": 100_000, "stem_channels": 4096, "stem_stride": 4,
                  "first_block_channels": 4096, "head_channels": 8192}
MAX_WIDTH_MULT = 4.0
MAX_STAGE = (4096, 64)  # channels, layers of one stage


def _check_params(name: str, params: dict) -> None:
    for field, top in MAX_INT_FIELDS.items():
        value = params.get(field, 1)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
            raise HwnasError(f"space {name}: field {field!r} must be a positive integer <= {top}, got {value!r}")
    wm = params["width_mult"]
    if not isinstance(wm, (int, float)) or isinstance(wm, bool) or not 0 < wm <= MAX_WIDTH_MULT:
        raise HwnasError(f"space {name}: field 'width_mult' must be a number in (0, {MAX_WIDTH_MULT:g}], got {wm!r}")
    _check_widths(name, params)
    stages = params["stages"]
    if not isinstance(stages, list) or not stages:
        raise HwnasError(f"space {name}: field 'stages' must be a non-empty list of [channels, layers, stride]")
    for i, stage in enumerate(stages):
        if (not isinstance(stage, (list, tuple)) or len(stage) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in stage)
                or stage[2] not in (1, 2) or stage[0] > MAX_STAGE[0] or stage[1] > MAX_STAGE[1]):
            raise HwnasError(f"space {name}: stages[{i}] must be [channels <= {MAX_STAGE[0]}, layers <= "
                             f"{MAX_STAGE[1]}, stride 1|2], got {stage!r}")


MAX_WIDTH = MAX_WIDTH_MULT  # of a stage's width choice too


def _is_width(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and 0 < v <= MAX_WIDTH)


def _check_widths(name: str, params: dict) -> None:
    """``width_choices``: a non-empty list of distinct multipliers; ``stage_widths``: one per stage or null."""
    choices = params.get("width_choices", [1.0])
    if (not isinstance(choices, list) or not choices or not all(_is_width(w) for w in choices)
            or len(set(choices)) != len(choices)):
        raise HwnasError(f"space {name}: field 'width_choices' must be a non-empty list of distinct numbers in "
                         f"(0, {MAX_WIDTH:g}], got {choices!r}")
    widths = params.get("stage_widths")
    if widths is None:
        return
    stages = params.get("stages")
    if (not isinstance(widths, list) or not all(_is_width(w) for w in widths)
            or (isinstance(stages, list) and len(widths) != len(stages))):
        raise HwnasError(f"space {name}: field 'stage_widths' must be null or a list of one number in "
                         f"(0, {MAX_WIDTH:g}] per stage, got {widths!r}")


def _stage_width(p: dict, stage: int) -> float:
    widths = p.get("stage_widths")
    return float(widths[stage]) if widths else 1.0


def _proxyless(name: str, p: dict) -> SearchSpace:
    for field, top in (("kernels", 11), ("expands", 16)):
        if (not isinstance(p[field], list) or not p[field]
                or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= top for v in p[field])):
            raise HwnasError(f"space {name}: field {field!r} must be a non-empty list of integers in [1, {top}]")
    res, wm = p["resolution"], p["width_mult"]
    stem_c = make_divisible(p["stem_channels"] * wm)
    first_c = make_divisible(p["first_block_channels"] * wm)
    stem = [OpSpec("conv", 3, stem_c, res, res, kernel=3, stride=p["stem_stride"], act="relu6")]
    h = stem[0].out_h
    stem.append(OpSpec("mbconv", stem_c, first_c, h, h, kernel=3, stride=1, expand=1, act="relu6"))
    c = first_c
    positions = []
    width_search = len(p.get("width_choices") or [1.0]) > 1
    for stage_idx, (channels, layers, stride) in enumerate(p["stages"]):
        c_out = make_divisible(channels * wm * _stage_width(p, stage_idx))
        for layer in range(layers):
            s = stride if layer == 0 else 1
            names, ops = [], []
            for k in p["kernels"]:
                for e in p["expands"]:
                    names.append(f"k{k}_e{e}")
                    ops.append(OpSpec("mbconv", c, c_out, h, h, kernel=k, stride=s, expand=e, act="relu6"))
            # with width search a stage's first block changes shape at some widths: never skippable
            if p["allow_zero"] and s == 1 and c == c_out and not (width_search and layer == 0):
                names.append("zero")
                ops.append(OpSpec("zero", c, c_out, h, h, act="none"))
            positions.append(Position(len(positions), stage_idx, tuple(names), tuple(ops)))
            c, h = c_out, ops[0].out_h
    head_c = make_divisible(p["head_channels"] * max(1.0, wm))
    head = [
        OpSpec("conv", c, head_c, h, h, kernel=1, act="relu6"),
        OpSpec("pool", head_c, head_c, h, h, act="none"),
        OpSpec("linear", head_c, p["num_classes"], 1, 1, act="none"),
    ]
    return SearchSpace(name, p, stem, positions, head)


def fbnet_op(name: str, c_in: int, c_out: int, h: int, stride: int) -> OpSpec:
    """The FBNet candidate ``name`` (e.g. ``k5_e1_g2`` or ``skip``) at one position."""
    if name == "skip":
        return OpSpec("skip", c_in, c_out, h, h, kernel=1, stride=stride, act="relu")
    parts = name.split("_")
    kernel, expand = int(parts[0][1:]), int(parts[1][1:])
    groups = 2 if len(parts) == 3 else 1
    return OpSpec("ir", c_in, c_out, h, h, kernel=kernel, stride=stride, expand=expand, groups=groups, act="relu")


def _fbnet(name: str, p: dict) -> SearchSpace:
    res, wm = p["resolution"], p["width_mult"]
    stem_c = make_divisible(p["stem_channels"] * wm)
    stem = [OpSpec("conv", 3, stem_c, res, res, kernel=3, stride=p["stem_stride"], act="relu")]
    c, h = stem_c, stem[0].out_h
    positions = []
    for stage_idx, (channels, layers, stride) in enumerate(p["stages"]):
        c_out = make_divisible(channels * wm)
        for layer in range(layers):
            s = stride if layer == 0 else 1
            ops = tuple(fbnet_op(n, c, c_out, h, s) for n in FBNET_CANDIDATES)
            positions.append(Position(len(positions), stage_idx, FBNET_CANDIDATES, ops))
            c, h = c_out, ops[0].out_h
    head_c = make_divisible(p["head_channels"] * max(1.0, wm))
    head = [
        OpSpec("conv", c, head_c, h, h, kernel=1, act="relu"),
        OpSpec("pool", head_c, head_c, h, h, act="none"),
        OpSpec("linear", head_c, p["num_classes"], 1, 1, act="none"),
    ]
    return SearchSpace(name, p, stem, positions, head)


def get_space(name: str, overrides: dict | None = None) -> SearchSpace:
    """Build the preset ``name`` with some fields overridden."""
    if name not in PRESETS:
        raise HwnasError(f"unknown search space {name!r}; known: {', '.join(PRESETS)}")
    params = dict(PRESETS[name])
    for key, value in (overrides or {}).items():
        if key not in params:
            raise HwnasError(f"space {name}: unknown field {key!r}; known: {', '.join(sorted(params))}")
        if key == "family" and value != params["family"]:
            raise HwnasError(f"space {name}: field 'family' is {params['family']!r}, got {value!r}")
        params[key] = value
    if isinstance(params.get("stages"), tuple):
        params["stages"] = [list(s) for s in params["stages"]]
    _check_params(name, params)
    builder = _proxyless if params["family"] == "proxyless" else _fbnet
    return builder(name, params)


def list_spaces() -> list[str]:
    return list(PRESETS)
