"""Gradient search under a latency budget: losses, per-mode updates and the training loops on one engine."""

from hwnas.search.config import SearchConfig, SearchResult


def run_search(config: SearchConfig, splits=None, predictor=None, level: float | None = None) -> SearchResult:
    """Run a gradient search: the weight-entangled supernet (:mod:`hwnas.search.entangled_loop`, default) or the
    separate-weights one (:mod:`hwnas.search.loop`).

    ``predictor``: the loaded latency predictor (default: ``config.predictor`` loaded here, or the analytic
    proxy); ``level``: the session level to aim with (default: measured now when ``config.relevel``, else
    ``config.latency_level``); the level used comes back as ``result.level``; ``config`` is not changed.
    ``splits`` (a :class:`hwnas.data.Splits`) replaces ``config.dataset`` for the entangled search (benchmarks
    that hold images out of the search)."""
    from hwnas.search.latency import leveled, load_latency_predictor
    from hwnas.spaces import get_space

    config.check()
    space = get_space(config.space, config.space_params)
    if predictor is None:
        predictor, source = load_latency_predictor(space, config.predictor)
    else:
        source = str(config.predictor) if config.predictor else predictor.device.get("name", "predictor")
    if level is None:
        level = config.latency_level
        if config.relevel:
            from hwnas.search.session_level import level_for_search

            level = level_for_search(config, space, predictor)
    predictor, source = leveled(predictor, source, level)
    if config.supernet == "entangled":
        from hwnas.search.entangled_loop import run_entangled_search

        result = run_entangled_search(config, predictor, source, level, splits)
    else:
        from hwnas.search.loop import run_separate_search

        result = run_separate_search(config, predictor, source, level)
    result.level = level
    return result


__all__ = ["SearchConfig", "SearchResult", "run_search"]
