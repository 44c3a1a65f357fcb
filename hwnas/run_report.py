"""The main job's report: measured latency against the budget and the prediction, the variant to ship, and the
report text (``report.txt``) made from its data (``report.json``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def predictor_target(predictor) -> str:
    """``runtime dtype Nt`` of a predictor (what its milliseconds are for)."""
    return f"{getattr(predictor, 'runtime', '?')} {getattr(predictor, 'dtype', '?')} {getattr(predictor, 'threads', '?')}t"


def verdict(measured_ms: float, budget_ms: float) -> str:
    """A measured latency against the budget: within budget, within +5%, or OVER budget."""
    if measured_ms <= budget_ms:
        return "within budget"
    return "within +5%" if measured_ms <= 1.05 * budget_ms else "OVER budget"


def recommend(rows: list[dict], budget_ms: float, failed: set[str] = frozenset()) -> str:
    """Which measured variant (``quant``) to ship: the fastest one within the budget, from the measurements.

    Variants in ``failed`` (their export self-check failed) are not recommended."""
    usable = [r for r in rows if r["quant"] not in failed]
    if not usable:
        return "no variant passed its export self-check"
    fastest = min(usable, key=lambda r: r["measured_ms"])
    within = [r for r in usable if r["measured_ms"] <= budget_ms]
    if not within:
        return (f"none meets the {budget_ms:.3f} ms budget; the fastest, {fastest['quant']}, measured "
                f"{fastest['measured_ms']:.3f} ms ({fastest['measured_ms'] / budget_ms - 1:+.0%})")
    best = min(within, key=lambda r: r["measured_ms"])
    others = ", ".join(f"{r['quant']} {r['measured_ms'] / best['measured_ms']:.2f}x" for r in usable if r is not best)
    return f"{best['quant']} ({best['measured_ms']:.3f} ms, the fastest within budget" + \
        (f"; others: {others} its time)" if others else ")")


def measured_text(row: dict) -> str:
    """A measured row's ms: the fastest round and the rounds' median (rows written before the rounds were kept
    give their median and spread)."""
    if "median_ms" in row:
        return f"{row['measured_ms']:.3f} (median {row['median_ms']:.3f})"
    return f"{row['measured_ms']:.3f} ± {row['spread_ms']:.3f}"


def latency_table(rows: list[dict], budget_ms: float | None) -> str:
    """Measured vs predicted vs budget, one line per model file."""
    lines = [f"{'model':34s} {'runtime':12s} {'measured ms':>22s} {'predicted ms':>13s} {'budget ms':>10s}  verdict"]
    for r in rows:
        measured = measured_text(r)
        predicted = "-" if r.get("predicted_ms") is None else f"{r['predicted_ms']:.3f}"
        budget = "-" if budget_ms is None else f"{budget_ms:.3f}"
        judged = "-" if budget_ms is None else verdict(r["measured_ms"], budget_ms)
        lines.append(f"{Path(r['file']).name:34s} {r['runtime']:12s} {measured:>22s} {predicted:>13s} "
                     f"{budget:>10s}  {judged}")
    return "\n".join(lines)


@dataclass
class RunReport:
    data: dict
    text: str


def derivation(summary: dict) -> str:
    """How the search chose its child, for the report."""
    how = summary.get("derivation")
    if how == "evolution":
        return (f"evolution: {summary['derive_children_scored']} children of the band scored by the supernet, the "
                f"winner's supernet accuracy {summary['derive_supernet_acc']:.2%}")
    if how == "short":
        return (f"short training: {summary['derive_children_scored']} candidates of the band trained stand-alone "
                f"for a few epochs, the winner's {summary['derive_score']:.2%} on the architecture split")
    if how not in (None, "argmax"):
        return (f"{how}: evolution over {summary['derive_children_scored']} children of the band scored by the "
                f"zero-cost proxy {how}, the winner's {summary['derive_score']:.4g} {summary['derive_score_unit']}")
    return "argmax: the most probable child of the band"


def starts_note(r: dict) -> str:
    """', from scratch' / ', from the supernet's weights'; with train.init = "best" both accuracies and which was
    kept (chosen on the same validation images, so the kept one reads slightly high)."""
    starts = r.get("train_starts") or {}
    names = {"scratch": "from scratch", "supernet": "from the supernet's weights"}
    if not starts:
        return ""
    tried = [k for k in names if k in starts]
    if len(tried) == 1:
        return f", {names[tried[0]]}"
    other = next(k for k in tried if k != starts["kept"])
    return (f", {names[starts['kept']]}: kept over {names[other]} ({starts[other]:.2%}) on these images, so it "
            "reads slightly high")

def format_report(r: dict) -> str:
    """The report's text from its data (``report.json``): the header names the device of the latency table
    used (and this machine when it is another one)."""
    m = {row["quant"]: row for row in r["measured"]}
    budget = r["budget_ms"]
    measured = ", ".join(f"{q} {measured_text(row)} ms = "
                         f"{row['measured_ms'] / budget:.2f}x budget ({verdict(row['measured_ms'], budget)})"
                         for q, row in m.items())
    failed = {f["quant"] for f in r["export"] if not f["passed"]}
    agreement = ", ".join(f"{f['quant']} {f['agreement']:.1%}" for f in r["export"]
                          if f["format"] == "tflite" and f["quant"] != "fp32" and f["agreement"] is not None)
    times = ", ".join(f"{k} {v:.0f} s" for k, v in r["seconds"].items())
    lines = [
        f"hwnas main job: {r['space']} on {r['dataset']}; latency on {r['device']} "
        f"({r['runtime']} {r['dtype']}, {r['threads']} thread)"
        + (f", measured on {r['machine']}" if r.get("machine") not in (None, r["device"]) else ""),
        f"  budget          {budget:.3f} ms ({r['budget_note']})",
        f"  architecture    {' '.join(r['choices'])}"
        + (f", stage widths {', '.join(f'{w:g}' for w in r['stage_widths'])}" if r.get("stage_widths") else ""),
        f"  table           {r['predictor']} ({r['predictor_chosen']})" if r.get("predictor_chosen") else None,
        f"  predicted       {r['predicted_ms']:.3f} ms ({r['predictor']}"
        + (f" x {r['latency_level']:g}, the session level measured before the search)"
           if r.get("latency_level", 1.0) != 1.0 else ")"),
        f"  derivation      {derivation(r.get('search_summary') or {})}",
        f"  measured        {measured}",
        f"  recommended     {recommend(r['measured'], budget, failed) if r['measured'] else 'nothing measured'}",
        f"  accuracy        {r['val_acc']:.2%} top-1 on {r['n_val']} validation images (PyTorch, "
        f"{r['train_epochs']} epochs{starts_note(r)})"
        + (f"; quantized top-1 agreement with PyTorch: {agreement}" if agreement else ""),
        f"  FLOPs / params  {r['mflops']:.2f} M multiply-adds, {r['mparams']:.3f} M parameters",
        f"  files           {r['run_dir']}/: search/arch.json, train/weights.safetensors, "
        f"export/{{{', '.join(Path(f['path']).name for f in r['export'])}}}, report.json",
        f"  time            {r['total_seconds']:.0f} s ({times})",
    ]
    return "\n".join(line for line in lines if line is not None)
