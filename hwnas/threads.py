"""Thread counts: one check for every ``--threads`` value, one place that sets PyTorch's.

The networks hwnas trains are small, and on a small shared CPU one torch thread
trains them several times faster than two (5-10x on the 2-core machines), so
every command that trains or evaluates with torch defaults to
:data:`TORCH_THREADS`; 0 leaves the number to torch.
"""

from __future__ import annotations

import os

from hwnas.errors import HwnasError

TORCH_THREADS = 1
TORCH_THREADS_HELP = "torch CPU threads (default 1: fastest for these small networks; 0: torch's own choice)"


def max_threads() -> int:
    """The most threads any command accepts: 4 per core of this machine (at least 8, a phone's cores)."""
    return max(8, 4 * (os.cpu_count() or 1))


def check_threads(value, what: str = "--threads", minimum: int = 0) -> int:
    """``value`` when it is an integer in [``minimum``, :func:`max_threads`]; HwnasError naming ``what`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= max_threads():
        allowed = "0 (torch's own choice)" if minimum == 0 else f"{minimum}"
        raise HwnasError(f"{what} must be an integer from {allowed} to {max_threads()} (4 per core of this "
                         f"machine), got {value!r}")
    return value


def use_torch_threads(threads: int, what: str = "--threads") -> int:
    """Check ``threads`` and make torch use that many CPU threads (0: leave torch's default)."""
    check_threads(threads, what)
    if threads:
        import torch

        torch.set_num_threads(threads)
    return threads
