"""``hwnas predictors list [FOLDER]``: the predictor files of a folder, one line each."""

from __future__ import annotations

import sys

from hwnas.cli.jsonout import add_json_argument, print_json


def _list(args) -> int:
    from hwnas.predictors.catalog import list_predictors

    entries, skipped = list_predictors(args.folder)
    if args.json:
        print_json([e.to_dict() for e in entries])
    else:
        width = max([len(e.file) for e in entries] + [4])
        print(f"{'file':{width}s}  {'device':14s} {'runtime':11s} {'dtype':5s} {'thr':>3s}  {'space':16s} "
              f"{'type':11s} accuracy on whole networks (recorded in the file)")
        for e in entries:
            threads = "-" if e.threads is None else str(e.threads)
            accuracy = f"REFUSED: {e.refused}" if e.refused else e.accuracy.text() if e.accuracy else "-"
            print(f"{e.file:{width}s}  {e.device:14s} {e.runtime:11s} {e.dtype:5s} {threads:>3s}  {e.space:16s} "
                  f"{e.type:11s} {accuracy}")
    if not entries:
        print(f"no predictor files under {args.folder}", file=sys.stderr)
    for why in skipped:
        print(f"skipped: {why}", file=sys.stderr)
    return 0


def register(sub) -> None:
    parser = sub.add_parser("predictors", help="list predictor files (device, runtime, dtype, space, accuracy)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = actions.add_parser("list", help="one line per predictor file under FOLDER (recursively)")
    p.add_argument("folder", nargs="?", default="predictors", metavar="FOLDER",
                   help="folder to search (default predictors/)")
    add_json_argument(p)
    p.set_defaults(func=_list)
