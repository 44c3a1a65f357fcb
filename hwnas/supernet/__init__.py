"""Supernets for gradient search: mixed operators and chain-space supernets."""

from hwnas.supernet.mixed_op import MODES, MixedOp, make_mode
from hwnas.supernet.supernet import Supernet, recalibrate_bn

__all__ = ["MODES", "MixedOp", "Supernet", "make_mode", "recalibrate_bn"]
