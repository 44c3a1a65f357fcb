"""Does the supernet score a child by how much alpha favoured it? (issue 20; docs/search.md, run F's ranking)

For every child of a ``supernet_ranking.py`` truth file, its log-probability under a search's final
architecture distribution (the named probabilities of the search folder's ``derived.json``: ``stage S width``
and ``position P``), against its supernet accuracy (``scores.jsonl`` at one length) and its stand-alone test accuracy:
Kendall tau and Spearman rho of each pair. MobileNetV2 rows (not children) are left out.

    python benchmarks/alpha_vs_supernet.py --search runs/supernet_ranking_f/supernet-3x \\
        --truth benchmarks/supernet_ranking_run_f.json --scores benchmarks/supernet_ranking_run_f_scores.jsonl --length 3
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hwnas.errors import HwnasError, run_script  # noqa: E402


def main(argv=None) -> int:
    from scipy.stats import kendalltau, spearmanr

    from hwnas.jsonfile import read_json, read_jsonl

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--search", required=True, help="a finished search folder (its derived.json)")
    p.add_argument("--truth", required=True, help="the ranking benchmark's truth file (JSON list)")
    p.add_argument("--scores", required=True, help="the ranking benchmark's scores.jsonl")
    p.add_argument("--length", type=int, required=True, help="the supernet length whose scores to use")
    args = p.parse_args(argv)
    probs = read_json(Path(args.search) / "derived.json", "search result").get("probs")
    if not probs:
        raise HwnasError(f"{Path(args.search) / 'derived.json'}: no final probabilities (an unfinished search?)")
    scores = {r["name"]: r["supernet_acc"] for r in read_jsonl(args.scores, "a score") if r["length"] == args.length}
    log_p, sup, alone = [], [], []
    for row in read_json(args.truth, "ground-truth file"):
        if "width_mult" in row:
            continue
        if row["name"] not in scores:
            raise HwnasError(f"{args.scores}: no {args.length}x score for {row['name']!r}")
        try:
            widths = sum(math.log(probs[f"stage {s} width"][f"w{w:g}"]) for s, w in enumerate(row["stage_widths"]))
            blocks = sum(math.log(probs[f"position {i}"][c]) for i, c in enumerate(row["choices"]))
        except KeyError as exc:
            raise HwnasError(f"{args.truth}: model {row['name']!r}: {exc} is not a choice of the search in "
                             f"{args.search}") from None
        log_p.append(widths + blocks)
        sup.append(scores[row["name"]])
        alone.append(row["test_acc"])
    for label, other in (("supernet accuracy", sup), ("stand-alone test accuracy", alone)):
        tau, p_tau = kendalltau(log_p, other)
        print(f"log-probability under alpha vs {label} ({len(log_p)} children): Kendall tau {tau:+.2f} "
              f"(p {p_tau:.4f}), Spearman rho {spearmanr(log_p, other)[0]:+.2f}")
    return 0


if __name__ == "__main__":
    run_script(main, "alpha_vs_supernet: error")
