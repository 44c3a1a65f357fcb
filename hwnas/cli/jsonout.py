"""``--json`` for commands: the result as JSON on stdout, everything else on stderr."""

from __future__ import annotations

import contextlib
import json
import math
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
    """``data`` as JSON on stdout; a NaN or infinite number is written as null (JSON has neither)."""
    print(json.dumps(_finite(data), indent=2, default=str, allow_nan=False))


def _finite(data):
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data
