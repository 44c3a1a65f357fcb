"""``hwnas arch sample|show``: random architectures and per-block cost tables."""

from __future__ import annotations

import random
from pathlib import Path

from hwnas.arch import Architecture, cost_table, sample_architecture
from hwnas.costs import op_cost
from hwnas.cli.space import add_space_arguments, space_from_args
from hwnas.errors import HwnasError
from hwnas.netfile import load_network


MAX_SAMPLES = 100_000


def _sample(args) -> int:
    if not 1 <= args.n <= MAX_SAMPLES:
        raise HwnasError(f"--n must be from 1 to {MAX_SAMPLES} (one file each), got {args.n}")
    space = space_from_args(args)
    rng = random.Random(args.seed)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HwnasError(f"{out}: cannot create folder ({exc.strerror})") from None
    for i in range(args.n):
        path = out / f"{space.name}-s{args.seed}-{i:04d}.json"
        sample_architecture(space, rng).save(path)
        print(path)
    return 0


def _genotype_table(genotype) -> list[tuple[str, object, object]]:
    """Rows (label, op, cost) of a cell genotype's network: stem, each cell's preprocessing and edges, head."""
    space = genotype.space
    rows = [("stem", space.stem())]
    for layout in space.layouts:
        tag = f"cell{layout.index}{'-reduce' if layout.reduction else ''}"
        rows += [(f"{tag}:pre{i}", op) for i, op in enumerate(space.preprocess(layout))]
        for j, node_inputs in enumerate(genotype.cell(layout.reduction)):
            rows += [(f"{tag}:{inp}->{j + 2}", space.edge_op(layout, inp, name)) for name, inp in node_inputs]
    rows += [("head", op) for op in space.head()]
    return [(label, op, op_cost(op)) for label, op in rows]


def _show(args) -> int:
    arch = load_network(args.file)
    genotype = not isinstance(arch, Architecture)
    print(f"{args.file}: space {arch.space_name}")
    print(f"{'block':18s} {'kind':8s} {'in':>14s} {'out':>14s} {'k':>2s} {'s':>2s} {'e':>2s} "
          f"{'MFLOPs':>9s} {'params':>9s} {'MAC':>10s}")
    for label, op, cost in (_genotype_table(arch) if genotype else cost_table(arch)):
        print(f"{label:18s} {op.kind:8s} {f'{op.c_in}x{op.h}x{op.w}':>14s} "
              f"{f'{op.c_out}x{op.out_h}x{op.out_w}':>14s} {op.kernel:2d} {op.stride:2d} {op.expand:2d} "
              f"{cost.flops / 1e6:9.3f} {cost.params:9d} {cost.mac:10d}")
    total = arch.cost()
    print(f"{'total':18s} {'':8s} {'':14s} {'':14s} {'':2s} {'':2s} {'':2s} "
          f"{total.flops / 1e6:9.3f} {total.params:9d} {total.mac:10d}")
    print("FLOPs are multiply-adds; MAC is memory access in elements (see hwnas.costs)"
          + ("; the total MAC includes the sums at each cell node." if genotype else "."))
    return 0


def register(sub) -> None:
    parser = sub.add_parser("arch", help="sample architectures or show one's blocks and costs")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("sample", help="write N random valid architectures as JSON files")
    add_space_arguments(p, default="proxyless-tiny")
    p.add_argument("--n", type=int, default=1, help="how many (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--out", default="archs", help="output folder (default archs/)")
    p.set_defaults(func=_sample)
    p = actions.add_parser("show", help="print a table of blocks with FLOPs, params and MAC")
    p.add_argument("file", help="architecture or cell genotype JSON file")
    p.set_defaults(func=_show)
