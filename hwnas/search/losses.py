"""The resource part of the search loss, and fitting a derived child to the budget.

Architecture loss = cross-entropy (+ weight decay, applied by the weight
optimizer) + ``lambda_lat x latency term`` + ``eta_F E[FLOPs] + eta_M E[MAC] +
eta_P E[params]``, where every ``E[.]`` is ``fixed + sum_pos sum_i p_i cost_i``
with ``p = softmax(alpha)``. FLOPs and MAC are in millions (M multiply-adds, M
elements), params in millions.

Latency term
------------
* With a budget ``B`` (ms): the **hinge** ``max(0, LAT / B - 1)``. It is
  exactly zero under the budget (the search is free to trade latency for
  accuracy there) and grows linearly above it, with a gradient that does not
  vanish just above ``B`` (unlike a squared hinge) and does not keep pushing
  once under it (unlike MnasNet's ``(LAT/B)^beta``, which rewards being faster
  everywhere). By default ``LAT`` is the latency of the child that would be
  derived now (argmax per position) with the gradient of ``E[LAT]``
  (straight-through): early in a search the distribution is broad, ``E[LAT]``
  sits far above the argmax child's latency, and a hinge on ``E[LAT]`` keeps
  pushing every position to its cheapest path long after the derived child is
  under the budget. ``budget_on="expected"`` uses ``E[LAT]`` itself. The
  derived child is finally the most probable child whose latency lies in the
  budget band (:mod:`hwnas.search.band`).
* Without a budget: ``E[LAT] / L_ref`` with ``L_ref`` the slowest child's
  latency (so ``lambda_lat`` is unit-free).
"""

from __future__ import annotations

import math

import torch

from hwnas.supernet import Supernet

SCALE = {"flops": 1e6, "mac": 1e6, "params": 1e6}


def budget_penalty(expected_ms: torch.Tensor, budget_ms: float) -> torch.Tensor:
    """``max(0, E[LAT]/B - 1)``: zero under the budget, linear above it."""
    return torch.relu(expected_ms / budget_ms - 1.0)


def latency_term(expected_ms: torch.Tensor, budget_ms: float | None, reference_ms: float) -> torch.Tensor:
    if budget_ms is not None:
        return budget_penalty(expected_ms, budget_ms)
    return expected_ms / reference_ms


def resource_loss(net: Supernet, lambda_lat: float, budget_ms: float | None, reference_ms: float,
                  eta: dict[str, float], budget_on: str = "derived") -> tuple[torch.Tensor, dict[str, float]]:
    """(differentiable resource loss, expected latency/FLOPs/MAC/params as plain numbers).

    ``budget_on="derived"``: the budget hinge sees the derived (argmax) child's
    latency with the gradient of the expected latency (straight-through), so
    the push stops once the child that will be derived meets the budget;
    ``"expected"``: the hinge sees the expected latency itself.
    """
    probs = net.probs()
    loss = torch.zeros((), device=probs[0].device)
    stats = {}
    if net.has_latency:
        lat = net.expected("latency", probs)
        stats["exp_latency_ms"] = float(lat.detach())
        if lambda_lat:
            if budget_ms is not None and budget_on == "derived":
                derived_ms = net.cost_of("latency", net.argmax_choices())
                lat = lat + (derived_ms - lat.detach())
            loss = loss + lambda_lat * latency_term(lat, budget_ms, reference_ms)
    for kind in ("flops", "mac", "params"):
        value = net.expected(kind, probs) / SCALE[kind]
        stats[f"exp_m{kind}"] = float(value.detach())
        if eta.get(kind):
            loss = loss + eta[kind] * value
    return loss, stats


def entropy(probs: torch.Tensor) -> float:
    p = probs.detach().clamp_min(1e-12)
    return float(-(p * p.log()).sum()) / math.log(len(p)) if len(p) > 1 else 0.0
