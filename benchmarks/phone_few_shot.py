"""Few-shot predictors for a device left out: 5/10/20 measured architectures + the other devices' tables.

Leave-one-device-out over the device columns of ``fbnet_cifar100_latency.csv``,
drift-aware: the samples are drawn from arch_id < ``--test-from`` and every
predictor is tested on arch_id ``--test-from`` .. ``--test-from`` + 999. The
source tables for the device left out are the other devices' ``whole_model``
fits on their own rows with arch_id < ``--test-from`` (settings of their
shipped files); nothing of the device left out enters them. Compared on the
same test rows:

* ``few_shot``: :func:`hwnas.predictors.few_shot.adapt` (what ``hwnas phones adapt`` runs) on the samples
  in arch_id order (the order the campaign measured them), once per setting of its six constants in
  ``--settings`` (``TAU:DEVIATION_COST:PER_COEFFICIENT:CRITERION:RECENCY:STAGE_PRIOR``; the trials are
  fitted once per draw and criterion, and weighed, rescaled and levelled per setting). The figures reported for a device
  are those of the setting that does best on the OTHER devices (sum over them of the margins to the
  issue's targets), so no constant is chosen on the device it is judged on; the setting best over all
  devices is the one a new device gets (the module's defaults);
* ``nnls``: the 20-line baseline, a non-negative least-squares mix of the source
  tables' predictions fitted to the samples (no intercept);
* ``full``: the device's shipped predictor (``predictors/phones/<device>.json``,
  fitted on all 4,000 rows, so its test rows are training rows for it).

    PYTHONPATH=. python benchmarks/phone_few_shot.py ../shared/phones/fbnet_cifar100_latency.csv \\
        --out docs/phones/few_shot.json --table docs/phones/few_shot.md --plot docs/phones/few_shot.png

Resumable: ``--out`` keeps every finished (device, samples, draw) and a rerun skips them.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from scipy.optimize import nnls
from threadpoolctl import threadpool_limits

from hwnas.errors import HwnasError, run_script
from hwnas.predictors.common import write_json
from hwnas.phones import device_name, read_phone_csv
from hwnas.plots import pyplot, save_figure
from hwnas.predictors import load_predictor
from hwnas.predictors.few_shot import CRITERIA, combine, fit_trials
from hwnas.predictors.whole_model import fit_whole_model, metrics
from hwnas.progress import progress_bar
from hwnas.spaces import get_space

EXACT = {"pixel3", "raspi4"}
DRAW_FIELDS = ("family", "spearman", "within_10", "within_5")  # what is kept of each few-shot draw


def source_tables(space, table, train, ship: Path) -> dict:
    """Every device's whole_model fit on the training rows, with the settings of its shipped file."""
    out = {}
    for column, y in table.latency.items():
        name = device_name(column)
        settings = load_predictor(ship / f"{name}.json").meta["settings"]
        out[name] = fit_whole_model(space, [table.choices[i] for i in train], y[train], {"name": name},
                                    settings={**settings, "features": ()})
    return out


def nnls_mix(sources: dict, choices, y, test_choices) -> np.ndarray:
    A = np.stack([p.predict_many_choices(choices) for p in sources.values()], axis=1)
    w = nnls(A, y)[0]
    return np.stack([p.predict_many_choices(test_choices) for p in sources.values()], axis=1) @ w


def parse_settings(text: str) -> list[tuple[float, float, float, str, float | None, float]]:
    """``TAU:DEVIATION_COST:PER_COEFFICIENT:CRITERION:RECENCY:STAGE_PRIOR`` items, comma-separated (RECENCY a
    number > 0 or ``none``, STAGE_PRIOR >= 0); one line naming a bad item."""
    settings = []
    for item in text.split(","):
        parts = item.strip().split(":")
        try:
            if len(parts) != 6 or parts[3] not in CRITERIA:
                raise ValueError
            tau, cost, per_coef = float(parts[0]), float(parts[1]), float(parts[2])
            recency = None if parts[4] == "none" else float(parts[4])
            stage_prior = float(parts[5])
            if tau <= 0 or cost < 0 or per_coef < 0 or (recency is not None and not recency > 0) or \
                    not stage_prior >= 0:
                raise ValueError
        except ValueError:
            raise HwnasError(f"--settings: {item!r} is not TAU:DEVIATION_COST:PER_COEFFICIENT:CRITERION:RECENCY:"
                             f"STAGE_PRIOR (e.g. 0.1:4:2:error:1:0.2, TAU > 0, RECENCY > 0 or none, STAGE_PRIOR >= 0; "
                             f"criteria: {', '.join(CRITERIA)})") from None
        settings.append((tau, cost, per_coef, parts[3], recency, stage_prior))
    return settings


def setting_key(tau: float, cost: float, per_coefficient: float, criterion: str, recency: float | None,
                stage_prior: float) -> str:
    key = f"tau {tau:g}, deviation cost {cost:g}"
    key += f", {per_coefficient:g} samples per coefficient" if per_coefficient else ""
    key += f", criterion {criterion}" if criterion != "error" else ""
    key += f", recency {recency:g}" if recency is not None else ", no recency"
    return key + (f", stage prior {stage_prior:g}" if stage_prior else ", no stage scales")


def summary(results: dict, names: list[str], sizes: list[int], setting: str) -> dict:
    """device -> size -> method -> mean / min Spearman and mean share within +-10% over the draws of one setting."""
    out = {}
    for name in names:
        for n in sizes:
            prefix = f"{name}/{n}/"
            runs = [{"family": r[0], "few_shot": dict(zip(DRAW_FIELDS[1:], r[1:])), **results["samples"][key]}
                    for key, r in results["draws"].get(setting, {}).items() if key.startswith(prefix)]
            if not runs:
                continue
            out.setdefault(name, {})[n] = {
                m: {"spearman": float(np.mean([r[m]["spearman"] for r in runs])),
                    "spearman_min": float(np.min([r[m]["spearman"] for r in runs])),
                    "spearman_se": standard_error([r[m]["spearman"] for r in runs]),
                    "within_10": float(np.mean([r[m]["within_10"] for r in runs])),
                    "within_10_se": standard_error([r[m]["within_10"] for r in runs]), "draws": len(runs)}
                for m in ("few_shot", "nnls")}
            out[name][n]["families"] = [r["family"] for r in runs]
    return out


def standard_error(values: list[float]) -> float:
    """The standard error of a mean over draws (0 for a single draw)."""
    return float(np.std(values, ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def needs(name: str, full: dict) -> tuple[float, float]:
    """The issue's targets: Spearman at 10 samples, share within +-10% at 20 samples."""
    rho = full["spearman"] - 0.03
    return (max(rho, 0.96) if name in EXACT else rho), full["within_10"] - 0.05


def margin(results: dict, summ: dict, name: str) -> float:
    """Sum of the margins to the two targets (negative: short of them)."""
    rho, share = needs(name, results["full"][name])
    by_n = summ.get(name, {})
    return (by_n[10]["few_shot"]["spearman"] - rho if 10 in by_n else 0.0) + \
        (by_n[20]["few_shot"]["within_10"] - share if 20 in by_n else 0.0)


def choose_settings(results: dict, summaries: dict) -> dict:
    """device -> the setting with the largest summed margin over the other devices; "new device": over all."""
    names = list(dict.fromkeys(name for summ in summaries.values() for name in summ))  # the CSV's order
    score = lambda setting, others: sum(margin(results, summaries[setting], o) for o in others)
    out = {name: max(summaries, key=lambda st: score(st, [o for o in names if o != name])) for name in names}
    out["new device"] = max(summaries, key=lambda st: score(st, names))
    return out


def chosen_summary(summaries: dict, chosen: dict) -> dict:
    return {name: summaries[chosen[name]][name] for name in chosen if name != "new device"}


def table_md(results: dict, summ: dict, chosen: dict) -> str:
    lines = ["| device | samples | setting (chosen on the other devices) | few-shot Spearman (min) | few-shot +-10% | "
             "NNLS mix Spearman | NNLS mix +-10% | full-data Spearman | full-data +-10% | family chosen (draws) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, by_n in summ.items():
        full = results["full"][name]
        for n, s in by_n.items():
            fams = s["families"]
            fam = ", ".join(f"{f} {fams.count(f)}" for f in sorted(set(fams)))
            f, b = s["few_shot"], s["nnls"]
            lines.append(f"| {name} | {n} | {chosen[name]} | {f['spearman']:.4f} ({f['spearman_min']:.3f}) | "
                         f"{f['within_10']:.3f} | {b['spearman']:.4f} | {b['within_10']:.3f} | {full['spearman']:.4f} | "
                         f"{full['within_10']:.3f} | {fam} |")
    return "\n".join(lines) + "\n"


def settings_md(results: dict, summaries: dict) -> str:
    """Every setting's figures on the two targets, per device (what the choice above saw)."""
    names = list(next(iter(summaries.values())))
    lines = ["| setting | " + " | ".join(names) + " | summed margin |", "|---|" + "---:|" * (len(names) + 1)]
    for setting, summ in summaries.items():
        cells = [f"{summ[n][10]['few_shot']['spearman']:.4f} / {summ[n][20]['few_shot']['within_10']:.3f}"
                 if 10 in summ.get(n, {}) and 20 in summ.get(n, {}) else "-" for n in names]
        total = sum(margin(results, summ, n) for n in names)
        lines.append(f"| {setting} | " + " | ".join(cells) + f" | {total:+.4f} |")
    return "\n".join(lines) + "\n"


def targets_md(results: dict, summ: dict) -> str:
    """The issue's targets, met or not, per device; in brackets the standard error of the mean over the draws."""
    lines = []
    for name, by_n in summ.items():
        rho_need, share_need = needs(name, results["full"][name])
        if 10 in by_n:
            rho, se = by_n[10]["few_shot"]["spearman"], by_n[10]["few_shot"]["spearman_se"]
            lines.append(f"- {name}, 10 samples: Spearman {rho:.4f} (+-{se:.4f}), needs >= {rho_need:.4f}: "
                         f"{'met' if rho >= rho_need else 'NOT met'}")
        if 20 in by_n:
            share, se = by_n[20]["few_shot"]["within_10"], by_n[20]["few_shot"]["within_10_se"]
            lines.append(f"- {name}, 20 samples: within +-10% {share:.4f} (+-{se:.4f}), needs >= {share_need:.4f}: "
                         f"{'met' if share >= share_need else 'NOT met'}")
    return "\n".join(lines) + "\n"


def plot(path: Path, results: dict, summ: dict) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (name, by_n), color in zip(summ.items(), colors):
        sizes = sorted(by_n)
        for ax, key in zip(axes, ("spearman", "within_10")):
            ax.plot(sizes, [by_n[n]["few_shot"][key] for n in sizes], "o-", color=color, label=name)
            ax.axhline(results["full"][name][key], color=color, ls=":", lw=1)
    for ax, title in zip(axes, ("Spearman (test rows arch_id 3000-3999)", "share within +-10%")):
        ax.set_xlabel("measured architectures of the device left out")
        ax.set_xticks(sorted({n for by_n in summ.values() for n in by_n}))
        ax.set_title(title + "\ndotted: the device's full-data predictor", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("few-shot predictor, leave-one-device-out, mean of the draws")
    save_figure(fig, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv", help="fbnet_cifar100_latency.csv")
    ap.add_argument("--test-from", type=int, default=3000)
    ap.add_argument("--sizes", default="5,10,20")
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--devices", default="", help="comma-separated subset of devices (default: all)")
    ap.add_argument("--settings", default=",".join(f"{t}:{c}:2:error:{r}:{s}" for t in (0.1, 0.2, 0.3)
                                                   for c in (2, 3, 4) for r in ("none", 0.5, 1, 2)
                                                   for s in (0, 0.1, 0.2, 0.3)),
                    help="settings of few_shot's TAU:DEVIATION_COST:PER_COEFFICIENT:CRITERION:RECENCY:STAGE_PRIOR to "
                         "try; each device is judged with the one best on the other devices")
    ap.add_argument("--ship", default="predictors/phones", help="folder of the shipped <device>.json predictors")
    ap.add_argument("--out", default="docs/phones/few_shot.json")
    ap.add_argument("--table", default=None)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args(argv)

    settings = parse_settings(args.settings)  # before the CSV is read
    space = get_space("fbnet-cifar100")
    table = read_phone_csv(args.csv)
    ids = np.asarray(table.arch_ids)
    train = np.flatnonzero(ids < args.test_from)
    test = np.flatnonzero((ids >= args.test_from) & (ids < args.test_from + 1000))
    test_choices = [table.choices[i] for i in test]
    sizes = [int(s) for s in args.sizes.split(",")]
    names = [device_name(c) for c in table.latency]
    devices = [n for n in names if not args.devices or n in args.devices.split(",")]
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results.update(split=f"samples from arch_id < {args.test_from}, test arch_id {args.test_from}-{args.test_from + 999}",
                   test_rows=len(test))
    results.setdefault("samples", {})  # device/samples/draw -> the rows drawn and the NNLS mix's test metrics
    results.setdefault("draws", {})  # setting -> device/samples/draw -> the few-shot predictor's DRAW_FIELDS
    results["draw_fields"] = list(DRAW_FIELDS)
    results.setdefault("full", {})
    with threadpool_limits(1):
        tables = source_tables(space, table, train, Path(args.ship))
        total = len(devices) * len(sizes) * args.draws * len(settings)
        with progress_bar(total=total, desc="few-shot draws", unit="draw") as bar:
            for column, y in table.latency.items():
                name = device_name(column)
                if name not in devices:
                    continue
                full = load_predictor(Path(args.ship) / f"{name}.json")
                results["full"][name] = metrics(y[test], full.predict_many_choices(test_choices))
                sources = {k: v for k, v in tables.items() if k != name}
                for n, d in itertools.product(sizes, range(args.draws)):
                    rows = np.random.default_rng(10_000 * n + d).choice(train, n, replace=False)
                    rows = rows[np.argsort(ids[rows])]  # the order they were measured in
                    choices = [table.choices[i] for i in rows]
                    fitted = {}  # (per_coefficient, criterion) -> the trials, fitted once for every weighing
                    draw = f"{name}/{n}/{d}"
                    if draw not in results["samples"]:  # the same for every setting
                        results["samples"][draw] = {
                            "rows": [int(ids[i]) for i in rows],
                            "nnls": metrics(y[test], nnls_mix(sources, choices, y[rows], test_choices))}
                    for tau, cost, per_coef, crit, recency, stage_prior in settings:
                        done = results["draws"].setdefault(setting_key(tau, cost, per_coef, crit, recency,
                                                                       stage_prior), {})
                        if draw not in done:
                            if (per_coef, crit) not in fitted:
                                fitted[per_coef, crit] = fit_trials(space, sources, choices, y[rows],
                                                                    per_coefficient=per_coef, criterion_kind=crit)
                            pred = combine(fitted[per_coef, crit], {"name": name}, tau=tau, deviation_cost=cost,
                                           recency=recency, stage_prior=stage_prior)
                            few = pred.meta["few_shot"]
                            m = metrics(y[test], pred.predict_many_choices(test_choices))
                            done[draw] = ["+".join([few["base"]] + few["deviations"])] + [
                                round(m[k], 6) for k in DRAW_FIELDS[1:]]
                        bar.update(1)
                    if fitted:
                        write_json(out, results, indent=None)  # once per draw: an interrupted run loses one
    summaries = {setting_key(*st): summary(results, names, sizes, setting_key(*st)) for st in settings}
    chosen = choose_settings(results, summaries)
    summ = chosen_summary(summaries, chosen)
    results["summary"] = {"chosen_setting": chosen, "reported": summ}  # every setting's figures: the table
    write_json(out, results, indent=None)
    text = (table_md(results, summ, chosen) + "\n" + targets_md(results, summ) + "\nEvery setting (Spearman at 10 "
            "samples / share within +-10% at 20 samples):\n\n" + settings_md(results, summaries) +
            f"\nBest over all devices (a new device's setting): {chosen['new device']}\n")
    print(text)
    if args.table:
        Path(args.table).write_text(text)
    if args.plot:
        plot(Path(args.plot), results, summ)
    return 0


if __name__ == "__main__":
    run_script(main, "phone_few_shot: error")
