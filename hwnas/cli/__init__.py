"""The ``hwnas`` command line: the only place that parses arguments.

Each sub-command lives in its own module of this package and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a function
taking the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from hwnas import __version__
from hwnas.errors import HwnasError

# Modules of hwnas.cli, in the order their commands appear in --help.
COMMAND_MODULES = [
    "space", "arch", "profile", "measure", "fit", "predict", "predictors", "search", "train", "export",
    "run", "tune", "phones", "kernels",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwnas", description="Hardware-aware neural architecture search for mobile models."
    )
    parser.add_argument("--version", action="version", version=f"hwnas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"hwnas.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HwnasError as exc:
        if getattr(args, "json", False):
            from hwnas.cli.jsonout import print_json

            print_json({"error": str(exc)})
        return _report_error(f"hwnas: error: {exc}")
    except KeyboardInterrupt:
        print("hwnas: interrupted", file=sys.stderr)
        return 130


def _report_error(message: str) -> int:
    """Print the one-line error; exit code 2.

    Under ``torchrun`` every rank runs the same checks, so only rank 0 prints the line;
    every rank hands it to the launcher's failure summary and leaves the process group
    (:func:`hwnas.search.distributed.leave_after_error`).
    """
    under_torchrun = "TORCHELASTIC_ERROR_FILE" in os.environ or "LOCAL_RANK" in os.environ
    if int(os.environ.get("RANK", "0")) == 0:
        print(message, file=sys.stderr)
    if under_torchrun:
        from hwnas.search.distributed import leave_after_error

        leave_after_error(message)
    return 2


if __name__ == "__main__":
    sys.exit(main())
