"""Network files: a chain architecture or a cell genotype, told apart by their content.

``load_network(path)`` returns an :class:`~hwnas.arch.Architecture` or a
:class:`~hwnas.cells.genotype.Genotype` (a JSON object whose ``space`` is
``darts-cell`` or that has ``normal``/``reduce`` fields); both offer ``space``,
``space_name``, ``ops()``, ``cost()`` and ``to_dict()``. ``build_standalone``
builds the PyTorch network of either.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from hwnas.arch import Architecture
from hwnas.cells.genotype import Genotype
from hwnas.cells.space import CELL_SPACE
from hwnas.errors import HwnasError
from hwnas.jsonfile import read_json


def is_genotype(data: object) -> bool:
    return isinstance(data, dict) and (data.get("space") == CELL_SPACE or "normal" in data or "reduce" in data)


def load_network(path: str | Path) -> Architecture | Genotype:
    """The architecture or genotype in ``path``; HwnasError naming the file and field otherwise."""
    path = Path(path)
    data = read_json(path)
    kind = Genotype if is_genotype(data) else Architecture
    try:
        return kind.from_dict(data)
    except HwnasError as exc:
        raise HwnasError(f"{path}: {exc}") from None


def build_standalone(net: Architecture | Genotype) -> nn.Module:
    """The standalone PyTorch network of an architecture or a genotype (random weights)."""
    if isinstance(net, Genotype):
        from hwnas.cells.network import build_cell_network

        return build_cell_network(net)
    from hwnas.builder import build_model

    return build_model(net)
