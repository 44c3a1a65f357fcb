"""Output locations: one check, before any long work, that a folder or file can be written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hwnas.errors import HwnasError


def _nearest_existing(path: Path) -> Path:
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_writable_folder(path: str | Path, what: str = "--out") -> Path:
    """``path`` as a Path when it is (or can be created as) a writable folder; HwnasError naming it otherwise.

    Nothing is created: the nearest existing folder on the way is probed with a
    temporary folder, removed again (root passes permission checks, so only
    trying tells).
    """
    path = Path(path)
    _probe(path, path, what)
    return path


def _probe(folder: Path, named: Path, what: str) -> None:
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise HwnasError(f"{what} {named}: {base} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".hwnas-probe-", dir=base))
    except OSError as exc:
        raise HwnasError(f"{what} {named}: cannot write in {base} ({exc.strerror or exc})") from None


def check_writable_file(path: str | Path, what: str = "--out") -> Path:
    """``path`` as a Path when a file can be written there (its folder writable, not itself a folder)."""
    path = Path(path)
    if path.is_dir():
        raise HwnasError(f"{what} {path}: is a folder, expected a file name")
    _probe(path.parent, path, what)
    return path
