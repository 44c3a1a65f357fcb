"""Reading a user's JSON file with one-line errors that name it."""

from __future__ import annotations

import json
from pathlib import Path

from hwnas.errors import HwnasError


def read_json(path: str | Path, what: str = "file"):
    """The parsed content of ``path``; a missing, unreadable or malformed file raises :class:`HwnasError`."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise HwnasError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HwnasError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise HwnasError(f"{path}: bad JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
