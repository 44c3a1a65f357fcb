"""Supernets for gradient search: mixed operators and chain-space supernets."""

from hwnas.supernet.mixed_op import MODES, MixedOp, make_mode
from hwnas.supernet.recalibrate import recalibrate_bn
from hwnas.supernet.supernet import Supernet

__all__ = ["MODES", "MixedOp", "Supernet", "make_mode", "recalibrate_bn"]
