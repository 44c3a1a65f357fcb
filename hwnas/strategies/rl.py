"""Policy-gradient NAS (Zoph & Le, 2017; ENAS's controller): an LSTM emits one token per decision.

The decisions are the stage widths (when the space searches them), then the
positions. At step ``i`` the LSTM cell reads the embedding of the previous token
(a learned start vector at step 0) and a per-decision linear head gives logits
over that decision's options (width choices or candidates); logits are squashed as ``tanh_constant * tanh(l / T)``
(ENAS) so the policy does not collapse too early. After each observation the
controller takes one REINFORCE step on

    loss = -(score - baseline) * log p(arch) - entropy_weight * H(policy)

with Adam; the baseline is an exponential moving average of the scores
(``baseline_decay``), started at the first score. Sampling and initialisation
use the strategy's own torch generator, so a replay restores the state.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from hwnas.arch import Architecture
from hwnas.children import Child
from hwnas.strategies.base import Strategy


@contextmanager
def one_thread():
    """The controller's tensors are tiny: one intra-op thread is several times faster than many."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Controller(nn.Module):
    """LSTM policy over a sequence of categorical choices of sizes ``sizes``."""

    def __init__(self, sizes: list[int], hidden: int = 64, temperature: float = 1.0, tanh_constant: float = 2.5):
        super().__init__()
        self.sizes, self.temperature, self.tanh_constant = sizes, temperature, tanh_constant
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.cell = nn.LSTMCell(hidden, hidden)
        self.embeds = nn.ModuleList(nn.Embedding(n, hidden) for n in sizes)
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in sizes)

    def forward(self, actions: list[int] | None = None, generator: torch.Generator | None = None):
        """Sample (``actions`` None) or score given actions; returns (actions, log-prob sum, entropy sum)."""
        x, state = self.start, None
        out, log_prob, entropy = [], 0.0, 0.0
        for i, head in enumerate(self.heads):
            h, c = self.cell(x, state)
            state = (h, c)
            logits = head(h) / self.temperature
            if self.tanh_constant:
                logits = self.tanh_constant * torch.tanh(logits)
            logp = torch.log_softmax(logits, dim=-1)[0]
            if actions is None:
                a = int(torch.multinomial(logp.exp(), 1, generator=generator))
            else:
                a = actions[i]
            out.append(a)
            log_prob = log_prob + logp[a]
            entropy = entropy - (logp.exp() * logp).sum()
            x = self.embeds[i](torch.tensor([a]))
        return out, log_prob, entropy


class ControllerSearch(Strategy):
    name = "rl"

    def __init__(self, space, seed: int = 0, controller_lr: float = 0.005, hidden: int = 64,
                 entropy_weight: float = 1e-3, baseline_decay: float = 0.9, tanh_constant: float = 2.5):
        super().__init__(space, seed)
        self.generator = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.controller = Controller(self.sizes, hidden, tanh_constant=tanh_constant)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=controller_lr)
        self.entropy_weight, self.baseline_decay = entropy_weight, baseline_decay
        self.baseline: float | None = None

    def propose(self) -> Architecture:
        with torch.no_grad(), one_thread():
            actions, _, _ = self.controller(generator=self.generator)
        return self.arch(self.child(actions))

    def _observe(self, child: Child, score: float) -> None:
        if self.baseline is None:
            self.baseline = score
        advantage = score - self.baseline
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * score
        with one_thread():
            _, log_prob, entropy = self.controller(self.genes(child))
            loss = -advantage * log_prob - self.entropy_weight * entropy
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()

    def probabilities(self) -> list[list[float]]:
        """The greedy path's option probabilities per decision (stage widths, then positions; for inspection)."""
        probs, actions = [], []
        with torch.no_grad():
            x, state = self.controller.start, None
            for i, head in enumerate(self.controller.heads):
                h, c = self.controller.cell(x, state)
                state = (h, c)
                logits = self.controller.tanh_constant * torch.tanh(head(h) / self.controller.temperature)
                p = torch.softmax(logits, -1)[0]
                probs.append(p.tolist())
                actions.append(int(p.argmax()))
                x = self.controller.embeds[i](torch.tensor([actions[-1]]))
        return probs
