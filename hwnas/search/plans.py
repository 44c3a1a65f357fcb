"""What the weight-entangled supernet runs each step: plans drawn from the (tilted) architecture distribution.

:class:`PlanMaker` holds the supernet's logits, the latency table and the
budget control, and makes the :class:`~hwnas.supernet.entangled.Plan` of each
step for each mode:

``proxyless`` (default)
    weight steps: one child sampled from the tilted distribution; architecture
    steps: at every decision the sampled option plus a second one drawn from
    its conditional (without replacement), combined by binary gates whose
    BinaryConnect gradient reaches the logits (ProxylessNAS), then the two
    logits are shifted so the other options keep their probability.
``proxyless-reinforce``
    one sampled child; the logits get REINFORCE's gradient of its log-probability.
``darts``
    every option, weighted by its (tilted) marginal probability.
``snas``
    every option, weighted by a Gumbel-softmax sample (temperature ``tau``).

Budget control (``control``): ``tilt`` (default) re-solves ``beta`` every step
so the expected latency of the distribution the steps sample is ``target_ms``
(:mod:`hwnas.search.tilt`); ``absolute`` (TuNAS) and ``hinge`` keep ``beta = 0``
and add ``lambda x |E[LAT]/T - 1|`` or ``lambda x max(0, E[LAT]/B - 1)`` to the
architecture loss.
"""

from __future__ import annotations

import torch

from hwnas.children import Child, CostTable
from hwnas.search.tilt import Tilted, expected_latency, solve_beta
from hwnas.supernet.entangled import EntangledSupernet, Mix, Plan
from hwnas.supernet.mixed_op import BinaryGates

CONTROLS = ("tilt", "absolute", "hinge")


class PlanMaker:
    def __init__(self, net: EntangledSupernet, table: CostTable, mode: str = "proxyless", control: str = "tilt",
                 target_ms: float | None = None, budget_ms: float | None = None, lambda_lat: float = 1.0,
                 generator: torch.Generator | None = None):
        self.net, self.table, self.mode, self.control = net, table, mode, control
        self.target_ms, self.budget_ms, self.lambda_lat = target_ms, budget_ms, lambda_lat
        self.generator = generator or torch.Generator()
        self.beta = 0.0
        self.expected_ms = float("nan")  # E[LAT] of the distribution the last step sampled from
        self.tau = 1.0  # snas temperature
        self.baseline: float | None = None  # reinforce
        self._pairs: list[tuple[torch.nn.Parameter, list[int]]] = []

    # -- the distribution ----------------------------------------------------------------
    def logits(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return [a.detach() for a in self.net.alpha], [t.detach() for t in self.net.theta]

    def update_beta(self) -> float:
        """Tilt: the beta whose expected latency is the target (0 for the other controls); sets ``expected_ms``."""
        if self.control == "tilt" and self.target_ms is not None:
            self.beta = solve_beta(self.table, *self.logits(), self.target_ms, start=self.beta)
        self.expected_ms = expected_latency(self.table, *self.logits(), self.beta)
        return self.beta

    def tilted(self) -> Tilted:
        return Tilted(self.table, *self.logits(), self.beta)

    def sample_child(self) -> Child:
        return self.tilted().sample(self.generator)

    # -- plans ------------------------------------------------------------------------------
    def arch_plan(self) -> tuple[Plan, torch.Tensor | None]:
        """The architecture step's plan, and a term to add to its loss (or None)."""
        if self.mode == "proxyless":
            return self._gate_plan(), self._control_loss()
        if self.mode == "proxyless-reinforce":
            return Plan.of(self.sample_child()), self._control_loss()
        weights_w, weights_o = self._marginals()
        if self.mode == "snas":
            weights_w = [self._gumbel(w) for w in weights_w]
            weights_o = [self._gumbel(w) for w in weights_o]
        plan = Plan([Mix(list(range(len(w))), w.float(), int(w.argmax())) for w in weights_w],
                    [Mix(list(range(len(w))), w.float(), int(w.argmax())) for w in weights_o])
        return plan, self._control_loss()

    def _gate_plan(self) -> Plan:
        t = self.tilted()
        child = t.sample(self.generator)
        beta, table, net = self.beta, self.table, self.net
        self._pairs = []
        widths = []
        for s, theta in enumerate(net.theta):
            if len(theta) < 2:
                widths.append(Mix([child.widths[s]]))
                continue
            second = self._other(t.width_logits(s, child), child.widths[s])
            cost = t.width_cost(s, child)
            logits = theta - beta * cost.to(theta.dtype)
            widths.append(self._gated([child.widths[s], second], logits, theta))
        ops = []
        for i, alpha in enumerate(net.alpha):
            if len(alpha) < 2:
                ops.append(Mix([child.ops[i]]))
                continue
            second = self._other(t.op_logits(i, child.widths), child.ops[i])
            a, b = table.input_width(i, child.widths), child.widths[table.stage_of[i]]
            logits = alpha - beta * table.table[i][:, a, b].to(alpha.dtype)
            ops.append(self._gated([child.ops[i], second], logits, alpha))
        return Plan(widths, ops)

    def _gated(self, pair: list[int], logits: torch.Tensor, param) -> Mix:
        self._pairs.append((param, pair))
        return Mix(pair, BinaryGates.apply(logits[pair], 0), 0)

    def _other(self, logits: torch.Tensor, taken: int) -> int:
        logits = logits.detach().clone()
        logits[taken] = -torch.inf
        return int(torch.multinomial(torch.softmax(logits.float(), 0), 1, generator=self.generator))

    def _marginals(self):
        """Tilted marginals of every decision (widths, ops), differentiable in the logits."""
        tilted = Tilted(self.table, list(self.net.alpha), list(self.net.theta), self.beta)
        widths, ops, _, _ = tilted.marginals(create_graph=True)
        return widths, ops

    def _gumbel(self, probs: torch.Tensor) -> torch.Tensor:
        u = torch.rand(probs.shape, generator=self.generator, dtype=probs.dtype).clamp_(1e-10, 1 - 1e-10)
        return torch.softmax((probs.clamp_min(1e-12).log() - torch.log(-torch.log(u))) / self.tau, 0)

    # -- losses and updates -------------------------------------------------------------------
    def expected_latency(self) -> torch.Tensor:
        """E[LAT] of the untilted distribution, differentiable in the logits."""
        t = self.table
        q = [torch.softmax(th.double(), 0) for th in self.net.theta]
        total = t.fixed + (q[-1] * t.head).sum()
        for i, alpha in enumerate(self.net.alpha):
            s = t.stage_of[i]
            joint = torch.softmax(alpha.double(), 0)[:, None, None] * q[s][None, None, :]
            if t.table[i].shape[1] > 1:
                joint = joint * q[s - 1][None, :, None]
            total = total + (joint * t.table[i]).sum()
        return total

    def _control_loss(self) -> torch.Tensor | None:
        if self.control == "tilt" or not self.lambda_lat or self.budget_ms is None:
            return None
        lat = self.expected_latency()
        if self.control == "absolute":
            return self.lambda_lat * (lat / self.target_ms - 1).abs()
        return self.lambda_lat * torch.relu(lat / self.budget_ms - 1)

    def reinforce_loss(self, plan: Plan, reward: float) -> torch.Tensor:
        """REINFORCE: ``-(reward - baseline) x log P(child)`` under the tilted distribution (moving baseline)."""
        child = plan.child()
        tilted = Tilted(self.table, list(self.net.alpha), list(self.net.theta), self.beta)
        log_p = -tilted.log_z - self.beta * self.table.cost(child)
        log_p = log_p + sum(tilted.width_logp[s][w] for s, w in enumerate(child.widths))
        log_p = log_p + sum(tilted.op_logp[i][c] for i, c in enumerate(child.ops))
        baseline = reward if self.baseline is None else self.baseline
        self.baseline = 0.9 * baseline + 0.1 * reward
        return -(reward - baseline) * log_p

    @torch.no_grad()
    def rescale(self, before: list[torch.Tensor]) -> None:
        """ProxylessNAS: after the update, shift the two gated logits so the untouched options keep their mass."""
        old = {id(p): b for p, b in zip(self.net.arch_parameters(), before)}
        for param, pair in self._pairs:
            idx = torch.tensor(pair)
            offset = torch.logsumexp(param[idx], 0) - torch.logsumexp(old[id(param)][idx], 0)
            param[idx] -= offset
        self._pairs = []
