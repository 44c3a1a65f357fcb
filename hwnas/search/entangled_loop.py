"""The search with the weight-entangled supernet (the default): ``run_entangled_search(config, predictor, source,
level)``, its steps on the engine of :mod:`hwnas.search.engine` (called through :func:`hwnas.search.run_search`).

Schedule, per epoch (all randomness of an epoch seeded from (seed, epoch), so
``resume`` continues exactly):

1. ``warmup_epochs``: the largest child alone (widest stages, most expensive
   candidate everywhere), which trains every shared weight;
2. then the sandwich rule: each weight step trains the largest child on the
   labels and one sampled child on the largest child's soft outputs (in-place
   distillation), drawn from the (tilted) architecture distribution or, with
   ``weight_sampling`` uniform / band, as :mod:`hwnas.search.weight_sampling` says;
3. from epoch ``warmup_epochs + child_warmup_epochs`` on, every weight step is
   followed by an architecture step on a batch of the *architecture split*, a
   part of the training images (``arch_fraction``) that weight steps never see.
   The reported validation images are never used to choose anything.

Budget control (``control``, :mod:`hwnas.search.plans`): by default the
distribution is tilted every step so its expected latency is
``target_fraction x budget``. At the end of every epoch the child that would be
derived now (the most probable child in the band ``[band_low, band_high] x
budget``, :mod:`hwnas.search.band`) gets its BatchNorm statistics re-estimated
on training images and is scored on the validation split (reported only).

Run folder: as :mod:`hwnas.search.engine` and :mod:`hwnas.search.loop` (config, metrics, probabilities,
checkpoint, arch.json, derived.json, plots), plus ``child.safetensors``: the
derived child's weights taken from the supernet (``hwnas train --init RUN``).
"""

from __future__ import annotations

import json
import math
import random
import time

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Subset

from hwnas.children import Child, analytic_table, child_arch, latency_table
from hwnas.data import load_dataset
from hwnas.errors import HwnasError
from hwnas.progress import progress_bar
from hwnas.runlog import plot_run
from hwnas.search import distributed as D
from hwnas.search.band import BandDecoder
from hwnas.search.config import SearchConfig, SearchResult
from hwnas.search.derive import derive_after_search, derive_summary
from hwnas.search.engine import PROBS_EVERY, chain_run, cycle, evaluate, loader, restore_training, temperature
from hwnas.search.latency import check_budget
from hwnas.search.plans import PlanMaker
from hwnas.search.short_training import short_training_child
from hwnas.search.tilt import entropy
from hwnas.search.weight_sampling import WeightSampler
from hwnas.spaces import get_space
from hwnas.supernet.entangled import EntangledSupernet, Plan
from hwnas.supernet.recalibrate import recalibrate_bn
from hwnas.threads import use_torch_threads
from hwnas.train import set_seed
from hwnas.weights import save_weights


def split_train(dataset, fraction: float, seed: int):
    """(weight part, architecture part) of the training images, disjoint and fixed by ``seed``."""
    n = len(dataset)
    n_arch = max(1, int(round(n * fraction)))
    if n - n_arch < 1:
        raise HwnasError(f"the training split has {n} images: too few to keep {fraction:.0%} for architecture steps")
    order = np.random.default_rng(seed + 7).permutation(n)
    return Subset(dataset, order[n_arch:].tolist()), Subset(dataset, order[:n_arch].tolist())


def derive(net: EntangledSupernet, table, band: BandDecoder | None) -> tuple[Child, float]:
    """The most probable child in the budget band (no budget: the most probable child), and its latency."""
    op_lp = [torch.log_softmax(a.detach().double(), 0).numpy() for a in net.alpha]
    w_lp = [torch.log_softmax(t.detach().double(), 0).numpy() for t in net.theta]
    if band is None:
        child = Child(tuple(int(w.argmax()) for w in w_lp), tuple(int(a.argmax()) for a in op_lp))
        return child, table.cost(child)
    found = band.decode(op_lp, w_lp)
    return found.child, found.latency_ms


@torch.no_grad()
def score_child(net: EntangledSupernet, child: Child, calib, val, device, batches: int) -> tuple[float, float]:
    """(accuracy, loss) of ``child`` with shared weights after re-estimating its BatchNorm statistics."""
    net.set_child(child)
    recalibrate_bn(net, calib, batches)
    acc, loss = evaluate(net, val, device)
    net.set_child(None)
    net.train()
    return acc, loss


def _soft_ce(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    return -(target_probs * torch.log_softmax(logits, 1)).sum(1).mean()


def sandwich_backward(net: EntangledSupernet, x, y, largest: Child, sampled: Child | None,
                      label_smoothing: float = 0.1, distill: bool = True):
    """Gradients of one sandwich-rule weight step, added to ``.grad``: the largest child on the labels, then
    ``sampled`` (None: none) on the largest child's soft outputs (in-place distillation) or, without ``distill``,
    on the labels. Returns (the largest child's logits, its loss, the sampled child's loss)."""
    logits = net(x, Plan.of(largest))
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    loss.backward()
    child_loss = torch.zeros(())
    if sampled is not None:
        child_logits = net(x, Plan.of(sampled))
        child_loss = (_soft_ce(child_logits, torch.softmax(logits.detach(), 1)) if distill
                      else F.cross_entropy(child_logits, y, label_smoothing=label_smoothing))
        child_loss.backward()
    return logits, loss, child_loss


def decision_names(net: EntangledSupernet) -> tuple[list[str], list[list[str]]]:
    """Titles and option names of every decision: stage widths first, then positions."""
    widths = [f"w{w:g}" for w in net.space.width_choices]
    titles = [f"stage {s} width" for s in range(len(net.theta))] + [f"position {i}" for i in range(len(net.alpha))]
    return titles, [widths] * len(net.theta) + net.names


def run_entangled_search(cfg: SearchConfig, predictor, source: str, level: float = 1.0, splits=None) -> SearchResult:
    """Search with ``predictor`` (loaded, levelled; ``source`` names it, ``level`` is its session level)."""
    rank, size, device = D.setup(cfg.device)
    use_torch_threads(cfg.threads, "threads")
    main = rank == 0
    space = get_space(cfg.space, cfg.space_params)
    table = latency_table(space, predictor)
    check_budget(cfg.budget_ms, table.min(), source)
    band = None if cfg.budget_ms is None else BandDecoder(table, cfg.band_low * cfg.budget_ms,
                                                           cfg.band_high * cfg.budget_ms)  # refused now if unreachable
    costs = {kind: analytic_table(space, kind) for kind in ("flops", "params", "mac")}

    if splits is None:
        splits = load_dataset(cfg.dataset, space.params["resolution"], seed=cfg.seed,
                              limit_train=cfg.limit_train, limit_val=cfg.limit_val)
    if splits.num_classes != space.params["num_classes"]:
        raise HwnasError(f"dataset {splits.name} has {splits.num_classes} classes, space {space.name} has "
                         f"{space.params['num_classes']}; add --set num_classes={splits.num_classes}")
    weight_split, arch_split = split_train(splits.train, cfg.arch_fraction, cfg.seed)
    # children are scored on the architecture split's images without augmentation (the same images in order),
    # where the splits have a plain view of the training images
    if splits.train_plain is None:
        arch_scoring, scoring_images = arch_split, "augmented"
    else:
        arch_scoring, scoring_images = split_train(splits.train_plain, cfg.arch_fraction, cfg.seed)[1], "plain"

    set_seed(cfg.seed)
    # channels-last convolutions are ~1.4x faster on a CPU (measured here on the largest child's step)
    net = EntangledSupernet(space, init_std=cfg.alpha_init_std).to(device, memory_format=torch.channels_last)
    weights = net.weight_parameters()
    opt_w = torch.optim.SGD([{"params": [p for p in weights if p.ndim > 1], "weight_decay": cfg.weight_decay},
                             {"params": [p for p in weights if p.ndim <= 1], "weight_decay": 0.0}],
                            lr=cfg.lr_w, momentum=cfg.momentum, nesterov=True)
    opt_a = torch.optim.Adam(net.arch_parameters(), lr=cfg.lr_alpha, betas=(0.0, 0.999))
    target = None if cfg.budget_ms is None else cfg.target_fraction * cfg.budget_ms
    maker = PlanMaker(net, table, cfg.mode, cfg.control, target_ms=target, budget_ms=cfg.budget_ms,
                      lambda_lat=cfg.latency_weight, generator=torch.Generator())
    largest = table.largest_child()
    sampler = WeightSampler(cfg.weight_sampling, table, cfg.budget_ms, cfg.seed, maker.sample_child)

    out = cfg.out_dir
    run = chain_run(cfg, level, main, predictor)

    def restore(state: dict) -> None:
        restore_training(state, net, opt_w, opt_a)
        maker.beta, maker.baseline = float(state["beta"]), state["baseline"]

    start = run.open(restore)

    steps = max(1, len(weight_split) // size // cfg.batch_size)
    if cfg.max_steps:
        steps = min(steps, cfg.max_steps)
    arch_start = cfg.warmup_epochs + cfg.child_warmup_epochs
    if main:
        band_text = ("" if cfg.budget_ms is None else
                f"; budget {cfg.budget_ms:g} ms, target E[LAT] {target:.4f} ms, band "
                f"[{cfg.band_low * cfg.budget_ms:.4f}, {cfg.band_high * cfg.budget_ms:.4f}] ms")
        print(f"search {space.name} ({len(net.alpha)} positions, {len(net.theta)} stage widths, {space.size:.2e} "
              f"architectures), weight-entangled supernet, mode {cfg.mode} ({cfg.control} budget control), "
              f"{splits.name}: {len(weight_split)} weight / {len(arch_split)} architecture / {len(splits.val)} "
              f"validation images, {cfg.epochs} epochs x {steps} steps ({cfg.warmup_epochs} largest-child, "
              f"{cfg.child_warmup_epochs} sandwich before architecture steps), {size} process(es) on {device}; "
              f"latency from {source} (min {table.min():.3f} ms, max {table.max():.3f} ms){band_text}")

    trace = 0.0  # a fingerprint of the sampled children, compared across ranks at the end
    for epoch in range(start, cfg.epochs):
        set_seed(cfg.seed * 1000 + epoch)
        maker.generator.manual_seed(cfg.seed * 100003 + epoch)
        sample_rng = random.Random(cfg.seed * 100003 + epoch)  # uniform / band weight sampling
        maker.tau = temperature(cfg.tau_start, cfg.tau_end, cfg.epochs, cfg.warmup_epochs, epoch)
        phase = "largest" if epoch < cfg.warmup_epochs else "sandwich" if epoch < arch_start else "search"
        for group in opt_w.param_groups:
            group["lr"] = cfg.lr_w * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
        train_iter = iter(loader(weight_split, cfg.batch_size, cfg.seed, epoch, rank, size, cfg.workers))
        arch_iter = cycle(loader(arch_split, cfg.batch_size, cfg.seed + 1, epoch, rank, size, cfg.workers))
        net.train()
        t0 = time.time()
        sums = {"loss": 0.0, "child_loss": 0.0, "correct": 0, "n": 0, "arch_loss": 0.0, "arch_steps": 0,
                "exp_ms": 0.0, "exp_ms_max": 0.0, "exp_ms_min": math.inf, "steps": 0}
        bar = progress_bar(total=steps, desc=f"{phase} {epoch + 1}/{cfg.epochs}", enabled=cfg.progress and main,
                           leave=False, unit="step")
        for step in range(steps):
            try:
                x, y = next(train_iter)
            except StopIteration:
                break
            x, y = x.to(device, memory_format=torch.channels_last), y.to(device)
            maker.update_beta()
            sums["exp_ms"] += maker.expected_ms
            sums["exp_ms_max"] = max(sums["exp_ms_max"], maker.expected_ms)
            sums["exp_ms_min"] = min(sums["exp_ms_min"], maker.expected_ms)
            sums["steps"] += 1
            # weight step: the largest child on the labels, a sampled child on its soft outputs
            opt_w.zero_grad(set_to_none=True)
            sampled = None
            if phase != "largest":
                sampled = sampler.sample(sample_rng)
                trace += _fingerprint(sampled) * (step + 1)
            logits, loss, child_loss = sandwich_backward(net, x, y, largest, sampled, cfg.label_smoothing,
                                                         cfg.distill)
            D.sync_grads([p.grad for p in weights])
            opt_w.step()
            arch_loss = None
            if phase == "search":
                arch_loss = arch_step(net, maker, opt_a, next(arch_iter), device)
            values = {"loss": loss.item(), "child loss": child_loss.item(), "arch loss": arch_loss or 0.0}
            run.check_finite(values, epoch, step)
            sums["loss"] += values["loss"] * len(y)
            sums["child_loss"] += values["child loss"] * len(y)
            sums["correct"] += int((logits.argmax(1) == y).sum())
            sums["n"] += len(y)
            if arch_loss is not None:
                sums["arch_loss"] += arch_loss
                sums["arch_steps"] += 1
            global_step = epoch * steps + step + 1
            if main and (global_step % PROBS_EVERY == 0 or step == steps - 1):
                run.log_probs({"epoch": epoch + 1, "step": global_step, "beta": round(maker.beta, 5),
                               "probs": [[round(v, 5) for v in torch.softmax(p.detach(), 0).tolist()]
                                         for p in net.arch_parameters()[len(net.alpha):]]
                               + [[round(v, 5) for v in torch.softmax(p.detach(), 0).tolist()] for p in net.alpha]})
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss'] / max(1, sums['n']):.3f}", beta=f"{maker.beta:.3g}")
        bar.close()

        child, child_ms = derive(net, table, band)
        val_acc, val_loss = score_child(net, child, loader(weight_split, cfg.batch_size, cfg.seed + 2, epoch, rank,
                                                            size, 0), splits.val, device, cfg.recalib_batches)
        arch = child_arch(space, child)
        untilted = maker.expected_latency().item()
        row = {"epoch": epoch + 1, "phase": phase,
               "train_loss": round(sums["loss"] / max(1, sums["n"]), 5),
               "train_acc": round(sums["correct"] / max(1, sums["n"]), 5),
               "child_loss": round(sums["child_loss"] / max(1, sums["n"]), 5),
               "arch_loss": round(sums["arch_loss"] / sums["arch_steps"], 5) if sums["arch_steps"] else None,
               "val_acc": round(val_acc, 5), "val_loss": round(val_loss, 5),
               "beta": round(maker.beta, 5), "exp_latency_ms": round(sums["exp_ms"] / max(1, sums["steps"]), 5),
               "exp_latency_range_ms": [round(sums["exp_ms_min"], 5), round(sums["exp_ms_max"], 5)],
               "untilted_latency_ms": round(untilted, 5),
               "derived_latency_ms": round(child_ms, 5), "budget_ms": cfg.budget_ms,
               "exp_mflops": round(maker.tilted().expected_cost(costs["flops"]) / 1e6, 4),
               "entropy": round(float(np.mean([entropy(p) for p in net.arch_parameters()])), 4),
               "lr_w": opt_w.param_groups[0]["lr"], "seconds": round(time.time() - t0, 2),
               "stage_widths": list(arch.space.stage_widths), "choices": list(arch.choices)}
        state = {"supernet": "entangled", "model": net.state_dict(), "opt_w": opt_w.state_dict(),
                 "opt_a": opt_a.state_dict(), "beta": maker.beta, "baseline": maker.baseline}
        line = (f"epoch {epoch + 1}/{cfg.epochs} [{phase}]: train loss {row['train_loss']:.4f}, child "
                f"{' '.join(arch.choices)} widths {','.join(f'{w:g}' for w in arch.space.stage_widths)}: "
                f"{child_ms:.3f} ms predicted, val acc (shared weights) {val_acc:.4f}; E[LAT] "
                f"{row['exp_latency_ms']:.3f} ms (beta {maker.beta:.3g}) ({row['seconds']:.1f} s)")
        if run.end_epoch(epoch, row, state, line, cfg.stop_after):
            break

    child, child_ms = derive(net, table, band)
    by_acc = None  # issue 20: the child of the band with the best supernet accuracy (evolution) or proxy
    if cfg.derive != "argmax" and band is not None and main:
        derive_by = short_training_child if cfg.derive == "short" else derive_after_search
        by_acc = derive_by(cfg, net, table, band, weight_split, arch_scoring, out, images=scoring_images)
        child, child_ms = by_acc.child, by_acc.latency_ms
    arch = child_arch(space, child)
    cost = arch.cost()
    titles, names = decision_names(net)
    params = net.arch_parameters()[len(net.alpha):] + list(net.alpha)
    summary = {
        "space": space.name, "supernet": "entangled", "mode": cfg.mode, "control": cfg.control,
        "choices": list(arch.choices), "stage_widths": list(arch.space.stage_widths),
        "predicted_latency_ms": round(child_ms, 5), "latency_source": source, "latency_level": level,
        "budget_ms": cfg.budget_ms,
        "band_ms": None if cfg.budget_ms is None else [round(cfg.band_low * cfg.budget_ms, 5),
                                                        round(cfg.band_high * cfg.budget_ms, 5)],
        "within_budget": None if cfg.budget_ms is None else child_ms <= cfg.budget_ms + 1e-9,
        "min_latency_ms": round(table.min(), 5), "max_latency_ms": round(table.max(), 5),
        "mflops": round(cost.flops / 1e6, 4), "mparams": round(cost.params / 1e6, 5), "mmac": round(cost.mac / 1e6, 4),
        "beta": maker.beta, "val_acc_supernet_child": run.history[-1]["val_acc"] if run.history else None,
        **derive_summary(cfg, by_acc),
        "epochs_done": run.last_epoch(), "ranks": size,
        "probs": {title: dict(zip(opts, [round(v, 4) for v in torch.softmax(p.detach(), 0).tolist()]))
                  for title, opts, p in zip(titles, names, params)},
    }
    summary["alpha_max_rank_difference"] = D.all_equal(net.arch_parameters())
    summary["weight_max_rank_difference"] = D.all_equal(weights)
    summary["gate_trace_rank_difference"] = D.all_equal([torch.tensor([trace], dtype=torch.float64)])
    if main:
        arch.save(out / "arch.json")
        save_weights(net.extract(child, arch), out / "child.safetensors",
                     {"kind": "hwnas-child", "arch": json.dumps(arch.to_dict())})
        plot_run(out, run.history, run.probs_log, names, titles)
        (out / "derived.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"derived architecture: {out / 'arch.json'}\n  choices {' '.join(arch.choices)}, stage widths "
              f"{', '.join(f'{w:g}' for w in arch.space.stage_widths)}\n  predicted latency {child_ms:.4f} ms "
              f"({source})" + (f", budget {cfg.budget_ms:g} ms ({child_ms / cfg.budget_ms:.2f}x)"
                               if cfg.budget_ms is not None else "")
              + f"; {summary['mflops']:.2f} MFLOPs, {summary['mparams']:.4f} M params")
    run.close()
    return SearchResult(arch, summary, run.history, out, net)


def _fingerprint(child: Child) -> float:
    return float(sum((i + 1) * (c + 2) for i, c in enumerate(child.widths + child.ops)))


def arch_step(net: EntangledSupernet, maker: PlanMaker, opt_a, batch, device) -> float:
    """One architecture update on an architecture-split batch; returns its loss."""
    xa, ya = batch[0].to(device, memory_format=torch.channels_last), batch[1].to(device)
    plan, extra = maker.arch_plan()
    opt_a.zero_grad(set_to_none=True)
    arch = net.arch_parameters()
    if maker.mode == "proxyless-reinforce":
        with torch.no_grad():
            ce = F.cross_entropy(net(xa, plan), ya)
        loss = maker.reinforce_loss(plan, -float(ce))
    else:
        ce = F.cross_entropy(net(xa, plan, checkpoint=True), ya)
        loss = ce
    if extra is not None:
        loss = loss + extra
    loss.backward(inputs=arch)
    before = [a.detach().clone() for a in arch]
    D.sync_grads([a.grad for a in arch])
    opt_a.step()
    if maker.mode == "proxyless":
        maker.rescale(before)
    return ce.item() + (extra.item() if extra is not None else 0.0)
