"""Zero-cost accuracy proxies: rank children without training them (issue 20).

A proxy maps an architecture to a number that should grow with the accuracy the network reaches when trained:

* ``flops``, ``params``, ``mac``: the analytic FLOPs, parameter count and memory access of :mod:`hwnas.costs`
  (for children of a space they come from the additive :func:`hwnas.children.analytic_table`, microseconds a
  child);
* ``synflow``: log10 of the SynFlow score (Tanaka et al. 2020, as a zero-cost proxy: Abdelfattah et al. 2021) of
  the network at initialisation: every weight replaced by its absolute value, activations removed (with positive
  weights and an all-ones input a ReLU passes everything; ReLU6 would clip), BatchNorm at its initial statistics
  (identity), one all-ones image in float64; the score is ``sum |w * dR/dw|`` for ``R`` the sum of the outputs.
  The initial weights are drawn with ``seed``; a child takes ~0.1 s on one core.

At equal predicted latency, ranking children of run E by MFLOPs alone agrees with their stand-alone accuracy far
better than the short-trained supernet does (docs/search.md, "Does the supernet rank children?").
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from hwnas.arch import Architecture
from hwnas.children import Child, analytic_table, child_arch
from hwnas.errors import HwnasError
from hwnas.spaces import SearchSpace

ANALYTIC = {"flops": "flops", "params": "params", "mac": "mac"}
PROXIES = ("flops", "params", "mac", "synflow")
UNITS = {"flops": "MFLOPs", "params": "M params", "mac": "M MAC", "synflow": "log10 synflow"}


def _check(name: str) -> None:
    if name not in PROXIES:
        raise HwnasError(f"unknown proxy {name!r}: choose one of {', '.join(PROXIES)}")


def synflow(arch: Architecture, seed: int = 0) -> float:
    """log10 of the SynFlow score of ``arch`` at initialisation (see the module docstring)."""
    from hwnas.builder import build_model

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(arch)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU, nn.GELU)):
                setattr(module, name, nn.Identity())
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    res = arch.space.params.get("resolution", 32)
    model(torch.ones(1, 3, res, res, dtype=torch.float64)).sum().backward()
    total = sum(float((p.detach() * p.grad).abs().sum()) for p in model.parameters() if p.grad is not None)
    return math.log10(total) if total > 0 else float("-inf")


def proxy_of(arch: Architecture, name: str, seed: int = 0) -> float:
    """The proxy ``name`` of one architecture (FLOPs, params, MAC in millions; synflow as log10)."""
    _check(name)
    if name == "synflow":
        return synflow(arch, seed)
    return getattr(arch.cost(), ANALYTIC[name]) / 1e6


def proxy_scorer(space: SearchSpace, name: str, seed: int = 0) -> Callable[[Child], float]:
    """``score(child)``: the proxy ``name`` of a child of ``space`` (analytic ones from one cost table)."""
    _check(name)
    if name in ANALYTIC:
        table = analytic_table(space, ANALYTIC[name])
        return lambda child: table.cost(child) / 1e6
    return lambda child: synflow(child_arch(space, child), seed)
