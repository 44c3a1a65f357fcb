"""The search with the separate-weights supernet: ``run_separate_search(config, predictor, source, level)``,
its steps on the engine of :mod:`hwnas.search.engine` (called through :func:`hwnas.search.run_search`).

Per epoch: warm-up epochs train only the weights; later epochs alternate a
weight step on a training batch and an architecture step on a validation batch
(SNAS: one joint step). At the end of every epoch the derived child (argmax per
position) is evaluated on the validation split, a metrics row is appended and a
checkpoint written, so ``resume=True`` continues exactly: all randomness of an
epoch (data order, augmentation, gate samples) is seeded from (seed, epoch).

Run folder (:mod:`hwnas.search.engine`): ``config.json``, ``metrics.jsonl`` / ``metrics.csv``, ``probs.jsonl``
(path probabilities over steps), ``checkpoint.pt``, ``arch.json`` (the derived
architecture), ``derived.json`` (its predicted latency, FLOPs, params, the budget
and the final probabilities), ``probs.png``, ``curves.png`` and ``tb/`` when
TensorBoard is installed.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from hwnas.arch import architecture_of
from hwnas.children import latency_table
from hwnas.data import load_dataset
from hwnas.errors import HwnasError
from hwnas.progress import progress_bar
from hwnas.runlog import plot_run
from hwnas.search import distributed as D
from hwnas.search.band import BandDecoder
from hwnas.search.config import SearchConfig, SearchResult
from hwnas.search.engine import PROBS_EVERY, chain_run, cycle, evaluate, loader, restore_training, temperature
from hwnas.search.latency import check_budget, latency_model
from hwnas.search.losses import entropy, resource_loss
from hwnas.search.updates import StepContext, make_step
from hwnas.spaces import get_space
from hwnas.supernet import Supernet
from hwnas.threads import use_torch_threads
from hwnas.train import set_seed


# -- the loop -------------------------------------------------------------------------------
def run_separate_search(cfg: SearchConfig, predictor, source: str, level: float = 1.0) -> SearchResult:
    """Search ``cfg.space`` on ``cfg.dataset`` with ``predictor`` (loaded, levelled; ``source`` names it and
    ``level`` is its session level); see the module docstring for the outputs."""
    rank, size, device = D.setup(cfg.device)
    use_torch_threads(cfg.threads, "threads")
    main = rank == 0
    space = get_space(cfg.space, cfg.space_params)
    if space.searches_width:
        if main:
            print(f"note: the separate-weights supernet searches operators at fixed stage widths "
                  f"({', '.join(f'{w:g}' for w in space.stage_widths)}); width choices need --supernet-type entangled")
        space = get_space(space.name, dict(space.params, width_choices=[1.0]))
    lat = latency_model(space, predictor, source)
    check_budget(cfg.budget_ms, lat.min_ms, lat.source)
    band = None
    if cfg.budget_ms is not None and cfg.fit_budget:  # the derivation's band, refused now when out of reach
        band = BandDecoder(latency_table(space, predictor), cfg.band_low * cfg.budget_ms, cfg.band_high * cfg.budget_ms)

    splits = load_dataset(cfg.dataset, space.params["resolution"], seed=cfg.seed,
                          limit_train=cfg.limit_train, limit_val=cfg.limit_val)
    if splits.num_classes != space.params["num_classes"]:
        raise HwnasError(f"dataset {splits.name} has {splits.num_classes} classes, space {space.name} has "
                         f"{space.params['num_classes']}; add --set num_classes={splits.num_classes}")

    set_seed(cfg.seed)
    net = Supernet(space, cfg.mode).to(device)
    net.set_latency(lat.per_position, lat.fixed_ms)
    model = D.wrap(net, device)
    weights = net.weight_parameters()
    opt_w = torch.optim.SGD([{"params": [p for p in weights if p.ndim > 1], "weight_decay": cfg.weight_decay},
                             {"params": [p for p in weights if p.ndim <= 1], "weight_decay": 0.0}],
                            lr=cfg.lr_w, momentum=cfg.momentum, nesterov=True)
    opt_a = torch.optim.Adam(net.arch_parameters(), lr=cfg.lr_alpha, betas=(0.0, 0.999))
    eta = {"flops": cfg.eta_flops, "mac": cfg.eta_mac, "params": cfg.eta_params}
    lambda_arch = 0.0 if cfg.mode == "proxyless-reinforce" else cfg.latency_weight  # reinforce: in the reward
    ctx = StepContext(
        net=net, model=model, opt_w=opt_w, opt_a=opt_a, generator=torch.Generator(),
        resource=lambda: resource_loss(net, lambda_arch, cfg.budget_ms, lat.max_ms, eta, cfg.budget_on),
        sync=D.sync_grads, lambda_lat=cfg.latency_weight, budget_ms=cfg.budget_ms, reference_ms=lat.max_ms,
        weight_decay=cfg.weight_decay, baseline_decay=cfg.baseline_decay, darts_order=cfg.darts_order)
    stepper = make_step(cfg.mode, ctx)

    out = cfg.out_dir
    run = chain_run(cfg, level, main, predictor)

    def restore(state: dict) -> None:
        restore_training(state, net, opt_w, opt_a)
        ctx.baseline = state["baseline"]

    start = run.open(restore)

    train_per_rank = len(splits.train) // size
    steps = max(1, train_per_rank // cfg.batch_size)
    if cfg.max_steps:
        steps = min(steps, cfg.max_steps)
    if main:
        print(f"search {space.name} ({len(space.positions)} positions, {space.size:.2e} architectures), mode "
              f"{cfg.mode}, {splits.name}: {len(splits.train)} train / {len(splits.val)} val, {cfg.epochs} epochs "
              f"x {steps} steps, {size} process(es) on {device}; latency from {lat.source} "
              f"(min {lat.min_ms:.3f} ms, max {lat.max_ms:.3f} ms)"
              + (f"; budget {cfg.budget_ms:g} ms" if cfg.budget_ms is not None else ""))

    gate_trace = 0.0  # a fingerprint of the sampled paths, compared across ranks at the end
    for epoch in range(start, cfg.epochs):
        set_seed(cfg.seed * 1000 + epoch)  # data order, augmentation; same on every rank
        ctx.generator.manual_seed(cfg.seed * 100003 + epoch)  # gate samples: same on every rank
        if cfg.mode == "snas":
            net.mode.tau = temperature(cfg.tau_start, cfg.tau_end, cfg.epochs, cfg.warmup_epochs, epoch)
        search = epoch >= cfg.warmup_epochs
        for group in opt_w.param_groups:  # cosine over epochs
            group["lr"] = cfg.lr_w * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
        train_iter = iter(loader(splits.train, cfg.batch_size, cfg.seed, epoch, rank, size, cfg.workers))
        val_iter = cycle(loader(splits.val, cfg.batch_size, cfg.seed + 1, epoch, rank, size, cfg.workers))
        net.train()
        t0 = time.time()
        sums = {"loss": 0.0, "correct": 0, "n": 0, "arch_loss": 0.0, "arch_steps": 0}
        last = {}
        bar = progress_bar(total=steps, desc=f"{'search' if search else 'warm-up'} {epoch + 1}/{cfg.epochs}",
                           enabled=cfg.progress and main, leave=False, unit="step")
        for step in range(steps):
            try:
                x, y = next(train_iter)
            except StopIteration:
                break
            batch = (x.to(device), y.to(device))
            val = next(val_iter) if search else None
            val = (val[0].to(device), val[1].to(device)) if val is not None else None
            res = stepper.step(batch, val, update_arch=search)
            gate_trace += sum((i + 1) * (p + 2) for i, p in enumerate(net.sampled_paths())) * (step + 1)
            loss = float(res["loss"])
            run.check_finite({"loss": loss, "arch loss": res.get("arch_loss", 0.0)}, epoch, step)
            sums["loss"] += loss * res["n"]
            sums["correct"] += res["correct"]
            sums["n"] += res["n"]
            if "arch_loss" in res:
                sums["arch_loss"] += res["arch_loss"]
                sums["arch_steps"] += 1
                last = res
            global_step = epoch * steps + step + 1
            if main and (global_step % PROBS_EVERY == 0 or step == steps - 1):
                run.log_probs({"epoch": epoch + 1, "step": global_step,
                               "probs": [[round(v, 5) for v in p.tolist()] for p in net.probs()]})
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss'] / max(1, sums['n']):.3f}")
        bar.close()

        val_acc, val_loss = evaluate(net, splits.val, device)
        choices = net.argmax_choices()
        with torch.no_grad():
            _, stats = resource_loss(net, 0.0, cfg.budget_ms, lat.max_ms, {})
        row = {"epoch": epoch + 1, "phase": "search" if search else "warmup",
               "train_loss": round(sums["loss"] / max(1, sums["n"]), 5),
               "train_acc": round(sums["correct"] / max(1, sums["n"]), 5),
               "arch_loss": round(sums["arch_loss"] / sums["arch_steps"], 5) if sums["arch_steps"] else None,
               "val_acc": round(val_acc, 5), "val_loss": round(val_loss, 5),
               "exp_latency_ms": round(stats["exp_latency_ms"], 5),
               "derived_latency_ms": round(net.cost_of("latency", choices), 5),
               "budget_ms": cfg.budget_ms,
               "exp_mflops": round(stats["exp_mflops"], 4), "exp_mparams": round(stats["exp_mparams"], 5),
               "exp_mmac": round(stats["exp_mmac"], 4),
               "entropy": round(sum(entropy(p) for p in net.probs()) / len(net.mixed), 4),
               "lr_w": opt_w.param_groups[0]["lr"], "seconds": round(time.time() - t0, 2),
               "choices": choices}
        if cfg.mode == "snas":
            row["tau"] = round(net.mode.tau, 5)
        if cfg.mode == "proxyless-reinforce" and "reward" in last:
            row["baseline"] = ctx.baseline
        state = {"model": net.state_dict(), "opt_w": opt_w.state_dict(), "opt_a": opt_a.state_dict(),
                 "baseline": ctx.baseline}
        line = (f"epoch {epoch + 1}/{cfg.epochs} [{row['phase']}]: train loss {row['train_loss']:.4f}, "
                f"val acc (argmax child) {val_acc:.4f}, E[lat] {row['exp_latency_ms']:.3f} ms, "
                f"argmax child {row['derived_latency_ms']:.3f} ms ({row['seconds']:.1f} s)")
        if run.end_epoch(epoch, row, state, line, cfg.stop_after):
            break

    summary = _finish(net, cfg, lat, level, band, out if main else None, run.history, run.probs_log)
    summary["epochs_done"] = run.last_epoch()
    summary["ranks"] = size
    summary["alpha_max_rank_difference"] = D.all_equal(net.arch_parameters())
    summary["gate_trace_rank_difference"] = D.all_equal([torch.tensor([gate_trace], dtype=torch.float64)])
    if main:
        (out / "derived.json").write_text(json.dumps(summary, indent=2) + "\n")
    run.close()
    return SearchResult(architecture_of(space, summary["choices"]), summary, run.history, out, net)


def _finish(net: Supernet, cfg: SearchConfig, lat, level: float, band, out: Path | None, history, probs_log) -> dict:
    """Derive the child (the most probable one in the budget band), write arch.json and plots; the summary."""
    argmax = net.argmax_choices()
    choices = argmax
    if band is not None:
        found = band.decode([torch.log_softmax(op.alpha.detach().double(), 0).numpy() for op in net.mixed])
        choices = [op.names[c] for op, c in zip(net.mixed, found.child.ops)]
    arch = architecture_of(net.space, choices)
    cost = arch.cost()
    latency = net.cost_of("latency", choices)
    summary = {
        "space": net.space.name, "mode": cfg.mode, "choices": choices,
        "predicted_latency_ms": round(latency, 5), "latency_source": lat.source, "latency_level": level,
        "budget_ms": cfg.budget_ms,
        "within_budget": None if cfg.budget_ms is None else latency <= cfg.budget_ms + 1e-9,
        "min_latency_ms": round(lat.min_ms, 5), "max_latency_ms": round(lat.max_ms, 5),
        "mflops": round(cost.flops / 1e6, 4), "mparams": round(cost.params / 1e6, 5),
        "mmac": round(cost.mac / 1e6, 4),
        "argmax_choices": argmax, "argmax_latency_ms": round(net.cost_of("latency", argmax), 5),
        "band_ms": None if band is None else [round(band.low, 5), round(band.high, 5)],
        "val_acc_supernet_child": history[-1]["val_acc"] if history else None,
        "probs": {f"pos{i}": dict(zip(op.names, [round(v, 4) for v in op.probs().tolist()]))
                  for i, op in enumerate(net.mixed)},
    }
    if out is not None:
        arch.save(out / "arch.json")
        plot_run(out, history, probs_log, [op.names for op in net.mixed])
        print(f"derived architecture: {out / 'arch.json'}\n  choices {' '.join(choices)}\n"
              f"  predicted latency {latency:.4f} ms ({lat.source})"
              + (f", budget {cfg.budget_ms:g} ms" if cfg.budget_ms is not None else "")
              + f"; {summary['mflops']:.2f} MFLOPs, {summary['mparams']:.4f} M params")
    return summary
