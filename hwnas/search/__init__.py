"""Gradient search under a latency budget: losses, per-mode updates and the training loop."""

from hwnas.search.config import SearchConfig, SearchResult


def run_search(config: SearchConfig, splits=None) -> SearchResult:
    """Run a gradient search: the weight-entangled supernet (:mod:`hwnas.search.entangled_loop`, default) or the
    separate-weights one (:mod:`hwnas.search.loop`). ``splits`` (a :class:`hwnas.data.Splits`) replaces
    ``config.dataset`` for the entangled search (benchmarks that hold images out of the search)."""
    config.check()
    if config.relevel:
        from hwnas.search.session_level import level_for_search

        config.latency_level = level_for_search(config)
    if config.supernet == "entangled":
        from hwnas.search.entangled_loop import run_entangled_search

        return run_entangled_search(config, splits)
    from hwnas.search.loop import run_search as _run

    return _run(config)


__all__ = ["SearchConfig", "SearchResult", "run_search"]
