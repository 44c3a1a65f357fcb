"""The DARTS/SNAS cell search space: cells, genotypes, derivation, cell supernet and search.

Modules: :mod:`~hwnas.cells.ops` (edge operations as OpSpecs; their blocks and costs live in
:mod:`hwnas.blocks` and :mod:`hwnas.costs`), :mod:`~hwnas.cells.space` (the ``darts-cell`` space),
:mod:`~hwnas.cells.genotype` (genotype JSON, its operators and cost), :mod:`~hwnas.cells.network`
(standalone network), :mod:`~hwnas.cells.supernet`, :mod:`~hwnas.cells.derive`
(DARTS and SNAS rules), :mod:`~hwnas.cells.search` and :mod:`~hwnas.cells.draw`.
"""

from hwnas.cells.genotype import Genotype, network_cost, network_ops
from hwnas.cells.network import build_cell_network
from hwnas.cells.ops import PRIMITIVES
from hwnas.cells.space import CELL_SPACE, CellSpace

__all__ = ["CELL_SPACE", "PRIMITIVES", "CellSpace", "Genotype", "build_cell_network", "network_cost", "network_ops"]
