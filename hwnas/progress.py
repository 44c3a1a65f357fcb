"""Progress bars: the one place hwnas makes them.

:func:`progress_bar` is ``tqdm`` with two switches: ``enabled=False`` (a
command's ``--no-progress``) turns it off, and it is off by itself when its
stream (stderr) is not a terminal, so logs and pipes get no bar refreshes
(tqdm's ``disable=None``). ``add_progress_argument`` adds ``--no-progress``.
"""

from __future__ import annotations

from tqdm import tqdm


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar, shown only when ``enabled`` and writing to a terminal."""
    return tqdm(iterable, disable=None if enabled else True, **kwargs)


def add_progress_argument(parser) -> None:
    """``--no-progress`` (``args.no_progress``); bars are off anyway when stderr is not a terminal."""
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (they are off anyway when output is not a terminal)")
