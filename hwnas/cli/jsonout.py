"""``--json`` for commands: the result as JSON on stdout, everything else on stderr."""

from __future__ import annotations

import contextlib
import json
import sys


def add_json_argument(parser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the result as JSON on stdout (messages go to stderr)")


@contextlib.contextmanager
def messages_to_stderr(enabled: bool):
    """While active and ``enabled``, what the command prints goes to stderr (stdout is kept for the JSON)."""
    if not enabled:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield


def print_json(data) -> None:
    print(json.dumps(data, indent=2, default=str))
