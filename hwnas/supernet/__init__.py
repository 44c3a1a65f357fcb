"""Supernets for gradient search: mixed operators and chain-space supernets.

Every supernet (:class:`Supernet`, :class:`~hwnas.supernet.entangled.EntangledSupernet`,
:class:`~hwnas.cells.supernet.CellSupernet`) speaks one vocabulary about a child: ``set_child(child)`` (run
exactly it; None: the supernet again), ``sample_child(generator)``, ``child_cost(child, kind)`` and
``extract(child)`` (its standalone network holding the shared weights). A child is the supernet's own kind of
architecture: candidate names, a :class:`~hwnas.children.Child`, a genotype.
"""

from hwnas.supernet.mixed_op import MODES, MixedOp, make_mode
from hwnas.supernet.recalibrate import recalibrate_bn
from hwnas.supernet.supernet import Supernet

__all__ = ["MODES", "MixedOp", "Supernet", "make_mode", "recalibrate_bn"]
