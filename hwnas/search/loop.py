"""The gradient search loop: ``run_search(config) -> SearchResult``.

Per epoch: warm-up epochs train only the weights; later epochs alternate a
weight step on a training batch and an architecture step on a validation batch
(SNAS: one joint step). At the end of every epoch the derived child (argmax per
position) is evaluated on the validation split, a metrics row is appended and a
checkpoint written, so ``resume=True`` continues exactly: all randomness of an
epoch (data order, augmentation, gate samples) is seeded from (seed, epoch).

Run folder: ``config.json``, ``metrics.jsonl`` / ``metrics.csv``, ``probs.jsonl``
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
from torch.nn import functional as F
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from hwnas.progress import progress_bar

from hwnas.arch import architecture_of
from hwnas.data import load_dataset
from hwnas.errors import HwnasError
from hwnas.search import distributed as D
from hwnas.search.config import RESUME_KEYS, SearchConfig, SearchResult
from hwnas.search.band import BandDecoder
from hwnas.search.cost_tables import latency_table
from hwnas.search.latency import check_budget, latency_model, load_latency_predictor
from hwnas.search.losses import entropy, resource_loss
from hwnas.runlog import check_inputs, resumed_rows
from hwnas.search.report import (METRICS, METRICS_CSV, PROBS, TensorBoard, append_jsonl, plot_run, read_jsonl,
                                 write_csv, write_jsonl)
from hwnas.search.updates import StepContext, make_step
from hwnas.spaces import get_space
from hwnas.supernet import Supernet
from hwnas.threads import use_torch_threads
from hwnas.train import set_seed

CHECKPOINT = "checkpoint.pt"
PROBS_EVERY = 5  # record path probabilities every this many steps


def _loader(dataset, batch_size: int, seed: int, epoch: int, rank: int, size: int, workers: int) -> DataLoader:
    drop_last = len(dataset) > batch_size * size
    if size > 1:
        sampler = DistributedSampler(dataset, num_replicas=size, rank=rank, shuffle=True, seed=seed,
                                     drop_last=True)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed * 1000 + epoch))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=workers)


def _cycle(loader):
    while True:
        yield from loader


@torch.no_grad()
def _evaluate(net: Supernet, dataset, device, batch_size: int = 256) -> tuple[float, float]:
    net.eval()
    correct, loss, n = 0, 0.0, 0
    for x, y in DataLoader(dataset, batch_size=batch_size):
        x, y = x.to(device), y.to(device)
        logits = net(x)
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    net.train()
    return correct / max(1, n), loss / max(1, n)


def _tau(cfg: SearchConfig, epoch: int) -> float:
    """SNAS temperature for ``epoch``: geometric from tau_start to tau_end over the search epochs."""
    span = max(1, cfg.epochs - cfg.warmup_epochs - 1)
    progress = min(1.0, max(0, epoch - cfg.warmup_epochs) / span)
    return cfg.tau_start * (cfg.tau_end / cfg.tau_start) ** progress


# -- checkpoints ---------------------------------------------------------------------------
def _save_checkpoint(path: Path, epoch: int, net, opt_w, opt_a, ctx: StepContext, cfg: SearchConfig) -> None:
    state = {"epoch": epoch, "model": net.state_dict(), "opt_w": opt_w.state_dict(), "opt_a": opt_a.state_dict(),
             "baseline": ctx.baseline, "config": json.dumps(cfg.to_dict())}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _load_checkpoint(path: Path, net, opt_w, opt_a, ctx: StepContext, cfg: SearchConfig) -> int:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = json.loads(state["config"])
        epoch = int(state["epoch"])
    except Exception as exc:  # truncated file, foreign pickle, missing keys
        raise HwnasError(f"{path}: not a readable hwnas search checkpoint ({type(exc).__name__})") from None
    current = cfg.to_dict()
    for key in RESUME_KEYS:
        if saved.get(key) != current[key]:
            raise HwnasError(f"{path}: checkpoint was written with {key}={saved.get(key)!r}, this run has "
                             f"{key}={current[key]!r}; resume with the same settings")
    net.load_state_dict(state["model"])
    opt_w.load_state_dict(state["opt_w"])
    opt_a.load_state_dict(state["opt_a"])
    ctx.baseline = state["baseline"]
    return epoch


# -- the loop -------------------------------------------------------------------------------
def run_search(config: SearchConfig) -> SearchResult:
    """Search ``config.space`` on ``config.dataset``; see the module docstring for the outputs."""
    cfg = config
    cfg.check()
    rank, size, device = D.setup(cfg.device)
    use_torch_threads(cfg.threads, "threads")
    main = rank == 0
    space = get_space(cfg.space, cfg.space_params)
    if space.searches_width:
        if main:
            print(f"note: the separate-weights supernet searches operators at fixed stage widths "
                  f"({', '.join(f'{w:g}' for w in space.stage_widths)}); width choices need --supernet-type entangled")
        space = get_space(space.name, dict(space.params, width_choices=[1.0]))
    lat = latency_model(space, cfg.predictor, cfg.latency_level)
    check_budget(cfg.budget_ms, lat)
    band = None
    if cfg.budget_ms is not None and cfg.fit_budget:  # the derivation's band, refused now when out of reach
        predictor = load_latency_predictor(space, cfg.predictor, quiet=True, level=cfg.latency_level)[0]
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
    start, history, probs_log = 0, [], []
    if main:
        out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT
    check_inputs(out, cfg.predictor, cfg.dataset, cfg.resume and ckpt.exists(), write=main)
    if cfg.resume and ckpt.exists():
        start = _load_checkpoint(ckpt, net, opt_w, opt_a, ctx, cfg)
        if main:
            history = resumed_rows(out / METRICS, start)
            probs_log = read_jsonl(out / PROBS, start)
            print(f"resuming from {ckpt} after epoch {start}/{cfg.epochs}")
    elif cfg.resume and main:
        print(f"no checkpoint in {out}; starting a new run")
    if main:
        write_jsonl(out / METRICS, history)
        write_jsonl(out / PROBS, probs_log)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        if not cfg.resume:
            ckpt.unlink(missing_ok=True)
    tb = TensorBoard(out / "tb") if main else None

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
            net.mode.tau = _tau(cfg, epoch)
        search = epoch >= cfg.warmup_epochs
        for group in opt_w.param_groups:  # cosine over epochs
            group["lr"] = cfg.lr_w * 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
        train_iter = iter(_loader(splits.train, cfg.batch_size, cfg.seed, epoch, rank, size, cfg.workers))
        val_iter = _cycle(_loader(splits.val, cfg.batch_size, cfg.seed + 1, epoch, rank, size, cfg.workers))
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
            bad = [f"{name} {value}" for name, value in (("loss", loss), ("arch loss", res.get("arch_loss", 0.0)))
                   if not math.isfinite(value)]
            if bad:
                raise HwnasError(
                    f"non-finite {' and '.join(bad)} at epoch {epoch + 1}, step {step + 1}; stopped. "
                    "The last good checkpoint "
                    f"({ckpt}, after epoch {start if not history else history[-1]['epoch']}) is kept; lower "
                    "the learning rates (lr_w / lr_alpha) or lambda_lat and --resume")
            sums["loss"] += loss * res["n"]
            sums["correct"] += res["correct"]
            sums["n"] += res["n"]
            if "arch_loss" in res:
                sums["arch_loss"] += res["arch_loss"]
                sums["arch_steps"] += 1
                last = res
            global_step = epoch * steps + step + 1
            if main and (global_step % PROBS_EVERY == 0 or step == steps - 1):
                row = {"epoch": epoch + 1, "step": global_step,
                       "probs": [[round(v, 5) for v in p.tolist()] for p in net.probs()]}
                probs_log.append(row)
                append_jsonl(out / PROBS, row)
            bar.update(1)
            bar.set_postfix(loss=f"{sums['loss'] / max(1, sums['n']):.3f}")
        bar.close()

        val_acc, val_loss = _evaluate(net, splits.val, device)
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
        if main:
            history.append(row)
            append_jsonl(out / METRICS, row)
            write_csv(out / METRICS_CSV, history)
            tb.log(row, epoch + 1)
            _save_checkpoint(ckpt, epoch + 1, net, opt_w, opt_a, ctx, cfg)
            if cfg.progress:
                print(f"epoch {epoch + 1}/{cfg.epochs} [{row['phase']}]: train loss {row['train_loss']:.4f}, "
                      f"val acc (argmax child) {val_acc:.4f}, E[lat] {row['exp_latency_ms']:.3f} ms, "
                      f"argmax child {row['derived_latency_ms']:.3f} ms ({row['seconds']:.1f} s)")
        D.barrier()
        if cfg.stop_after is not None and epoch + 1 >= cfg.stop_after and epoch + 1 < cfg.epochs:
            if main:
                print(f"stopping after epoch {epoch + 1} as asked; continue with resume")
            break

    summary = _finish(net, cfg, lat, band, out if main else None, history, probs_log)
    summary["epochs_done"] = history[-1]["epoch"] if history else start
    summary["ranks"] = size
    summary["alpha_max_rank_difference"] = D.all_equal(net.arch_parameters())
    summary["gate_trace_rank_difference"] = D.all_equal([torch.tensor([gate_trace], dtype=torch.float64)])
    if main:
        (out / "derived.json").write_text(json.dumps(summary, indent=2) + "\n")
        tb.close()
    return SearchResult(architecture_of(space, summary["choices"]), summary, history, out, net)


def _finish(net: Supernet, cfg: SearchConfig, lat, band, out: Path | None, history, probs_log) -> dict:
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
        "predicted_latency_ms": round(latency, 5), "latency_source": lat.source, "latency_level": cfg.latency_level,
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
