"""``hwnas space list|show``: the search spaces and their positions."""

from __future__ import annotations

import json

from hwnas.cells.space import CELL_SPACE, CellSpace
from hwnas.errors import HwnasError
from hwnas.spaces import PRESETS, get_space

# What `space list` and `space show` know: the chain presets and the DARTS cell space.
SPACE_NAMES = [*PRESETS, CELL_SPACE]


def parse_overrides(pairs: list[str] | None) -> dict:
    """``--set key=value`` pairs; values are parsed as JSON when they can be."""
    overrides = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise HwnasError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            overrides[key] = json.loads(value)
        except (ValueError, RecursionError):  # not JSON (or too deep / too long for Python): the text itself
            overrides[key] = value
    return overrides


def add_space_arguments(parser, default: str | None = None, names=PRESETS) -> None:
    """``--space`` and ``--set`` options shared by commands that take a space (one of ``names``)."""
    parser.add_argument("--space", default=default, required=default is None,
                        help=f"search space ({', '.join(names)})")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE",
                        help="override a field of the space preset, e.g. --set width_mult=0.5 (repeatable)")


def space_from_args(args):
    return get_space(args.space, parse_overrides(args.set))


def _list(args) -> int:
    for name in PRESETS:
        space = get_space(name)
        p = space.params
        print(f"{name:18s} {p['family']:9s} {p['resolution']:3d}px {len(space.positions):2d} positions "
              f"{space.size:.2e} architectures")
    cells = CellSpace()
    print(f"{CELL_SPACE:18s} {'cell':9s} {cells.params['resolution']:3d}px {cells.num_edges:2d} edges x2  "
          f"{cells.size:.2e} architectures (docs/cells.md)")
    return 0


def _show(args) -> int:
    if args.space not in SPACE_NAMES:
        raise HwnasError(f"unknown search space {args.space!r}; known: {', '.join(SPACE_NAMES)}")
    if args.space == CELL_SPACE:
        print(CellSpace(parse_overrides(args.set)).describe())
    else:
        print(space_from_args(args).describe())
    return 0


def register(sub) -> None:
    parser = sub.add_parser("space", help="list search spaces or show one's positions and candidates")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("list", help="list the space presets")
    p.set_defaults(func=_list)
    p = actions.add_parser("show", help="print a space's positions, candidates and size")
    add_space_arguments(p, default="proxyless-tiny", names=SPACE_NAMES)
    p.set_defaults(func=_show)
