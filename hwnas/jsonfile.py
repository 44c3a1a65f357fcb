"""Reading a user's JSON file, or a JSON-lines log, with one-line errors that name it."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

from hwnas.errors import HwnasError


def parse_json(text: str, where: str | Path):
    """``json.loads(text)``; bad JSON, nesting too deep for Python or an integer too long to convert raise
    :class:`HwnasError` naming ``where``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise HwnasError(f"{where}: bad JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise HwnasError(f"{where}: bad JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise HwnasError(f"{where}: bad JSON: {exc}") from None


def read_json(path: str | Path, what: str = "file"):
    """The parsed content of ``path``; a missing, unreadable or malformed file raises :class:`HwnasError`."""
    return read_json_and_digest(path, what)[0]


def read_json_and_digest(path: str | Path, what: str = "file"):
    """(:func:`read_json` of ``path``, the SHA-256 hex digest of the bytes parsed): one read of the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = raw.decode()
    except FileNotFoundError:
        raise HwnasError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise HwnasError(f"{path}: is a folder, expected a {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HwnasError(f"{path}: cannot read ({exc})") from None
    return parse_json(text, path), hashlib.sha256(raw).hexdigest()


def read_jsonl(path: str | Path, what: str = "a record", check=None) -> list[dict]:
    """The JSON objects of a log written one line per record (train/search metrics, trials, evaluations).

    A last line without its newline that does not parse (a write cut short by an
    interruption) is dropped with a warning and cut from the file, so the next
    append starts on a clean line; any other bad line raises HwnasError naming
    the file and line. ``check(record)`` may raise ValueError for a record of
    the wrong shape. A missing file has no records.
    """
    path = Path(path)
    if not path.exists():
        return []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise HwnasError(f"{path}: cannot read ({exc})") from None
    lines = text.split("\n")  # a complete file ends with "\n": its last element is ""
    records, good_chars = [], 0
    for lineno, line in enumerate(lines, 1):
        if line.strip():
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                if check is not None:
                    check(record)
            except (ValueError, RecursionError) as exc:  # json.JSONDecodeError is a ValueError
                if lineno == len(lines):
                    warnings.warn(f"{path}, line {lineno}: ignoring an incomplete last line (interrupted write)")
                    break
                raise HwnasError(f"{path}, line {lineno}: not {what} ({exc})") from None
            records.append(record)
        good_chars += len(line) + 1
    if good_chars < len(text):
        path.write_text(text[:good_chars])
    return records
