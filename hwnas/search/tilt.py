"""The architecture distribution, tilted so that its expected latency equals a target.

The search keeps logits ``alpha[i]`` per position (over its candidates) and
``theta[s]`` per stage (over width choices). The untilted distribution picks
every decision independently with ``softmax`` of its logits. The *tilted*
distribution multiplies it by ``exp(-beta x latency(child))``::

    P_beta(child) ~ prod softmax(theta_s)[w_s] x prod softmax(alpha_i)[c_i] x exp(-beta x LAT(child))

Of all distributions whose expected latency is ``T``, it is the one closest (in
KL) to the untilted one; ``beta`` (1/ms, negative when the untilted
distribution is below ``T``) is found by bisection each step
(:func:`solve_beta`), so the children the supernet trains and the paths the
architecture step compares always have the target latency on average.

Latency couples only neighbouring decisions (a stage's first block depends on
the previous stage's width, the head on the last one; :mod:`hwnas.children`),
so the distribution is a chain over stage widths: its normaliser, expected
latency, marginals and exact samples come from one forward pass over stages
(:class:`Tilted`).
"""

from __future__ import annotations

import math

import torch

from hwnas.children import Child, CostTable


class Tilted:
    """The tilted chain distribution for given logits, cost table and ``beta``."""

    def __init__(self, table: CostTable, alpha: list[torch.Tensor], theta: list[torch.Tensor],
                 beta: float | torch.Tensor):
        self.table = table
        self.beta = beta
        self.op_logp = [torch.log_softmax(a.double(), 0) for a in alpha]
        self.width_logp = [torch.log_softmax(t.double(), 0) for t in theta]
        # per position: log-sum over its candidates, as a function of (input width, stage width)
        self.pos_lse = [torch.logsumexp(lp[:, None, None] - beta * t, 0) for lp, t in zip(self.op_logp, table.table)]
        self.messages = []  # forward messages: log-weight of each width of stage s, summed over stages <= s
        message = None
        for s in range(table.num_stages):
            factor = self.stage_factor(s)  # [1 or W, W]
            message = factor[0] if s == 0 else torch.logsumexp(message[:, None] + factor, 0)
            self.messages.append(message)
        self.final = message - beta * table.head
        self.log_z = torch.logsumexp(self.final, 0)

    def stage_factor(self, s: int) -> torch.Tensor:
        """log-weight of stage ``s``'s width and its positions, by (previous width, this width)."""
        factor = self.width_logp[s][None, :]
        for i in self.table.stage_positions(s):
            factor = factor + self.pos_lse[i]
        return factor

    def op_logits(self, i: int, widths) -> torch.Tensor:
        """Tilted log-weights of position ``i``'s candidates given the stage widths (unnormalised)."""
        t = self.table
        return self.op_logp[i] - self.beta * t.table[i][:, t.input_width(i, widths), widths[t.stage_of[i]]]

    def width_cost(self, s: int, child: Child) -> torch.Tensor:
        """Latency terms that depend on stage ``s``'s width, every other decision of ``child`` fixed."""
        t = self.table
        cost = torch.zeros(t.num_widths, dtype=torch.float64)
        for i in t.stage_positions(s):
            cost = cost + t.table[i][child.ops[i], child.widths[s - 1] if t.table[i].shape[1] > 1 else 0, :]
        if s + 1 < t.num_stages:
            for i in t.stage_positions(s + 1):
                if t.table[i].shape[1] > 1:
                    cost = cost + t.table[i][child.ops[i], :, child.widths[s + 1]]
        else:
            cost = cost + t.head
        return cost

    def width_logits(self, s: int, child: Child) -> torch.Tensor:
        """Tilted log-weights of stage ``s``'s widths given every other decision of ``child``."""
        return self.width_logp[s] - self.beta * self.width_cost(s, child)

    def sample(self, generator: torch.Generator | None = None) -> Child:
        """An exact sample: stage widths backwards from the last, then each position's candidate."""
        def draw(logits: torch.Tensor) -> int:
            return int(torch.multinomial(torch.softmax(logits.detach().float(), 0), 1, generator=generator))

        widths = [0] * self.table.num_stages
        widths[-1] = draw(self.final)
        for s in range(self.table.num_stages - 1, 0, -1):
            widths[s - 1] = draw(self.messages[s - 1] + self.stage_factor(s)[:, widths[s]])
        ops = tuple(draw(self.op_logits(i, widths)) for i in range(len(self.op_logp)))
        return Child(tuple(widths), ops)

    def expected_cost(self, table: CostTable | None = None) -> float:
        """E[cost] of ``table`` (default: the tilting table) under this distribution, from the marginals."""
        _, _, joint, last = self.marginals()
        table = table or self.table
        return table.fixed + float((last * table.head).sum()) + sum(float((j * t).sum())
                                                                   for j, t in zip(joint, table.table))

    def marginals(self, create_graph: bool = False):
        """(width marginals per stage, op marginals per position, joint per position, last-stage width marginal).

        ``joint[i]`` has ``table[i]``'s shape: P(candidate, input width, stage width). Each marginal is the
        derivative of log Z by an offset added to the matching log-weight; with ``create_graph`` they stay
        differentiable in the logits the distribution was built from.
        """
        t = self.table
        beta = float(self.beta)
        width_off = [torch.zeros_like(lp, requires_grad=True) for lp in self.width_logp]
        op_off = [torch.zeros_like(c, requires_grad=True) for c in t.table]
        head_off = torch.zeros_like(t.head, requires_grad=True)
        with torch.enable_grad():
            message = None
            for s in range(t.num_stages):
                factor = (self.width_logp[s] + width_off[s])[None, :]
                for i in t.stage_positions(s):
                    factor = factor + torch.logsumexp(self.op_logp[i][:, None, None] - beta * t.table[i]
                                                      + op_off[i], 0)
                message = factor[0] if s == 0 else torch.logsumexp(message[:, None] + factor, 0)
            log_z = torch.logsumexp(message - beta * t.head + head_off, 0)
            grads = torch.autograd.grad(log_z, width_off + op_off + [head_off], create_graph=create_graph)
        n_s = len(width_off)
        joint = list(grads[n_s:-1])
        return list(grads[:n_s]), [j.sum((1, 2)) for j in joint], joint, grads[-1]


def expected_latency(table: CostTable, alpha, theta, beta: float) -> float:
    """E[LAT] under the distribution tilted by ``beta``: ``fixed - d logZ / d beta``."""
    b = torch.tensor(float(beta), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        log_z = Tilted(table, [a.detach() for a in alpha], [t.detach() for t in theta], b).log_z
        (grad,) = torch.autograd.grad(log_z, b)
    return table.fixed - float(grad)


def solve_beta(table: CostTable, alpha, theta, target: float, start: float = 0.0, tol: float = 1e-4,
               max_iter: int = 60) -> float:
    """``beta`` with E[LAT] = ``target`` (within ``tol`` relative); the most extreme one tried when out of reach."""
    def excess(beta: float) -> float:
        return expected_latency(table, alpha, theta, beta) - target

    f_start = excess(start)
    if abs(f_start) <= tol * target:
        return start
    direction = 1.0 if f_start > 0 else -1.0  # E[LAT] falls as beta grows
    near, far, step = start, None, 1.0 / table.span
    for _ in range(40):  # bracket the root between near and far
        candidate = start + direction * step
        if (excess(candidate) > 0) != (f_start > 0):
            far = candidate
            break
        near, step = candidate, step * 2
    if far is None:
        return near
    lo, hi = min(near, far), max(near, far)
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        f = excess(mid)
        if abs(f) <= tol * target:
            return mid
        lo, hi = (mid, hi) if f > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def entropy(logits: torch.Tensor) -> float:
    """Entropy of ``softmax(logits)`` normalised by log(n) (1: uniform, 0: decided)."""
    if len(logits) < 2:
        return 0.0
    p = torch.softmax(logits.detach().double(), 0)
    return float(-(p * p.clamp_min(1e-12).log()).sum()) / math.log(len(p))
