"""Gradient search under a latency budget: losses, per-mode updates and the training loop."""

from hwnas.search.config import SearchConfig, SearchResult


def run_search(config: SearchConfig) -> SearchResult:
    """Run a gradient search (see :mod:`hwnas.search.loop`)."""
    from hwnas.search.loop import run_search as _run

    return _run(config)


__all__ = ["SearchConfig", "SearchResult", "run_search"]
