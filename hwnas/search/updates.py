"""One training step per mode: how weights ``w`` and architecture parameters ``alpha`` move.

Each class has ``step(train_batch, val_batch, update_arch) -> dict`` and shares
the optimizers, the gate generator and the resource loss held by
:class:`StepContext`.

* :class:`ProxylessStep`: w on the train batch with one sampled path; alpha on
  the validation batch with two sampled paths and binary gates, then the
  ProxylessNAS rescaling of the two sampled alphas.
* :class:`ReinforceStep`: w as above; alpha by REINFORCE on the validation
  batch, reward ``-(CE + lambda_lat x latency term of the sampled child)`` with
  a moving-average baseline.
* :class:`DartsStep`: bilevel, w on train, alpha on validation; first order, or
  second order with the finite-difference Hessian-vector product of DARTS.
* :class:`SnasStep`: single level, w and alpha together on the train batch.

Alpha gradients are averaged across ranks by hand (``sync``) because alpha is
kept out of DistributedDataParallel (only the weights are wrapped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from hwnas.search.losses import latency_term
from hwnas.supernet import Supernet


@dataclass
class StepContext:
    net: Supernet  # the raw supernet
    model: nn.Module  # the same, wrapped by DistributedDataParallel when distributed
    opt_w: torch.optim.Optimizer
    opt_a: torch.optim.Optimizer
    generator: torch.Generator
    resource: Callable[[], tuple[torch.Tensor, dict]]  # () -> (resource loss, stats)
    sync: Callable[[list[torch.Tensor]], None]  # average gradients across ranks
    lambda_lat: float = 0.0
    budget_ms: float | None = None
    reference_ms: float = 1.0
    weight_decay: float = 0.0
    baseline_decay: float = 0.9
    baseline: float | None = None  # REINFORCE moving average (saved in checkpoints)
    darts_order: int = 1


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> int:
    return int((logits.argmax(1) == y).sum())


class StepBase:
    def __init__(self, ctx: StepContext):
        self.ctx = ctx

    @property
    def alphas(self) -> list[nn.Parameter]:
        return self.ctx.net.arch_parameters()

    def weight_step(self, x, y) -> dict:
        """Train w on one batch through the (DDP) model."""
        ctx = self.ctx
        ctx.net.resample("weight", ctx.generator)
        logits = ctx.model(x)
        loss = F.cross_entropy(logits, y)
        ctx.opt_w.zero_grad(set_to_none=True)
        loss.backward()
        ctx.opt_w.step()
        return {"loss": loss.detach(), "correct": _accuracy(logits, y), "n": len(y)}

    def apply_arch_grads(self, stats: dict) -> None:
        ctx = self.ctx
        ctx.sync([a.grad for a in self.alphas])
        ctx.opt_a.step()

    def step(self, train, val, update_arch: bool) -> dict:
        out = self.weight_step(*train)
        if update_arch:
            out.update(self.arch_step(*val, train=train))
        return out

    def arch_step(self, xv, yv, train) -> dict:
        raise NotImplementedError


class ProxylessStep(StepBase):
    def arch_step(self, xv, yv, train):
        ctx = self.ctx
        ctx.net.resample("arch", ctx.generator)
        ce = F.cross_entropy(ctx.net(xv), yv)
        res, stats = ctx.resource()
        ctx.opt_a.zero_grad(set_to_none=True)
        (ce + res).backward(inputs=self.alphas)  # only alpha: no weight gradients computed
        old = [a.detach().clone() for a in self.alphas]
        self.apply_arch_grads(stats)
        for op, before in zip(ctx.net.mixed, old):
            op.rescale_sampled(before)
        return {"arch_loss": float((ce + res).detach()), **stats}


class ReinforceStep(StepBase):
    def arch_step(self, xv, yv, train):
        ctx = self.ctx
        net = ctx.net
        net.resample("arch", ctx.generator)
        choices = [op.names[op.sampled_index()] for op in net.mixed]
        with torch.no_grad():
            ce = float(F.cross_entropy(net(xv), yv))
        penalty = 0.0
        if ctx.lambda_lat and net.has_latency:
            child_ms = torch.tensor(net.cost_of("latency", choices))
            penalty = ctx.lambda_lat * float(latency_term(child_ms, ctx.budget_ms, ctx.reference_ms))
        reward = -(ce + penalty)
        baseline = reward if ctx.baseline is None else ctx.baseline
        log_prob = sum(op.log_prob(op.sampled_index()) for op in net.mixed)
        res, stats = ctx.resource()  # eta terms only: latency is in the reward
        ctx.opt_a.zero_grad(set_to_none=True)
        (-(reward - baseline) * log_prob + res).backward(inputs=self.alphas)
        self.apply_arch_grads(stats)
        ctx.baseline = ctx.baseline_decay * baseline + (1 - ctx.baseline_decay) * reward
        return {"arch_loss": ce + penalty, "reward": reward, **stats}


class DartsStep(StepBase):
    def arch_step(self, xv, yv, train):
        ctx = self.ctx
        res, stats = ctx.resource()
        ctx.opt_a.zero_grad(set_to_none=True)
        if ctx.darts_order == 1:
            ce = F.cross_entropy(ctx.net(xv), yv)
            (ce + res).backward(inputs=self.alphas)
        else:
            ce = self._second_order(xv, yv, *train)
            res.backward(inputs=self.alphas)
        self.apply_arch_grads(stats)
        return {"arch_loss": float((ce + res).detach()), **stats}

    def _second_order(self, xv, yv, x, y) -> torch.Tensor:
        """alpha.grad = dL_val(w', a)/da - xi * (dL_train(w+, a)/da - dL_train(w-, a)/da) / (2 eps)."""
        ctx, net = self.ctx, self.ctx.net
        weights = [p for p in net.weight_parameters() if p.requires_grad]
        alphas = self.alphas
        xi = ctx.opt_w.param_groups[0]["lr"]
        saved_w = [p.detach().clone() for p in weights]
        saved_buffers = {k: v.clone() for k, v in net.state_dict().items() if "running" in k or "num_batches" in k}

        def grads(loss, inputs):
            return [torch.zeros_like(p) if g is None else g
                    for p, g in zip(inputs, torch.autograd.grad(loss, inputs, allow_unused=True))]

        # virtual step w' = w - xi (dL_train/dw + wd w)
        g_train = grads(F.cross_entropy(net(x), y), weights)
        with torch.no_grad():
            for p, g in zip(weights, g_train):
                p.sub_(xi * (g + ctx.weight_decay * p))
        ce_val = F.cross_entropy(net(xv), yv)
        g_all = grads(ce_val, alphas + weights)
        d_alpha, d_w = g_all[:len(alphas)], g_all[len(alphas):]
        eps = 0.01 / (torch.sqrt(sum((g * g).sum() for g in d_w)) + 1e-12)
        hessian = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, w0, d in zip(weights, saved_w, d_w):
                    p.copy_(w0 + sign * eps * d)
            hessian.append(grads(F.cross_entropy(net(x), y), alphas))
        with torch.no_grad():
            for p, w0 in zip(weights, saved_w):
                p.copy_(w0)
        net.load_state_dict(saved_buffers, strict=False)
        for a, da, hp, hm in zip(alphas, d_alpha, *hessian):
            a.grad = da - xi * (hp - hm) / (2 * eps)
        return ce_val.detach()


class SnasStep(StepBase):
    def step(self, train, val, update_arch: bool) -> dict:
        if not update_arch:
            return self.weight_step(*train)
        ctx = self.ctx
        x, y = train
        ctx.net.resample("weight", ctx.generator)
        logits = ctx.model(x)
        ce = F.cross_entropy(logits, y)
        res, stats = ctx.resource()
        ctx.opt_w.zero_grad(set_to_none=True)
        ctx.opt_a.zero_grad(set_to_none=True)
        (ce + res).backward()
        ctx.opt_w.step()
        self.apply_arch_grads(stats)
        return {"loss": ce.detach(), "correct": _accuracy(logits, y), "n": len(y),
                "arch_loss": float((ce + res).detach()), **stats}


STEPS = {"proxyless": ProxylessStep, "proxyless-reinforce": ReinforceStep, "darts": DartsStep, "snas": SnasStep}


def make_step(mode: str, ctx: StepContext) -> StepBase:
    return STEPS[mode](ctx)
