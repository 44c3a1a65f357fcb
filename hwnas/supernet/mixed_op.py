"""The mixed operator: all candidates of one position plus architecture parameters.

A :class:`MixedOp` holds one module per candidate (any ``nn.Module``s: chain
spaces build them with :func:`hwnas.blocks.make_block`, the cell space passes
its own) and a vector ``alpha`` of architecture parameters; the path
probabilities are ``softmax(alpha)``. How the paths are combined is decided by a
*mode* object shared by all mixed ops of a supernet:

``proxyless``
    Binary gates (ProxylessNAS). In the weight step one path, sampled from the
    probabilities, runs. In the architecture step two paths are sampled (without
    replacement), one of them is made active by the gate ``g`` (one-hot) and the
    output is ``sum_j g_j out_j``; only these two paths run and keep activations.
    ``dL/dg_j = <dL/dout, out_j>`` flows into alpha by the BinaryConnect estimate
    ``dL/dalpha_i = sum_j dL/dg_j p_j (delta_ij - p_i)`` with ``p`` renormalised
    over the two sampled paths (:class:`BinaryGates`); after the optimizer step
    :meth:`MixedOp.rescale_sampled` shifts the two alphas so the probability mass
    of the unsampled paths is unchanged.
``proxyless-reinforce``
    The same sampled single path in both steps; alpha gets its gradient from
    REINFORCE in the search loop (``log_prob`` of the sampled path).
``darts``
    Softmax-weighted sum of all paths.
``snas``
    Gumbel-softmax sample ``softmax((alpha + G) / tau)`` weighting all paths;
    ``tau`` is annealed toward zero by the search loop.

Every mode evaluates (``model.eval()``) the argmax path, except darts, which
evaluates its weighted sum. :meth:`MixedOp.set_active` pins one path in every
mode (one-shot evaluation of a fixed child by sample-based strategies).
"""

from __future__ import annotations

import torch
from torch import nn

MODES = ("proxyless", "proxyless-reinforce", "darts", "snas")


class BinaryGates(torch.autograd.Function):
    """One-hot gates over the sampled paths; backward gives the BinaryConnect alpha gradient."""

    @staticmethod
    def forward(ctx, alpha_sampled: torch.Tensor, active: int) -> torch.Tensor:
        ctx.save_for_backward(alpha_sampled)
        gates = torch.zeros_like(alpha_sampled)
        gates[active] = 1.0
        return gates

    @staticmethod
    def backward(ctx, grad_gates: torch.Tensor):
        (alpha_sampled,) = ctx.saved_tensors
        p = torch.softmax(alpha_sampled, 0)
        # sum_j dL/dg_j p_j (delta_ij - p_i) = p_i (dL/dg_i - sum_j dL/dg_j p_j)
        return p * (grad_gates - (grad_gates * p).sum()), None


# -- modes --------------------------------------------------------------------------
class Mode:
    """How a mixed op samples and combines its paths in training (``phase``: 'weight' or 'arch')."""

    name = ""

    def sample(self, op: "MixedOp", phase: str, generator: torch.Generator | None) -> None:
        """Draw this step's paths (called once per step, before the forward)."""
        op.sampled = None

    def forward(self, op: "MixedOp", x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def eval_forward(self, op: "MixedOp", x: torch.Tensor) -> torch.Tensor:
        """Evaluation (``model.eval()``): the most probable path."""
        return op.candidates[int(op.alpha.argmax())](x)


class ProxylessMode(Mode):
    name = "proxyless"

    def sample(self, op, phase, generator):
        probs = op.probs().detach().cpu()
        if len(probs) == 1:
            op.sampled = (torch.tensor([0]), 0)
        elif phase == "weight":
            op.sampled = (torch.multinomial(probs, 1, generator=generator), 0)
        else:  # arch: two paths, the active one drawn from their renormalised probabilities
            pair = torch.multinomial(probs, 2, replacement=False, generator=generator)
            active = int(torch.multinomial(probs[pair], 1, generator=generator))
            op.sampled = (pair, active)

    def forward(self, op, x):
        paths, active = op.sampled
        if len(paths) == 1:
            return op.candidates[int(paths[0])](x)
        gates = BinaryGates.apply(op.alpha[paths], active)
        return sum(gates[j] * op.candidates[int(i)](x) for j, i in enumerate(paths))


class ReinforceMode(ProxylessMode):
    name = "proxyless-reinforce"

    def sample(self, op, phase, generator):
        super().sample(op, "weight" if phase == "arch" else phase, generator)


class DartsMode(Mode):
    name = "darts"

    def forward(self, op, x):
        weights = op.probs()
        return sum(w * path(x) for w, path in zip(weights, op.candidates))

    def eval_forward(self, op, x):
        return self.forward(op, x)


class SnasMode(Mode):
    name = "snas"

    def __init__(self, tau: float = 1.0):
        self.tau = tau

    def sample(self, op, phase, generator):
        u = torch.rand(op.alpha.shape, generator=generator).clamp_(1e-10, 1 - 1e-10)
        op.sampled = -torch.log(-torch.log(u))  # Gumbel noise; the weights stay differentiable in alpha

    def forward(self, op, x):
        if op.sampled is None:
            self.sample(op, "weight", None)
        weights = torch.softmax((op.alpha + op.sampled.to(op.alpha.device)) / self.tau, 0)
        return sum(w * path(x) for w, path in zip(weights, op.candidates))


def make_mode(name: str, **kwargs) -> Mode:
    modes = {"proxyless": ProxylessMode, "proxyless-reinforce": ReinforceMode, "darts": DartsMode,
             "snas": SnasMode}
    if name not in modes:
        raise ValueError(f"unknown mode {name!r}; known: {', '.join(MODES)}")
    return modes[name](**kwargs)


# -- the mixed op ---------------------------------------------------------------------
class MixedOp(nn.Module):
    """Candidates of one position and their architecture parameters ``alpha``."""

    def __init__(self, candidates: list[nn.Module], names: list[str], mode: Mode):
        super().__init__()
        if len(candidates) != len(names) or not candidates:
            raise ValueError("a mixed op needs one name per candidate and at least one candidate")
        self.candidates = nn.ModuleList(candidates)
        self.names = list(names)
        self.alpha = nn.Parameter(torch.zeros(len(candidates)))
        self.mode = mode
        self.sampled = None
        self.fixed: int | None = None

    def probs(self) -> torch.Tensor:
        return torch.softmax(self.alpha, 0)

    def set_active(self, choice: str | int | None) -> None:
        """Pin one path (by name or index) in every mode; ``None`` returns to the mode's sampling."""
        self.fixed = self.names.index(choice) if isinstance(choice, str) else choice

    def sample(self, phase: str, generator: torch.Generator | None = None) -> None:
        if self.fixed is None:
            self.mode.sample(self, phase, generator)

    def sampled_index(self) -> int:
        """The single path that runs in proxyless/reinforce weight steps (REINFORCE's action)."""
        return int(self.sampled[0][self.sampled[1]])

    def log_prob(self, index: int) -> torch.Tensor:
        return torch.log_softmax(self.alpha, 0)[index]

    def argmax(self) -> str:
        return self.names[int(self.alpha.argmax())]

    @torch.no_grad()
    def rescale_sampled(self, old_alpha: torch.Tensor) -> None:
        """ProxylessNAS: keep the summed probability of the two sampled paths as before the update."""
        if self.sampled is None or len(self.sampled[0]) < 2:
            return
        idx = self.sampled[0].to(self.alpha.device)
        offset = torch.logsumexp(self.alpha[idx], 0) - torch.logsumexp(old_alpha[idx], 0)
        self.alpha[idx] -= offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed is not None:
            return self.candidates[self.fixed](x)
        if not self.training:
            return self.mode.eval_forward(self, x)
        if self.sampled is None and isinstance(self.mode, ProxylessMode):
            self.mode.sample(self, "weight", None)
        return self.mode.forward(self, x)
