"""Derive the child by a score of children: evolution inside the latency band.

``evolve_in_band(net, table, low, high, score, rescore, log)`` searches children of a trained
weight-entangled supernet (``net=None``: of the space of ``table``, uniform prior) whose predicted latency
(``table``) lies in ``[low, high]`` ms:

1. a first population drawn from the prior (the search's architecture distribution, softmax of ``alpha`` and
   ``theta``, mixed with the uniform distribution so that every option stays possible) inside the band;
2. generations of children made from the best ones so far: a crossover of two parents (each decision from
   one or the other) or a copy of one, then one or two decisions redrawn from the prior; only new children
   inside the band are kept;
3. until ``children`` distinct children are scored; the ``rescore`` best are scored again on more images and
   the best of those wins (``rescore=None``: the best score wins).

``score(child)`` / ``rescore(child)`` return the supernet accuracy of a child (see :func:`supernet_scorer`:
BatchNorm statistics re-estimated for that child, then accuracy on held-out images), or a zero-cost proxy
(:mod:`hwnas.search.proxies`; :func:`proxy_child` needs no supernet at all). Every scored child is appended to
the log (JSON lines: choices, stage widths, predicted ms, score, which scoring) as soon as it is scored. All
random choices come from one generator seeded by ``seed`` and the scores are deterministic, so a rerun after
an interruption replays the same children and takes the logged scores instead of scoring them again (a last
line cut by a kill is dropped). Only children inside the band are returned.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from hwnas.errors import HwnasError
from hwnas.jsonfile import read_jsonl
from hwnas.search.band import sample_children_in_band
from hwnas.children import Child, CostTable, child_arch

LOG = "derive.jsonl"
PRIOR_MIX = 0.5  # weight of the architecture distribution in the sampling prior (the rest: uniform)


@dataclass
class Derived:
    child: Child
    latency_ms: float
    score: float  # the winner's: supernet accuracy on the re-scoring images, or its proxy
    scored: int  # distinct children scored (supernet: on the small image set)
    rescored: int
    seconds: float
    log: Path | None
    scorer: str = "supernet"  # "supernet" or a proxy of hwnas.search.proxies

    @property
    def supernet_acc(self) -> float:
        return self.score


def supernet_scorer(net, calib: torch.utils.data.Dataset, held_out: torch.utils.data.Dataset,
                    calib_batches: int, batch_size: int = 64, seed: int = 0) -> Callable[[Child], float]:
    """``score(child)``: accuracy on ``held_out`` of the supernet running ``child``, after re-estimating its
    BatchNorm statistics on ``calib_batches`` batches of ``calib`` (the same batches for every child); the
    supernet's own BatchNorm statistics are restored after every child."""
    from torch.utils.data import DataLoader

    from hwnas.supernet.recalibrate import recalibrate_bn
    from hwnas.train import evaluate

    state = np.random.get_state()  # the calibration batches (augmented: numpy draws) fixed by ``seed`` alone,
    np.random.seed(seed)  # so a resumed derivation scores new children as the interrupted one would have
    try:
        batches = []
        for x, _ in DataLoader(calib, batch_size=batch_size, shuffle=True,
                               generator=torch.Generator().manual_seed(seed)):
            batches.append(x)
            if len(batches) >= calib_batches:
                break
    finally:
        np.random.set_state(state)

    def score(child: Child) -> float:
        saved = {k: v.clone() for k, v in net.state_dict().items() if "running_" in k or "num_batches" in k}
        try:
            with torch.no_grad():
                net.set_child(child)
                recalibrate_bn(net, batches, max_batches=len(batches))
                acc, _ = evaluate(net, held_out)
        finally:
            net.load_state_dict(saved, strict=False)
        net.set_child(None)
        net.train()
        return acc

    return score


def prior_of(net, table: CostTable) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(per-position, per-stage) sampling probabilities: the supernet's distribution mixed with the uniform
    (``net=None``: the uniform distribution)."""
    if net is None:
        return ([np.full(len(n), 1 / len(n)) for n in table.names],
                [np.full(table.num_widths, 1 / table.num_widths) for _ in range(table.num_stages)])

    def mix(logits) -> np.ndarray:
        p = torch.softmax(logits.detach().double().cpu(), 0).numpy()
        p = PRIOR_MIX * p + (1 - PRIOR_MIX) / len(p)
        return p / p.sum()

    return [mix(a) for a in net.alpha], [mix(t) for t in net.theta]


class ScoredLog:
    """The scored-children log: earlier scores by (child, which) and appends that survive a kill
    (``path=None``: kept in memory only)."""

    def __init__(self, path: Path | None, settings: dict):
        self.path = path
        records = []
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            records = read_jsonl(path, "a scored child")
            if records and records[0].get("settings") != settings:
                path.replace(path.with_name(path.name + ".old"))  # other settings: their scores do not apply
                records = []
        self.scores = {(tuple(r["widths"]), tuple(r["ops"]), r["which"]): r["score"] for r in records if "which" in r}
        if not records:
            self._append({"settings": settings})

    def _append(self, record: dict) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def score(self, child: Child, which: str, scorer, table: CostTable) -> float:
        key = (child.widths, child.ops, which)
        if key not in self.scores:
            acc = float(scorer(child))
            arch = child_arch(table.space, child)
            self._append({"which": which, "widths": list(child.widths), "ops": list(child.ops),
                          "choices": list(arch.choices), "stage_widths": list(arch.space.stage_widths),
                          "predicted_ms": round(table.cost(child), 5), "score": acc})
            self.scores[key] = acc
        return self.scores[key]


def evolve_in_band(net, table: CostTable, low: float, high: float, score: Callable[[Child], float],
                   rescore: Callable[[Child], float] | None, log: str | Path | None, children: int = 500,
                   population: int = 50, parents: int = 10, top: int = 5, seed: int = 0, progress: bool = False,
                   scorer: str = "supernet", images: str | None = None) -> Derived:
    """The best child inside ``[low, high]`` ms by ``score`` (see the module docstring); ``scorer`` names the
    score (``"supernet"``: the log's scores are "small" and "rescore"; otherwise the proxy's name); ``images``
    says which images the scores come from (kept in the log's settings: scores of other images do not resume)."""
    if children < 1 or population < 1 or parents < 1 or top < 1:
        raise HwnasError(f"evolution: children, population, parents and top must be positive, got "
                         f"{children}, {population}, {parents}, {top}")
    t0 = time.time()
    op_p, width_p = prior_of(net, table)
    settings = {"low": round(low, 6), "high": round(high, 6), "children": children, "population": population,
                "parents": parents, "top": top, "seed": seed, "scorer": scorer, "prior": net is not None}
    if images is not None:
        settings["images"] = images
    book = ScoredLog(None if log is None else Path(log), settings)
    which = "small" if scorer == "supernet" else scorer
    rng = np.random.default_rng(seed)
    n_stages = table.num_stages
    sizes = [table.num_widths] * n_stages + [len(p) for p in op_p]
    probs = width_p + op_p

    def in_band(child: Child) -> bool:
        return low <= table.cost(child) <= high

    def genes(child: Child) -> list[int]:
        return list(child.widths) + list(child.ops)

    def make(values) -> Child:
        return Child(tuple(int(v) for v in values[:n_stages]), tuple(int(v) for v in values[n_stages:]))

    scores: dict[Child, float] = {}
    from hwnas.progress import progress_bar

    bar = progress_bar(total=children, desc=f"derive ({scorer})", unit="child", enabled=progress, leave=False)

    def run(batch: list[Child]) -> None:
        for child in batch:
            scores[child] = book.score(child, which, score, table)
            bar.update(1)

    first = sample_children_in_band(table, low, high, min(population, children), [seed, 1],
                                    op_probs=op_p, width_probs=width_p)
    if not first:
        raise HwnasError(f"no child predicted in [{low:.4f}, {high:.4f}] ms was found by sampling; widen the band")
    run(first)
    generation = 1
    while len(scores) < children:
        best = sorted(scores, key=lambda c: -scores[c])[:parents]
        batch: list[Child] = []
        want = min(population, children - len(scores))
        for _ in range(want * 50):
            if len(batch) == want:
                break
            a = genes(best[rng.integers(len(best))])
            if rng.random() < 0.5:
                b = genes(best[rng.integers(len(best))])
                a = [x if rng.random() < 0.5 else y for x, y in zip(a, b)]
            for d in rng.choice(len(sizes), size=int(rng.integers(1, 3)), replace=False):
                a[d] = int(rng.choice(sizes[d], p=probs[d]))
            child = make(a)
            if child not in scores and child not in batch and in_band(child):
                batch.append(child)
        if len(batch) < want:  # the neighbourhood is exhausted: fresh children from the prior
            fresh = sample_children_in_band(table, low, high, want + len(scores), [seed, 2, generation],
                                            max_draws=200_000, op_probs=op_p, width_probs=width_p)
            batch += [c for c in fresh if c not in scores and c not in batch][:want - len(batch)]
        if not batch:
            break  # every child of the band that sampling finds is scored
        run(batch)
        generation += 1
    bar.close()
    finalists = sorted(scores, key=lambda c: -scores[c])[:top]
    final = {c: book.score(c, "rescore", rescore, table) for c in finalists} if rescore else {}
    winner = max(finalists, key=lambda c: (final.get(c, 0.0), scores[c]))
    latency = table.cost(winner)
    assert low <= latency <= high, "derivation returned a child outside the band"
    return Derived(winner, latency, final.get(winner, scores[winner]), len(scores), len(final), time.time() - t0,
                   book.path, scorer)


def proxy_child(table: CostTable, low: float, high: float, proxy: str = "flops", seed: int = 0,
                children: int = 500, log: str | Path | None = None, progress: bool = False) -> Derived:
    """The child of ``table``'s space with the highest zero-cost ``proxy`` (:mod:`hwnas.search.proxies`) among
    ``children`` children predicted in ``[low, high]`` ms, found by :func:`evolve_in_band` from the uniform prior;
    no supernet, no images. ``log``: the scored-children log (None: none)."""
    from hwnas.search.proxies import proxy_scorer

    return evolve_in_band(None, table, low, high, proxy_scorer(table.space, proxy, seed), None, log,
                          children=children, population=min(50, children), seed=seed, progress=progress,
                          scorer=proxy)


def derive_after_search(cfg, net, table: CostTable, band, weight_split, arch_split, out: Path,
                        images: str = "plain") -> Derived:
    """The search's derivation by supernet accuracy (``cfg.derive == "evolution"``): BatchNorm re-estimated on
    ``cfg.derive_calib_batches`` batches of the weight split, children scored on ``cfg.derive_images`` images of
    the architecture split (images no weight step saw; ``images``: plain or augmented), the finalists on the
    whole architecture split; or by a zero-cost proxy (``cfg.derive`` one of :data:`hwnas.search.proxies.PROXIES`:
    the same evolution with the supernet's distribution as prior, no images). The scored children go to
    ``OUT/derive.jsonl``."""
    from torch.utils.data import Subset

    from hwnas.search.proxies import PROXIES, UNITS, proxy_scorer

    if cfg.derive in PROXIES:
        found = evolve_in_band(net, table, band.low, band.high, proxy_scorer(table.space, cfg.derive, cfg.seed),
                               None, out / LOG, children=cfg.derive_children, population=min(50, cfg.derive_children),
                               seed=cfg.seed, progress=cfg.progress, scorer=cfg.derive)
        if cfg.progress:
            print(f"derived by {cfg.derive}: {found.scored} children of the band scored, the best "
                  f"{found.score:.4g} {UNITS[cfg.derive]} ({found.seconds:.1f} s, {found.log})")
        return found
    small = Subset(arch_split, range(min(cfg.derive_images, len(arch_split))))
    score = supernet_scorer(net, weight_split, small, cfg.derive_calib_batches, cfg.batch_size, cfg.seed)
    rescore = supernet_scorer(net, weight_split, arch_split, cfg.derive_calib_batches, cfg.batch_size, cfg.seed)
    found = evolve_in_band(net, table, band.low, band.high, score, rescore, out / LOG, children=cfg.derive_children,
                           population=min(50, cfg.derive_children), seed=cfg.seed, progress=cfg.progress,
                           images=images)
    if cfg.progress:
        print(f"derived by supernet accuracy: {found.scored} children of the band scored, the best "
              f"{found.rescored} re-scored on {len(arch_split)} images: {found.supernet_acc:.4f} "
              f"({found.seconds:.0f} s, {found.log})")
    return found


def derive_summary(cfg, found: Derived | None) -> dict:
    """The derivation's lines of derived.json (the main job's report names them): ``derive_score`` is the
    winner's supernet accuracy (evolution) or proxy (``derive_score_unit``)."""
    from hwnas.search.proxies import UNITS

    supernet = found is not None and found.scorer == "supernet"
    units = dict(UNITS, short="accuracy after short training")
    return {"derivation": ("evolution" if supernet else found.scorer) if found else "argmax",
            "derive_children_scored": found.scored if found else None,
            "derive_rescored": found.rescored if found else None,
            "derive_supernet_acc": round(found.score, 5) if supernet else None,
            "derive_score": round(found.score, 5) if found else None,
            "derive_score_unit": ("supernet accuracy" if supernet else units[found.scorer]) if found else None,
            "derive_seconds": round(found.seconds, 1) if found else None}
