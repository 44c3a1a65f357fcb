"""Derive the child by short stand-alone training (``SearchConfig.derive = "short"``, issue 20).

On run F's 0.5 ms models the supernet's accuracy does not rank children by their stand-alone accuracy
(in-band Kendall tau -0.28 to -0.05 whatever the weight sampling), zero-cost counts rank them weakly (+0.3),
and two epochs of stand-alone training rank them well (docs/search.md). So after the supernet search:

1. candidates inside the band: the most probable child of the band (the argmax derivation's), then distinct
   children drawn from the search's distribution mixed half and half with the uniform (the evolution's prior)
   until there are ``derive_short_children``;
2. each is trained from scratch for ``derive_short_epochs`` epochs on the weight split (SGD, lr 0.1 cosine,
   weight decay 5e-4, label smoothing 0.1, batch 128: the budgets benchmark's recipe, shortened) and scored on
   the architecture split (images no weight step saw, without augmentation; the validation images are never
   used);
3. the most accurate wins (ties: the earlier candidate, so the argmax child first).

Each training has its own folder ``OUT/short/NN`` (resumed after a kill) and each score is appended to
``OUT/derive.jsonl`` (``which``: ``short``) as soon as it is made, so a rerun trains only what is missing.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from hwnas.children import Child, CostTable, child_arch
from hwnas.data import Splits
from hwnas.search.band import BandDecoder, sample_children_in_band
from hwnas.search.derive import LOG, Derived, ScoredLog, prior_of

SCORER = "short"
RECIPE = {"batch_size": 128, "lr": 0.1, "weight_decay": 5e-4, "label_smoothing": 0.1}
SEED_OFFSET = 1000  # candidates train with seed + this


def candidates_in_band(net, table: CostTable, band: BandDecoder, count: int, seed: int) -> list[Child]:
    """The most probable child of the band, then distinct children of the band from the mixed prior."""
    import torch

    op_p, width_p = prior_of(net, table)
    if net is None:  # no supernet: the uniform distribution
        op_lp, width_lp = [np.log(p) for p in op_p], [np.log(p) for p in width_p]
    else:
        op_lp = [torch.log_softmax(a.detach().double().cpu(), 0).numpy() for a in net.alpha]
        width_lp = [torch.log_softmax(t.detach().double().cpu(), 0).numpy() for t in net.theta]
    first = band.decode(op_lp, width_lp).child
    drawn = sample_children_in_band(table, band.low, band.high, count, [seed, 3], op_probs=op_p,
                                    width_probs=width_p)
    return ([first] + [c for c in drawn if c != first])[:count]


def short_training_child(cfg, net, table: CostTable, band: BandDecoder, weight_split, arch_split,
                         out: Path, images: str = "plain") -> Derived:
    """The candidate of the band most accurate on ``arch_split`` after a short training (module docstring);
    ``images`` says whether ``arch_split`` is plain or augmented (kept in the log's settings)."""
    from hwnas.progress import progress_bar
    from hwnas.train import TrainConfig, evaluate, train_model

    t0 = time.time()
    candidates = candidates_in_band(net, table, band, cfg.derive_short_children, cfg.seed)
    settings = {"low": round(band.low, 6), "high": round(band.high, 6), "children": cfg.derive_short_children,
                "epochs": cfg.derive_short_epochs, "seed": cfg.seed, "scorer": SCORER, "images": images, **RECIPE}
    book = ScoredLog(Path(out) / LOG, settings)
    splits = Splits(train=weight_split, val=arch_split, num_classes=table.space.params["num_classes"],
                    name="weight / architecture split")
    config = TrainConfig(epochs=cfg.derive_short_epochs, seed=cfg.seed + SEED_OFFSET, **RECIPE)

    def score(child: Child) -> float:
        folder = Path(out) / "short" / f"{candidates.index(child):02d}"
        res = train_model(child_arch(table.space, child), splits, config=config, out_dir=folder, resume=True,
                          progress=False)
        return evaluate(res.model, arch_split)[0]  # also when the training was finished before (its log may differ)

    bar = progress_bar(total=len(candidates), desc=f"derive (short training, {cfg.derive_short_epochs} epochs)",
                       unit="child", enabled=cfg.progress, leave=False)
    scores = {}
    for child in candidates:
        scores[child] = book.score(child, SCORER, score, table)
        bar.update(1)
        bar.set_postfix(best=f"{max(scores.values()):.4f}")
    bar.close()
    winner = max(candidates, key=lambda c: (scores[c], -candidates.index(c)))
    found = Derived(winner, table.cost(winner), scores[winner], len(candidates), 0, time.time() - t0, book.path,
                    SCORER)
    if cfg.progress:
        print(f"derived by short training: {found.scored} candidates of the band trained {cfg.derive_short_epochs} "
              f"epochs each, the best {found.score:.4f} on {len(arch_split)} architecture-split images "
              f"({found.seconds:.0f} s, {found.log})")
    return found
