"""How fast does single-path supernet training learn, against one child trained alone?

Trains, with the same SGD recipe and data order, (a) one child network built
alone, (b) the same child pinned inside the separate-weights supernet, (c) that
supernet with one path per position sampled uniformly every step, from all
candidates or from a subset, and (d) the weight-entangled supernet with the
sandwich rule (the largest child on the labels + one uniformly sampled child on
the largest child's outputs), without and with stage-width choices; prints the
mean training loss of each block of 20 steps. For (d) the loss shown is the
lone child's own cross-entropy on each training batch, computed with the
shared weights before the step (the entangled supernet trains other children,
so this is how well it serves that child).

    .venv/bin/python benchmarks/single_path_learning.py --steps 100
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader

from hwnas.arch import architecture_of
from hwnas.builder import build_model
from hwnas.data import load_dataset
from hwnas.spaces import get_space
from hwnas.supernet import Supernet


def train_losses(model, splits, steps: int, lr: float, batch_size: int, sample=None) -> list[float]:
    """Training loss per step; ``sample()`` is called before each step (path sampling)."""
    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=4e-5)
    loader = DataLoader(splits.train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    model.train()
    losses = []
    while len(losses) < steps:
        for x, y in loader:
            if sample:
                sample()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    return losses


def restricted_supernet(space, allowed: set[str] | None) -> Supernet:
    """A proxyless supernet whose sampling only picks candidates in ``allowed`` (all when None)."""
    net = Supernet(space, "proxyless")
    if allowed:
        with torch.no_grad():
            for op in net.mixed:
                for j, name in enumerate(op.names):
                    op.alpha[j] = 0.0 if name in allowed else -50.0
    return net


def entangled_losses(space, child_choice: str, splits, steps: int, lr: float, batch_size: int) -> list[float]:
    """The weight-entangled supernet with the sandwich rule; per step the lone child's loss on the batch."""
    import torch.nn.functional as F

    from hwnas.children import analytic_table, child_of
    from hwnas.supernet.entangled import EntangledSupernet, Plan

    torch.manual_seed(0)
    net = EntangledSupernet(space)
    table = analytic_table(space, "flops")
    largest = table.largest_child()
    child = child_of(space, architecture_of(space.at_widths([1.0] * space.num_stages) if space.searches_width
                                            else space, [child_choice] * len(space.positions)))
    opt = torch.optim.SGD(net.weight_parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=4e-5)
    loader = DataLoader(splits.train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(0)
    net.train()
    losses = []
    while len(losses) < steps:
        for x, y in loader:
            with torch.no_grad():
                losses.append(F.cross_entropy(net(x, Plan.of(child)), y).item())
            opt.zero_grad()
            teacher = net(x, Plan.of(largest))
            F.cross_entropy(teacher, y).backward()
            sampled = Plan.of(type(child)(
                tuple(int(torch.randint(table.num_widths, (1,), generator=gen)) for _ in range(table.num_stages)),
                tuple(int(torch.randint(len(n), (1,), generator=gen)) for n in table.names)))
            soft = torch.softmax(teacher.detach(), 1)
            (-(soft * torch.log_softmax(net(x, sampled), 1)).sum(1).mean()).backward()
            opt.step()
            if len(losses) == steps:
                break
    return losses


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="proxyless-tiny")
    p.add_argument("--child", default="k3_e6", help="the candidate used at every position of the child")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--subsets", default="k3_e6+k5_e6;k3_e6+k5_e6+k7_e6",
                   help="candidate subsets to sample from, ';'-separated, '+' within a subset")
    args = p.parse_args()
    torch.set_num_threads(1)
    width_space = get_space(args.space)
    space = get_space(args.space, {"width_choices": [1.0]})  # rows (a)-(c): fixed stage widths
    splits = load_dataset("digits", space.params["resolution"], seed=0)
    choices = [args.child] * len(space.positions)
    runs = {f"child {args.child} alone": (build_model(architecture_of(space, choices)), None)}
    pinned = Supernet(space, "proxyless")
    pinned.set_active(choices)
    runs[f"child {args.child} pinned in the supernet"] = (pinned, None)
    for subset in [None] + [set(s.split("+")) for s in args.subsets.split(";") if s]:
        net = restricted_supernet(space, subset)
        gen = torch.Generator().manual_seed(0)
        label = "sampled from " + ("all candidates" if subset is None else "{" + ", ".join(sorted(subset)) + "}")
        runs[label] = (net, lambda net=net, gen=gen: net.resample("weight", gen))
    print(f"{args.space}, digits, {args.steps} steps, lr {args.lr}, batch {args.batch_size}: "
          "mean training loss per 20 steps")
    entangled = {f"entangled sandwich, fixed widths: {args.child}'s loss": space}
    if width_space.searches_width:
        entangled[f"entangled sandwich, stage widths too: {args.child}'s loss"] = width_space
    for label, (model, sample) in list(runs.items()) + [(k, (v, "entangled")) for k, v in entangled.items()]:
        if sample == "entangled":
            losses = entangled_losses(model, args.child, splits, args.steps, args.lr, args.batch_size)
        else:
            losses = train_losses(model, splits, args.steps, args.lr, args.batch_size, sample)
        blocks = [sum(losses[i:i + 20]) / len(losses[i:i + 20]) for i in range(0, len(losses), 20)]
        print(f"  {label:58s} " + " ".join(f"{v:.3f}" for v in blocks))


if __name__ == "__main__":
    main()
