"""Paired comparisons of classifiers scored on the same test images.

Each model is a boolean vector: which test images it classified correctly. Two models (or two groups of
models, e.g. three training seeds each) are compared on the SAME images, so the image-to-image difficulty
cancels and a one-point gap can be seen with 10,000 images where two independent standard errors could not.

* :func:`paired_bootstrap`: difference of mean accuracy (group A minus group B, each group averaged over its
  models per image), its 95% interval and a two-sided p-value from resampling the images;
* :func:`mcnemar`: the exact (binomial) McNemar test for two single models: only the images on which they
  disagree count.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np

from hwnas.errors import HwnasError


@dataclass(frozen=True)
class Paired:
    diff: float  # mean accuracy of A minus that of B (a fraction: 0.01 is one point)
    low: float  # 95% interval of the difference
    high: float
    p: float  # two-sided
    images: int


def _stack(group, what: str) -> np.ndarray:
    rows = [np.asarray(v, dtype=bool) for v in group]
    if not rows:
        raise HwnasError(f"paired comparison: group {what} has no model")
    if len({r.shape for r in rows}) != 1 or rows[0].ndim != 1:
        raise HwnasError(f"paired comparison: the models of group {what} were not scored on the same images")
    return np.stack(rows).astype(np.float64)


def paired_bootstrap(group_a, group_b, resamples: int = 10_000, seed: int = 0) -> Paired:
    """Mean accuracy of the models of ``group_a`` minus that of ``group_b`` (lists of per-image correctness
    vectors on the same images), with a bootstrap over the images: 95% percentile interval and two-sided
    p = 2 x the share of resampled differences on the other side of zero (at least 1 / resamples)."""
    a, b = _stack(group_a, "A").mean(0), _stack(group_b, "B").mean(0)
    if a.shape != b.shape:
        raise HwnasError(f"paired comparison: {a.size} images for A, {b.size} for B; score them on the same images")
    per_image = a - b
    n = per_image.size
    rng = np.random.default_rng(seed)
    diffs = np.empty(resamples)
    for start in range(0, resamples, 500):  # in blocks: 500 x n indices at a time
        k = min(500, resamples - start)
        diffs[start:start + k] = per_image[rng.integers(0, n, (k, n))].mean(1)
    observed = float(per_image.mean())
    below, above = np.mean(diffs <= 0), np.mean(diffs >= 0)
    p = min(1.0, max(2 * min(below, above), 1 / resamples))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return Paired(observed, float(low), float(high), float(p), n)


def mcnemar(a, b) -> tuple[int, int, float]:
    """(images only A got right, images only B got right, exact two-sided p) for two single models."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise HwnasError(f"McNemar: {a.size} images for A, {b.size} for B; score them on the same images")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(b & ~a))
    n = only_a + only_b
    if n == 0:
        return 0, 0, 1.0
    tail = sum(comb(n, i) for i in range(0, min(only_a, only_b) + 1)) / 2 ** n
    return only_a, only_b, min(1.0, 2 * tail)
