"""The weight-entangled supernet of a ProxylessNAS chain space.

Every position holds ONE largest MBConv (largest kernel, expansion and widths);
each candidate is a view of it (as in once-for-all):

* kernel k: the centre k x k crop of the depthwise kernel;
* expansion e: the first ``c_in x e`` channels of the hidden layer (rows of the
  1x1 expand conv, depthwise channels, columns of the 1x1 project conv);
* stage width: the first ``c`` channels of every tensor of the stage;
* BatchNorm: one per (kernel, expansion) candidate, sliced to the width, so a
  candidate keeps its own statistics and affine parameters.

The forward pass follows a :class:`Plan`: per stage the widths in play, per
position the candidates in play, each with an optional weight (binary gates,
softmax or Gumbel weights). With one width and one candidate everywhere it runs
exactly one child; with two or more, the outputs of the candidates are summed
with their weights and the widths mixed by channel masks (the stage runs at the
widest width in play, each narrower width contributing a prefix mask), so the
architecture gradient reaches every weight in play at the cost of one wide
pass. :meth:`EntangledSupernet.extract` copies a child's crops and slices into
the standalone network that :func:`hwnas.builder.build_model` builds, which is
what is trained further and exported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import nn
from torch.nn import functional as F

from hwnas.arch import Architecture
from hwnas.blocks import BN_EPS, activation, make_block
from hwnas.builder import build_model
from hwnas.errors import HwnasError
from hwnas.children import Child, base_space
from hwnas.spaces import SearchSpace


@dataclass
class Mix:
    """The options in play for one decision, and their weights (None: the first option alone)."""

    options: list[int]
    weights: torch.Tensor | None = None
    active: int = 0  # index into options of the option whose output the forward value stands for

    @property
    def chosen(self) -> int:
        return self.options[self.active]


@dataclass
class Plan:
    widths: list[Mix]  # per stage
    ops: list[Mix]  # per position

    @classmethod
    def of(cls, child: Child) -> "Plan":
        return cls([Mix([w]) for w in child.widths], [Mix([c]) for c in child.ops])

    def child(self) -> Child:
        """The child whose output the forward value is (the active option of every decision)."""
        return Child(tuple(m.chosen for m in self.widths), tuple(m.chosen for m in self.ops))


class SlicedBN(nn.BatchNorm2d):
    """BatchNorm over the first ``x.shape[1]`` channels of a wider one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        if n == self.num_features:
            return super().forward(x)
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        return F.batch_norm(x, self.running_mean[:n], self.running_var[:n], self.weight[:n], self.bias[:n],
                            self.training or not self.track_running_stats, factor, self.eps)


def _mask(channels: list[int], mix: Mix, size: int, scale: int, like: torch.Tensor) -> torch.Tensor | None:
    """Per-channel weights ``sum_j w_j [c < channels_j x scale]`` over ``size`` channels (None: no mixing)."""
    if mix.weights is None or len(mix.options) < 2:
        return None
    ranges = torch.arange(size, device=like.device)
    masks = torch.stack([(ranges < channels[o] * scale).to(like.dtype) for o in mix.options])
    return (mix.weights.to(like.dtype)[:, None] * masks).sum(0)[None, :, None, None]


class EntangledMBConv(nn.Module):
    """All (kernel, expansion) candidates of one position as views of one largest block."""

    def __init__(self, c_in: int, c_out: int, stride: int, candidates: list[tuple[int, int]], act: str):
        super().__init__()
        k_max = max(k for k, _ in candidates)
        mid = c_in * max(e for _, e in candidates)
        self.stride, self.k_max, self.candidates = stride, k_max, list(candidates)
        self.expand = nn.Parameter(torch.empty(mid, c_in, 1, 1))
        self.depthwise = nn.Parameter(torch.empty(mid, 1, k_max, k_max))
        self.project = nn.Parameter(torch.empty(c_out, mid, 1, 1))
        for w in (self.expand, self.depthwise, self.project):
            nn.init.kaiming_normal_(w, mode="fan_out")
        self.bns = nn.ModuleList(nn.ModuleList([SlicedBN(mid, eps=BN_EPS), SlicedBN(mid, eps=BN_EPS),
                                                SlicedBN(c_out, eps=BN_EPS)]) for _ in candidates)
        self.act = activation(act)

    def weights(self, cand: int, c_in: int, c_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(expand, depthwise, project) weights of candidate ``cand`` at these widths."""
        k, e = self.candidates[cand]
        mid, off = c_in * e, (self.k_max - k) // 2
        return (self.expand[:mid, :c_in], self.depthwise[:mid, :, off:off + k, off:off + k],
                self.project[:c_out, :mid])

    def forward(self, x, cand: int, c_out: int, mid_mask=None, out_mask=None, residual: bool = False):
        expand, depthwise, project = self.weights(cand, x.shape[1], c_out)
        bn_e, bn_d, bn_p = self.bns[cand]
        h = self.act(bn_e(F.conv2d(x, expand)))
        if mid_mask is not None:
            h = h * mid_mask
        h = self.act(bn_d(F.conv2d(h, depthwise, stride=self.stride, padding=depthwise.shape[-1] // 2,
                                   groups=h.shape[1])))
        if mid_mask is not None:
            h = h * mid_mask
        h = bn_p(F.conv2d(h, project))
        if out_mask is not None:
            h = h * out_mask
        if not residual:
            return h
        if x.shape[1] != h.shape[1]:  # mixed widths: the active widths match, the widest in play may not
            x = F.pad(x, (0, 0, 0, 0, 0, h.shape[1] - x.shape[1])) if x.shape[1] < h.shape[1] else x[:, :h.shape[1]]
        return h + x


class SlicedHead(nn.Module):
    """The head's 1x1 conv + BN + act, taking the first ``x.shape[1]`` input channels of its weight."""

    def __init__(self, c_in: int, c_out: int, act: str):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c_out, c_in, 1, 1))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.act = activation(act)

    def forward(self, x):
        return self.act(self.bn(F.conv2d(x, self.weight[:, :x.shape[1]])))


def why_not_entangled(space: SearchSpace) -> str | None:
    """Why the weight-entangled supernet cannot hold ``space`` (None: it can)."""
    if space.params["family"] != "proxyless":
        return f"the weight-entangled supernet needs a proxyless space, not {space.name}"
    if min(space.params["expands"]) < 2:
        return "the weight-entangled supernet needs expansions >= 2 (an e1 block has no expand conv to share)"
    return None


class EntangledSupernet(nn.Module):
    """Weight-entangled supernet of a proxyless chain space; arch logits ``alpha`` (ops) and ``theta`` (widths)."""

    def __init__(self, space: SearchSpace, init_std: float = 1e-3):
        super().__init__()
        reason = why_not_entangled(space)
        if reason:
            raise HwnasError(f"{reason}; use --supernet-type separate")
        self.space = space
        base = base_space(space)
        self.names = [list(p.names) for p in base.positions]
        self.stage_of = [p.stage for p in base.positions]
        choices = space.width_choices
        variants = [space.at_widths([w] * space.num_stages) if space.searches_width else space for w in choices]
        # channels[s][w]: output channels of stage s at width choice w
        self.channels = [[v.positions[self.stage_positions(s)[0]].ops[0].c_out for v in variants]
                         for s in range(space.num_stages)]
        self.stem = nn.Sequential(*[make_block(op) for op in base.stem])
        self.stem_channels = base.stem[-1].c_out
        blocks = []
        for i, pos in enumerate(base.positions):
            s = self.stage_of[i]
            c_in = max(self.channels[s - 1]) if self.is_first(i) and s > 0 else (
                self.stem_channels if self.is_first(i) else max(self.channels[s]))
            cands = [(op.kernel, op.expand) for op in pos.ops if op.kind != "zero"]
            blocks.append(EntangledMBConv(c_in, max(self.channels[s]), pos.ops[0].stride, cands, pos.ops[0].act))
        self.blocks = nn.ModuleList(blocks)
        head = base.head
        self.head_conv = SlicedHead(max(self.channels[-1]), head[0].c_out, head[0].act)
        self.head_rest = nn.Sequential(*[make_block(op) for op in head[1:]])
        self.alpha = nn.ParameterList(nn.Parameter(torch.randn(len(n)) * init_std) for n in self.names)
        self.theta = nn.ParameterList(nn.Parameter(torch.randn(len(choices)) * init_std)
                                      for _ in range(space.num_stages))
        self.plan: Plan | None = None

    # -- layout ----------------------------------------------------------------------
    def stage_positions(self, s: int) -> list[int]:
        return [i for i, st in enumerate(self.stage_of) if st == s]

    def is_first(self, i: int) -> bool:
        return i == 0 or self.stage_of[i - 1] != self.stage_of[i]

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alpha) + list(self.theta)

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def _cand(self, i: int, c: int) -> int | None:
        """Index of candidate ``c`` of position ``i`` in its block (None for zero)."""
        name = self.names[i][c]
        if name == "zero":
            return None
        return [n for n in self.names[i] if n != "zero"].index(name)

    # -- forward -----------------------------------------------------------------------
    def set_child(self, child: Child | None) -> None:
        """Run exactly ``child`` from now on (``None``: the plan must be set per step)."""
        self.plan = None if child is None else Plan.of(child)

    def forward(self, x: torch.Tensor, plan: Plan | None = None, checkpoint: bool = False) -> torch.Tensor:
        """Run ``plan`` (default: the child set by :meth:`set_child`).

        ``checkpoint``: positions that mix several candidates keep only their input for the backward pass
        and run again there (``torch.utils.checkpoint``), so an architecture step holds about one
        position's inner activations at a time instead of every candidate's (ProxylessNAS's memory promise).
        """
        plan = plan or self.plan
        if plan is None:
            raise RuntimeError("no child or plan set on the supernet")
        x = self.stem(x)
        prev_channels, prev_mix = [self.stem_channels], Mix([0])
        for s in range(len(self.channels)):
            wmix = plan.widths[s]
            channels = self.channels[s]
            c_out = max(channels[o] for o in wmix.options)
            out_mask = _mask(channels, wmix, c_out, 1, x)
            for i in self.stage_positions(s):
                in_channels, in_mix = (prev_channels, prev_mix) if self.is_first(i) else (channels, wmix)
                args = (i, plan.ops[i], in_channels, in_mix, channels[wmix.chosen], c_out, out_mask)
                mixed = plan.ops[i].weights is not None or in_mix.weights is not None or out_mask is not None
                if checkpoint and mixed and torch.is_grad_enabled():
                    x = torch.utils.checkpoint.checkpoint(self._position, x, *args, use_reentrant=False)
                else:
                    x = self._position(x, *args)
            prev_channels, prev_mix = channels, wmix
        return self.head_rest(self.head_conv(x))

    def _position(self, x, i: int, omix: Mix, in_channels: list[int], in_mix: Mix, active_out: int, c_out: int,
                  out_mask) -> torch.Tensor:
        """Position ``i``: the candidates of ``omix`` summed with their weights."""
        residual = self.blocks[i].stride == 1 and in_channels[in_mix.chosen] == active_out
        outs = []
        for c in omix.options:
            cand = self._cand(i, c)
            if cand is None:
                outs.append(x)
                continue
            e = self.blocks[i].candidates[cand][1]
            mid_mask = _mask(in_channels, in_mix, x.shape[1] * e, e, x)
            outs.append(self.blocks[i](x, cand, c_out, mid_mask, out_mask, residual))
        return outs[0] if omix.weights is None else sum(w * o for w, o in zip(omix.weights, outs))

    # -- the supernet vocabulary (as Supernet and CellSupernet speak it) -----------------------
    def sample_child(self, generator: torch.Generator | None = None) -> Child:
        """A child drawn from the (untilted) architecture distribution: a width per stage, a candidate per position."""
        def draw(logits):
            return int(torch.multinomial(torch.softmax(logits.detach(), 0), 1, generator=generator))

        return Child(tuple(draw(t) for t in self.theta), tuple(draw(a) for a in self.alpha))

    def child_cost(self, child: Child, kind: str = "flops", table=None) -> float:
        """The child's cost: analytic ``kind`` (flops|params|mac), or from ``table`` (e.g. a latency table of
        :func:`hwnas.children.latency_table`)."""
        from hwnas.children import analytic_table

        return float((table or analytic_table(self.space, kind)).cost(child))

    @torch.no_grad()
    def extract(self, child: Child, arch: Architecture | None = None) -> nn.Sequential:
        """The standalone network of ``child`` (its architecture ``arch``, made here when not given) holding the
        supernet's crops, slices and BN."""
        from hwnas.children import child_arch

        model = build_model(arch or child_arch(self.space, child))
        modules = list(model)
        n_stem = len(self.stem)
        for dst, src in zip(modules[:n_stem], self.stem):
            dst.load_state_dict(src.state_dict())
        k = n_stem
        for i, c in enumerate(child.ops):
            cand = self._cand(i, c)
            if cand is None:
                continue
            body = modules[k].body
            block = self.blocks[i]
            s = self.stage_of[i]
            c_out = self.channels[s][child.widths[s]]
            c_in = body[0][0].in_channels
            for conv_bn, weight, bn in zip(body, block.weights(cand, c_in, c_out), block.bns[cand]):
                conv_bn[0].weight.copy_(weight)
                n = conv_bn[1].num_features
                for name in ("weight", "bias", "running_mean", "running_var"):
                    getattr(conv_bn[1], name).copy_(getattr(bn, name)[:n])
                conv_bn[1].num_batches_tracked.copy_(bn.num_batches_tracked)
            k += 1
        head = modules[k]
        head[0].weight.copy_(self.head_conv.weight[:, :head[0].in_channels])
        head[1].load_state_dict(self.head_conv.bn.state_dict())
        for dst, src in zip(modules[k + 1:], self.head_rest):
            dst.load_state_dict(src.state_dict())
        return model
