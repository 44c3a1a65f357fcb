"""Sample-based search strategies: propose architectures, receive scores (ask/tell).

A strategy (:mod:`hwnas.strategies.base`) never evaluates anything itself; the
runner (:mod:`hwnas.strategies.runner`) asks it for an architecture, scores it
with an evaluator (:mod:`hwnas.strategies.evaluators`) and tells it the score.

Strategies: ``random`` (:mod:`.random_search`), ``evolution`` (regularized
evolution, :mod:`.evolution`), ``rl`` (LSTM controller + REINFORCE, :mod:`.rl`)
and ``progressive`` (PNAS-style with a surrogate, :mod:`.progressive`).
"""

from __future__ import annotations

from hwnas.errors import HwnasError
from hwnas.spaces import SearchSpace

STRATEGIES = ("random", "evolution", "rl", "progressive")


def make_strategy(name: str, space: SearchSpace, seed: int = 0, **options):
    """The strategy ``name`` on ``space``; ``options`` go to its constructor (None values ignored)."""
    options = {k: v for k, v in options.items() if v is not None}
    if name == "random":
        from hwnas.strategies.random_search import RandomSearch as cls
    elif name == "evolution":
        from hwnas.strategies.evolution import RegularizedEvolution as cls
    elif name == "rl":
        from hwnas.strategies.rl import ControllerSearch as cls
    elif name == "progressive":
        from hwnas.strategies.progressive import ProgressiveSearch as cls
    else:
        raise HwnasError(f"unknown search strategy {name!r}; known: {', '.join(STRATEGIES)}")
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters)
    return cls(space, seed=seed, **{k: v for k, v in options.items() if k in accepted})
