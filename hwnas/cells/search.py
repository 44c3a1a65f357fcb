"""Cell search: ``hwnas search --space darts-cell`` (modes darts and snas).

The per-step updates are those of the chain search (:mod:`hwnas.search.updates`):
darts is bilevel (weights on one half of the training split, alphas on the other;
first order, or second order with the finite-difference Hessian-vector product),
snas is single level (weights and alphas on the same batch, Gumbel-softmax
temperature annealed geometrically from ``tau_start`` to ``tau_end``).

Resource term (both modes, usually snas): ``eta x E[cost] / max cost`` for
FLOPs, MAC, params, or latency when a predictor covers every cell operator,
where ``E[cost] = sum over cells, edges, ops of p(op) x cost(op)`` and
``max cost`` is the costliest child (so eta is unit-free). Presets:
``mild``/``moderate``/``aggressive`` (:data:`ETA_PRESETS`).

At the end: the supernet's validation accuracy (darts: softmax-weighted sum;
snas: Gumbel samples at the final temperature), the genotype by each rule, and
each child's validation accuracy with the shared weights, no retraining (the
SNAS search-vs-child gap). The run folder, its checkpoint every epoch (resume), the loaders and the
temperature schedule are the engine's (:mod:`hwnas.search.engine`); the logs are ``history.jsonl`` (epochs)
and ``entropy.jsonl`` (edge entropy over steps). A folder with the ``cell_checkpoint.safetensors`` of an earlier
version is refused on resume.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from hwnas.predictors import content_fingerprint
from hwnas.progress import progress_bar

from hwnas.costs import op_cost
from hwnas.errors import HwnasError
from hwnas.cells.derive import RULES, derive, edge_entropy
from hwnas.cells.genotype import Genotype
from hwnas.cells.ops import PRIMITIVES
from hwnas.cells.space import CellSpace
from hwnas.cells.supernet import CellSupernet
from hwnas.search.config import check_common
from hwnas.search.engine import CHECKPOINT, Run, loader, restore_training, temperature

ETA_PRESETS = {"mild": 0.05, "moderate": 0.2, "aggressive": 0.8}
RESOURCES = ("flops", "mac", "params", "latency")


@dataclass
class CellSearchConfig:
    mode: str = "darts"  # darts | snas
    darts_order: int = 1  # 1 or 2
    space_params: dict = field(default_factory=dict)
    dataset: str = "digits"
    epochs: int = 10
    batch_size: int = 64
    max_steps: int | None = None  # steps per epoch
    limit_train: int | None = None
    limit_val: int | None = None
    seed: int = 0
    lr_w: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 3e-4
    lr_alpha: float = 0.02
    alpha_weight_decay: float = 1e-3
    tau_start: float = 1.0
    tau_end: float = 0.03
    resource: str | None = None  # flops | mac | params | latency
    eta: float | str = 0.0  # a number or a preset name
    predictor: str | None = None  # needed for resource='latency'
    out: str | None = None
    resume: bool = False
    progress: bool = True

    @property
    def eta_value(self) -> float:
        return ETA_PRESETS[self.eta] if isinstance(self.eta, str) else float(self.eta)

    def check(self) -> None:
        if self.mode not in RULES:
            raise HwnasError(f"the cell space searches in mode darts or snas, not {self.mode!r}")
        check_common(self)
        if self.resource is not None and self.resource not in RESOURCES:
            raise HwnasError(f"resource must be one of {', '.join(RESOURCES)}, got {self.resource!r}")
        if isinstance(self.eta, str) and self.eta not in ETA_PRESETS:
            raise HwnasError(f"eta preset must be one of {', '.join(ETA_PRESETS)} or a number, got {self.eta!r}")
        if self.eta_value < 0:
            raise HwnasError(f"eta must not be negative, got {self.eta!r}")
        if self.resource == "latency" and not self.predictor:
            raise HwnasError("resource 'latency' needs a predictor file (--predictor)")

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / "search" / f"darts-cell-{self.mode}-s{self.seed}"

    def resume_config(self) -> dict:
        """The settings a resumed run must share (all but where it goes and how it reports)."""
        return {k: v for k, v in asdict(self).items() if k not in ("out", "resume", "progress")}


@dataclass
class CellSearchResult:
    genotype: Genotype  # by the mode's own rule
    genotypes: dict[str, Genotype]  # by each rule
    supernet_acc: float
    supernet_std: float  # over repeated Gumbel samples (snas), 0 for darts
    child_acc: dict[str, float]  # per rule, shared weights, no retraining
    history: list[dict]
    entropy: list[dict]
    out_dir: Path
    supernet: CellSupernet


# -- resource tables ---------------------------------------------------------------------
def cost_tables(space: CellSpace, kind: str, predictor=None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(normal, reduce) tables of shape (edges x primitives), summed over the cells of each type,
    and the fixed cost of stem, preprocessing and head."""
    def cost(op) -> float:
        if op.kind == "zero":
            return 0.0
        if kind == "latency":
            try:
                return float(predictor.predict_op(op))
            except HwnasError as exc:
                raise HwnasError(f"the latency predictor does not cover cell operator {op.key()}: {exc}") from None
        return float(getattr(op_cost(op), kind))

    tables = {False: torch.zeros(space.num_edges, len(PRIMITIVES)), True: torch.zeros(space.num_edges, len(PRIMITIVES))}
    fixed = cost(space.stem()) + sum(cost(op) for op in space.head())
    for layout in space.layouts:
        fixed += sum(cost(op) for op in space.preprocess(layout))
        for e, (_, inp) in enumerate(space.edges):
            for j, name in enumerate(PRIMITIVES):
                tables[layout.reduction][e, j] += cost(space.edge_op(layout, inp, name))
    return tables[False], tables[True], fixed


class Resource:
    """The differentiable resource term and the expected costs for logging."""

    def __init__(self, net: CellSupernet, cfg: CellSearchConfig, predictor=None):
        self.net, self.kind, self.eta = net, cfg.resource, cfg.eta_value
        kinds = ["flops", "mac", "params"] + (["latency"] if predictor is not None else [])
        self.tables = {k: cost_tables(net.space, k, predictor) for k in kinds}

    def expected(self, kind: str) -> torch.Tensor:
        normal, reduce, fixed = self.tables[kind]
        return (self.net.probs(False) * normal).sum() + (self.net.probs(True) * reduce).sum() + fixed

    def maximum(self, kind: str) -> float:
        normal, reduce, fixed = self.tables[kind]
        return float(normal.max(1).values.sum() + reduce.max(1).values.sum() + fixed)

    def __call__(self) -> tuple[torch.Tensor, dict]:
        with torch.no_grad():
            stats = {f"exp_{k}": round(float(self.expected(k)), 4) for k in self.tables}
        loss = 0.0 * sum(a.sum() for a in self.net.arch_parameters())  # zero, but differentiable
        if self.kind and self.eta:
            loss = self.eta * self.expected(self.kind) / self.maximum(self.kind)
        return loss, stats


# -- evaluation -------------------------------------------------------------------------
@torch.no_grad()
def accuracy(net: CellSupernet, dataset, relaxed: bool, generator: torch.Generator | None = None,
             batch_size: int = 256) -> float:
    """Validation accuracy of the supernet (``relaxed``: paths combined as in training, BN in
    eval mode, a fresh Gumbel sample per batch for snas) or of the child pinned by
    :meth:`CellSupernet.set_child`."""
    if relaxed:
        net.eval_relaxed()
    else:
        net.eval()
    correct = n = 0
    for x, y in DataLoader(dataset, batch_size=batch_size):
        if relaxed:
            net.resample("weight", generator)
        correct += int((net(x).argmax(1) == y).sum())
        n += len(y)
    net.train()
    return correct / max(1, n)


def supernet_accuracy(net: CellSupernet, dataset, generator: torch.Generator, repeats: int) -> tuple[float, float]:
    """(mean, std) over ``repeats`` passes of batch 32 (snas: each batch its own Gumbel sample)."""
    accs = torch.tensor([accuracy(net, dataset, True, generator, batch_size=32) for _ in range(repeats)])
    return float(accs.mean()), float(accs.std()) if repeats > 1 else 0.0


def genotypes_of(net: CellSupernet, meta: dict | None = None) -> dict[str, Genotype]:
    space = net.space
    return {rule: Genotype(derive(net.probs(False), space.edges, rule), derive(net.probs(True), space.edges, rule),
                           space.params, dict(meta or {}, rule=rule))
            for rule in RULES}


def entropy_row(net: CellSupernet, step: int, epoch: float) -> dict:
    probs_n, probs_r = net.probs(False).detach(), net.probs(True).detach()
    return {"step": step, "epoch": round(epoch, 4),
            "normal": round(float(edge_entropy(probs_n).mean()), 5),
            "reduce": round(float(edge_entropy(probs_r).mean()), 5)}


# -- the loop ---------------------------------------------------------------------------
def search_cells(cfg: CellSearchConfig, splits=None, predictor=None) -> CellSearchResult:
    """Run a cell search; ``splits`` (hwnas.data.Splits) overrides ``cfg.dataset``; ``predictor``: the loaded
    latency predictor (default: ``cfg.predictor`` loaded here)."""
    from hwnas.data import load_dataset
    from hwnas.search.updates import StepContext, make_step
    cfg.check()
    torch.manual_seed(cfg.seed)
    space = CellSpace(cfg.space_params)
    if splits is None:
        splits = load_dataset(cfg.dataset, space.params["resolution"], seed=cfg.seed,
                              limit_train=cfg.limit_train, limit_val=cfg.limit_val)
    if splits.num_classes != space.params["num_classes"]:
        raise HwnasError(f"dataset {splits.name} has {splits.num_classes} classes, the cell space "
                         f"{space.params['num_classes']}; set num_classes={splits.num_classes}")
    if predictor is None and cfg.predictor:
        from hwnas.predictors import load_predictor
        predictor = load_predictor(cfg.predictor)

    mode_kwargs = {"tau": cfg.tau_start} if cfg.mode == "snas" else {}
    net = CellSupernet(space, cfg.mode, **mode_kwargs)
    resource = Resource(net, cfg, predictor)
    opt_w = torch.optim.SGD(net.weight_parameters(), lr=cfg.lr_w, momentum=cfg.momentum,
                            weight_decay=cfg.weight_decay)
    opt_a = torch.optim.Adam(net.arch_parameters(), lr=cfg.lr_alpha, betas=(0.5, 0.999),
                             weight_decay=cfg.alpha_weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    ctx = StepContext(net=net, model=net, opt_w=opt_w, opt_a=opt_a, generator=generator, resource=resource,
                      sync=lambda grads: None, weight_decay=cfg.weight_decay, darts_order=cfg.darts_order)
    step_fn = make_step(cfg.mode, ctx)

    # darts: weights on one half of the training split, alphas on the other; snas: all of it
    n = len(splits.train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    if cfg.mode == "darts":
        w_data, a_data = Subset(splits.train, order[: n // 2]), Subset(splits.train, order[n // 2:])
    else:
        w_data, a_data = splits.train, None
    steps = max(1, len(w_data) // cfg.batch_size)
    if cfg.max_steps:
        steps = min(steps, cfg.max_steps)
    total = steps * cfg.epochs

    out = cfg.out_dir
    legacy = out / "cell_checkpoint.safetensors"
    if cfg.resume and legacy.exists() and not (out / CHECKPOINT).exists():
        raise HwnasError(f"{legacy}: a cell search checkpoint of an earlier hwnas version, which this one cannot "
                         "resume; start again without --resume or with another --out")
    config = cfg.resume_config()
    run = Run(out, config, list(config), cfg.resume, progress=cfg.progress, metrics="history.jsonl",
              probs="entropy.jsonl", inputs=(content_fingerprint(predictor), cfg.dataset))

    start = run.open(lambda state: restore_training(state, net, opt_w, opt_a))
    if not run.probs_log:
        run.log_probs(entropy_row(net, 0, 0.0))

    for epoch in range(start, cfg.epochs):
        tau = temperature(cfg.tau_start, cfg.tau_end, cfg.epochs, 0, epoch)
        net.set_temperature(tau)
        torch.manual_seed(cfg.seed * 1000 + epoch)  # data order: drawn from the global generator, seeded here
        w_iter = iter(loader(w_data, cfg.batch_size, None, drop_last=True))
        a_iter = iter(loader(a_data, cfg.batch_size, None, drop_last=True)) if a_data else None
        net.train()
        t0, loss_sum, correct, seen, last = time.time(), 0.0, 0, 0, {}
        bar = progress_bar(range(steps), desc=f"{cfg.mode} epoch {epoch + 1}/{cfg.epochs}", enabled=cfg.progress,
                           leave=False)
        for step in bar:
            lr = 0.5 * cfg.lr_w * (1 + math.cos(math.pi * (epoch * steps + step) / total))
            for group in opt_w.param_groups:
                group["lr"] = lr
            train = next(w_iter)
            val = next(a_iter, None) if a_iter else None
            if a_iter is not None and val is None:
                a_iter = iter(loader(a_data, cfg.batch_size, None, drop_last=True))
                val = next(a_iter)
            out_step = step_fn.step(train, val, update_arch=True)
            run.check_finite({"loss": float(out_step["loss"])}, epoch, step)
            loss_sum += float(out_step["loss"]) * out_step["n"]
            correct += out_step["correct"]
            seen += out_step["n"]
            last = {k: v for k, v in out_step.items() if k.startswith("exp_")}
            run.log_probs(entropy_row(net, epoch * steps + step + 1, epoch + (step + 1) / steps))
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", H=f"{run.probs_log[-1]['normal']:.2f}")
        bar.close()
        entropy = run.probs_log[-1]
        row = {"epoch": epoch + 1, "train_loss": round(loss_sum / max(1, seen), 5),
               "train_acc": round(correct / max(1, seen), 5), "tau": round(tau, 5) if cfg.mode == "snas" else None,
               "entropy_normal": entropy["normal"], "entropy_reduce": entropy["reduce"],
               "seconds": round(time.time() - t0, 2), **last}
        line = (f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}, "
                f"edge entropy normal {row['entropy_normal']:.3f} reduce {row['entropy_reduce']:.3f} "
                f"({row['seconds']:.0f} s)")
        run.end_epoch(epoch, row, {"model": net.state_dict(), "opt_w": opt_w.state_dict(),
                                   "opt_a": opt_a.state_dict()}, line)
    run.close()
    return _finish(cfg, net, splits, run.history, run.probs_log, out, generator)


def _finish(cfg, net, splits, history, entropy, out, generator) -> CellSearchResult:
    from hwnas.cells.draw import draw_genotype, plot_entropy

    # darts is deterministic; snas samples, so average several passes
    supernet_acc, supernet_std = supernet_accuracy(net, splits.val, generator, 5 if cfg.mode == "snas" else 1)
    meta = {"mode": cfg.mode, "darts_order": cfg.darts_order if cfg.mode == "darts" else None,
            "epochs": cfg.epochs, "dataset": splits.name, "supernet_val_acc": round(supernet_acc, 5)}
    genotypes = genotypes_of(net, meta)
    child_acc = {}
    for rule, genotype in genotypes.items():
        net.set_child(genotype)
        child_acc[rule] = accuracy(net, splits.val, relaxed=False)
        genotype.meta["child_val_acc_shared_weights"] = round(child_acc[rule], 5)
        genotype.save(out / f"genotype-{rule}-rule.json")
    net.set_child(None)
    genotype = genotypes[cfg.mode]
    genotype.save(out / "genotype.json")
    probs = {"primitives": list(PRIMITIVES), "edges": [list(e) for e in net.space.edges],
             "normal": net.probs(False).detach().round(decimals=4).tolist(),
             "reduce": net.probs(True).detach().round(decimals=4).tolist()}
    (out / "alphas.json").write_text(json.dumps(probs) + "\n")
    gap = {"mode": cfg.mode, "supernet_val_acc": supernet_acc, "supernet_val_acc_std": supernet_std,
           "child_val_acc": child_acc,
           "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress",)}}
    (out / "gap.json").write_text(json.dumps(gap, indent=2) + "\n")
    plot_entropy({cfg.mode: entropy}, out / "entropy.png")
    draw_genotype(genotype, out / "cells.png", title=f"{cfg.mode} (rule {cfg.mode})")
    print(f"supernet val acc {supernet_acc:.4f} (std {supernet_std:.4f}); child (shared weights) val acc: "
          + ", ".join(f"{r} rule {a:.4f}" for r, a in child_acc.items()))
    print(f"genotype: {out / 'genotype.json'}")
    return CellSearchResult(genotype, genotypes, supernet_acc, supernet_std, child_acc, history, entropy, out, net)
