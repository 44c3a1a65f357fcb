"""Paired comparison of two groups of models scored on the same test images, from their saved per-image
correctness (``test_correct.npy``, written by ``benchmarks/cifar10_budgets.py`` for every trained model).

Useful while a long benchmark run is still training: compare the models finished so far without waiting for
its report. Prints each model's accuracy, the difference of the groups' mean accuracy with its 95% bootstrap
interval over the images and two-sided p (:func:`hwnas.paired.paired_bootstrap`), and McNemar on the first model
of each group::

    python benchmarks/paired_compare.py --a 'runs/cifar10_f/models/proxy-flops-0.5ms-seed*' \\
        --b 'runs/cifar10_f/models/mbv2-w1.125*'
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file from anywhere
    sys.path.insert(0, str(ROOT))

from hwnas.errors import HwnasError, run_script  # noqa: E402
from hwnas.paired import mcnemar, paired_bootstrap  # noqa: E402


def load_group(pattern: str) -> dict[str, np.ndarray]:
    """{model folder name: per-image correctness} for every model folder matching ``pattern`` that holds a
    ``test_correct.npy`` (a folder still training has none and is skipped)."""
    found = {}
    for folder in sorted(glob.glob(pattern)):
        path = Path(folder) / "test_correct.npy"
        if path.is_file():
            try:
                right = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise HwnasError(f"{path}: not a saved array of per-image correctness ({exc})") from None
            if right.ndim != 1:
                raise HwnasError(f"{path}: expected one value per test image, got shape {right.shape}")
            found[Path(folder).name] = right.astype(bool)
    if not found:
        raise HwnasError(f"no scored model (a folder with test_correct.npy) matches {pattern!r}")
    return found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", required=True, nargs="+", help="globs of model folders, group A (quote them)")
    p.add_argument("--b", required=True, nargs="+", help="globs of model folders, group B (quote them)")
    p.add_argument("--resamples", type=int, default=10_000)
    args = p.parse_args(argv)
    a = {k: v for pattern in args.a for k, v in load_group(pattern).items()}
    b = {k: v for pattern in args.b for k, v in load_group(pattern).items()}
    for what, group in (("A", a), ("B", b)):
        for name, right in group.items():
            print(f"{what}: {name}: {right.mean():.2%} of {right.size} test images")
    res = paired_bootstrap(list(a.values()), list(b.values()), resamples=args.resamples)
    only_a, only_b, p_mc = mcnemar(next(iter(a.values())), next(iter(b.values())))
    print(f"A - B: {100 * res.diff:+.2f} points, 95% interval [{100 * res.low:+.2f}, {100 * res.high:+.2f}], "
          f"p {res.p:.4f} (paired bootstrap over {res.images} images, {len(a)} vs {len(b)} models); McNemar on the "
          f"first of each: {only_a} images only A, {only_b} only B, p {p_mc:.4f}")
    return 0


if __name__ == "__main__":
    run_script(main, "paired_compare: error")
