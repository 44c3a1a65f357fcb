"""The supernet of a chain space: fixed stem, one :class:`MixedOp` per position, fixed head.

Works for every chain space (``proxyless-*``, ``fbnet-*``). Besides the forward
pass it knows each candidate's analytic cost (:mod:`hwnas.costs`) and, once
:meth:`Supernet.set_latency` is called, its predicted latency, so expected
costs ``sum_positions sum_candidates p x cost`` are differentiable in alpha.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from hwnas.arch import Architecture, architecture_of
from hwnas.blocks import make_block
from hwnas.costs import op_cost, total_cost
from hwnas.spaces import SearchSpace
from hwnas.supernet.mixed_op import MixedOp, Mode, make_mode

COST_KINDS = ("flops", "mac", "params")


class Supernet(nn.Module):
    """All candidates of a chain space with architecture parameters per position."""

    def __init__(self, space: SearchSpace, mode: str | Mode = "proxyless"):
        super().__init__()
        self.space = space
        self.mode = make_mode(mode) if isinstance(mode, str) else mode
        self.stem = nn.Sequential(*[make_block(op) for op in space.stem])
        self.mixed = nn.ModuleList(
            MixedOp([make_block(op) for op in pos.ops], list(pos.names), self.mode) for pos in space.positions
        )
        self.head = nn.Sequential(*[make_block(op) for op in space.head])
        fixed = total_cost(list(space.stem) + list(space.head))
        self.fixed_cost = {kind: float(getattr(fixed, kind)) for kind in COST_KINDS}
        for kind in COST_KINDS:
            for i, pos in enumerate(space.positions):
                values = torch.tensor([float(getattr(op_cost(op), kind)) for op in pos.ops])
                self.register_buffer(f"_{kind}_{i}", values, persistent=False)
        self.fixed_cost["latency"] = 0.0
        self.has_latency = False

    # -- forward ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for op in self.mixed:
            x = op(x)
        return self.head(x)

    def resample(self, phase: str, generator: torch.Generator | None = None) -> None:
        """Draw this step's paths at every position ('weight' or 'arch' phase)."""
        for op in self.mixed:
            op.sample(phase, generator)

    def sampled_paths(self) -> list[int]:
        """Index of the path each position ran in the last step (-1 where all paths ran)."""
        out = []
        for op in self.mixed:
            if op.fixed is not None:
                out.append(op.fixed)
            elif isinstance(op.sampled, tuple):
                out.append(op.sampled_index())
            else:
                out.append(-1)
        return out

    def set_active(self, choices: list[str] | None) -> None:
        """Run exactly one child (one candidate name per position); ``None`` restores sampling."""
        if choices is not None and len(choices) != len(self.mixed):
            raise ValueError(f"expected {len(self.mixed)} choices, got {len(choices)}")
        for i, op in enumerate(self.mixed):
            op.set_active(None if choices is None else choices[i])

    # -- the supernet vocabulary (as EntangledSupernet and CellSupernet speak it): a child is its choices ----
    def set_child(self, child: list[str] | None) -> None:
        """Run exactly ``child`` (one candidate name per position); ``None`` returns to the supernet."""
        self.set_active(child)

    def sample_child(self, generator: torch.Generator | None = None) -> list[str]:
        """A child drawn from the architecture distribution (one draw per position)."""
        return [op.names[int(torch.multinomial(op.probs().detach(), 1, generator=generator))] for op in self.mixed]

    def child_cost(self, child: list[str], kind: str = "latency") -> float:
        """The child's cost ``kind`` (flops|mac|params, or latency once :meth:`set_latency` is called)."""
        return self.cost_of(kind, child)

    @torch.no_grad()
    def extract(self, child: list[str]) -> nn.Sequential:
        """The child's standalone network (:func:`hwnas.builder.build_model`) holding the supernet's weights."""
        from hwnas.builder import build_model

        model = build_model(architecture_of(self.space, child))
        chosen = [op.candidates[op.names.index(c)] for op, c in zip(self.mixed, child) if c != "zero"]
        for dst, src in zip(model, list(self.stem) + chosen + list(self.head)):
            dst.load_state_dict(src.state_dict())
        return model

    # -- parameters ---------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [op.alpha for op in self.mixed]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def named_weight_parameters(self) -> Iterable[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if not n.endswith(".alpha")]

    def probs(self) -> list[torch.Tensor]:
        return [op.probs() for op in self.mixed]

    # -- costs ------------------------------------------------------------------------------
    def set_latency(self, per_position: list[torch.Tensor], fixed_ms: float) -> None:
        """Predicted ms per candidate (in ``position.names`` order) and of the fixed stem + head."""
        if len(per_position) != len(self.mixed):
            raise ValueError(f"expected {len(self.mixed)} latency tensors, got {len(per_position)}")
        for i, (values, op) in enumerate(zip(per_position, self.mixed)):
            values = torch.as_tensor(values, dtype=torch.float32).detach().reshape(-1)
            if len(values) != len(op.names):
                raise ValueError(f"position {i}: {len(values)} latencies for {len(op.names)} candidates")
            self.register_buffer(f"_latency_{i}", values.to(op.alpha.device), persistent=False)
        self.fixed_cost["latency"] = float(fixed_ms)
        self.has_latency = True

    def cost_table(self, kind: str) -> list[torch.Tensor]:
        """Per position: the cost ``kind`` (flops|mac|params|latency) of each candidate."""
        if kind == "latency" and not self.has_latency:
            raise ValueError("no latency set on this supernet (call set_latency)")
        return [getattr(self, f"_{kind}_{i}") for i in range(len(self.mixed))]

    def expected(self, kind: str, probs: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Fixed cost + sum over positions of sum_i p_i cost_i (differentiable in alpha)."""
        probs = self.probs() if probs is None else probs
        total = sum((p * c).sum() for p, c in zip(probs, self.cost_table(kind)))
        return total + self.fixed_cost[kind]

    def cost_of(self, kind: str, choices: list[str]) -> float:
        """The cost of one child (one candidate name per position)."""
        table = self.cost_table(kind)
        return self.fixed_cost[kind] + sum(
            float(table[i][op.names.index(c)]) for i, (op, c) in enumerate(zip(self.mixed, choices)))

    def cheapest(self, kind: str) -> float:
        return self.fixed_cost[kind] + sum(float(c.min()) for c in self.cost_table(kind))

    # -- result -------------------------------------------------------------------------------
    def argmax_choices(self) -> list[str]:
        return [op.argmax() for op in self.mixed]

    def derive(self) -> Architecture:
        """The most probable candidate at every position, as an architecture."""
        return architecture_of(self.space, self.argmax_choices())
