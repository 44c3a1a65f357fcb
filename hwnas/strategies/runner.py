"""Run a sample-based strategy for a budget of evaluations: log, resume, Pareto plot.

Every evaluated architecture is one JSON line of ``<out>/evaluations.jsonl``::

    {"index": 0, "stage_widths": [1.0, 1.5, ...], "choices": [...], "score": 0.91, "accuracy": 0.93,
     "latency_ms": 1.2, "mflops": 3.4, "feasible": true, "rejected": false, "cached": false, "seconds": 2.1}

``stage_widths`` and ``choices`` together name the architecture (a log written
before width search has no ``stage_widths``: its architectures have the
space's own stage widths).

A line is written (and flushed) as soon as its evaluation ends, so an
interrupted run loses at most the evaluation in progress. ``resume`` re-reads
the log (a torn last line is dropped), replays it through the strategy's
``propose``/``observe`` -- every random decision of a strategy comes from its own
seeded generators, so this restores its state -- and continues up to the budget.
A repeated proposal is not evaluated again: its earlier result is logged again
with ``"cached": true`` and counts as an evaluation.

Outputs beside the log: ``config.json`` (checked on resume), ``best.json`` (the
best architecture within the budget), ``summary.json`` and ``pareto.png``
(accuracy vs latency of everything evaluated, coloured by evaluation order, with
the Pareto front drawn as a staircase).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from hwnas.progress import progress_bar

from hwnas.arch import Architecture, architecture_of
from hwnas.errors import HwnasError
from hwnas.jsonfile import read_json, read_jsonl
from hwnas.outputs import check_writable_folder
from hwnas.strategies.base import Strategy
from hwnas.strategies.evaluators import CostModel, Objective
from hwnas.threads import TORCH_THREADS, use_torch_threads

LOG = "evaluations.jsonl"
CONFIG = "config.json"


# -- the log --------------------------------------------------------------------------
def _check_record(record: dict) -> None:
    if not isinstance(record.get("choices"), list) or "score" not in record:
        raise ValueError("missing 'choices' or 'score'")
    if record.get("stage_widths") is not None and not isinstance(record["stage_widths"], list):
        raise ValueError("'stage_widths' must be a list")


def record_arch(space, record: dict) -> Architecture:
    """The architecture a log record names: its stage widths (default: the space's) and choices."""
    widths = record.get("stage_widths")
    if widths is not None and tuple(widths) != space.stage_widths:
        space = space.at_widths(widths)
    return architecture_of(space, record["choices"])


def arch_key(arch: Architecture) -> tuple:
    """What identifies an architecture of the log: (stage widths, choices)."""
    return tuple(arch.space.stage_widths), tuple(arch.choices)


def read_log(path: Path) -> list[dict]:
    """The records of a log; a torn (unterminated, unparsable) last line is dropped and cut from the file."""
    return read_jsonl(path, "an evaluation record", _check_record)


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def replay(strategy: Strategy, records: list[dict]) -> int:
    """Feed logged results through propose/observe; returns how many proposals differed from the log."""
    differed = 0
    for record in records:
        proposed = strategy.propose()
        try:
            logged = record_arch(strategy.space, record)
            strategy.child_of(logged)  # its stage widths must be width choices of the space
        except HwnasError as exc:
            raise HwnasError(f"evaluation log record {record.get('index')}: {exc}") from None
        differed += arch_key(proposed) != arch_key(logged)
        strategy.observe(logged, record["score"])
    return differed


def search_loop(strategy: Strategy, objective: Objective, evaluations: int, out_dir: str | Path,
                resume: bool = False, progress: bool = True) -> list[dict]:
    """Ask/evaluate/tell until ``evaluations`` records are in ``out_dir``'s log; returns all records."""
    if evaluations < 1:
        raise HwnasError(f"the number of evaluations must be positive, got {evaluations}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = out / LOG
    if not resume:
        log.unlink(missing_ok=True)
    records = read_log(log)
    if records:
        differed = replay(strategy, records)
        note = f" ({differed} replayed proposals differed from the log)" if differed else ""
        print(f"resuming {log}: {len(records)} evaluations done{note}")
    cache = {arch_key(record_arch(strategy.space, r)): r for r in records}
    bar = progress_bar(total=evaluations, initial=min(len(records), evaluations), desc=f"{strategy.name} search",
               unit="eval", enabled=progress)
    while len(records) < evaluations:
        arch = strategy.propose()
        key = arch_key(arch)
        if key in cache:
            record = {**cache[key], "cached": True, "seconds": 0.0}
        else:
            record = {**objective(arch), "cached": False}
            cache[key] = record
        record = {"index": len(records), **{k: v for k, v in record.items() if k != "index"}}
        _append(log, record)
        strategy.observe(arch, record["score"])
        records.append(record)
        bar.update(1)
        best = best_record(records)
        if best is not None:
            bar.set_postfix(best_acc=f"{best['accuracy']:.4f}", score=f"{record['score']:.4f}")
    bar.close()
    return records


# -- results ----------------------------------------------------------------------------
def best_record(records: list[dict]) -> dict | None:
    """The highest-accuracy record within the budget (ties: the earliest)."""
    feasible = [r for r in records if r.get("feasible", True) and r.get("accuracy") is not None]
    return max(feasible, key=lambda r: (r["accuracy"], -r["index"])) if feasible else None


def evaluations_to_best(records: list[dict]) -> int | None:
    """1-based number of evaluations after which the final best (within budget) accuracy was first reached."""
    best = best_record(records)
    return None if best is None else best["index"] + 1


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated (lower cost and higher accuracy), sorted by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best_acc = [], float("-inf")
    for i in order:
        if points[i][1] > best_acc:
            front.append(i)
            best_acc = points[i][1]
    return front


def plot_pareto(records: list[dict], path: str | Path, unit: str, budget: float | None = None,
                title: str = "") -> Path:
    """Accuracy vs latency (or MFLOPs) of every evaluated architecture, coloured by evaluation order (colour
    bar); the Pareto front as a red staircase: the best accuracy reachable at each cost."""
    from hwnas.plots import pyplot, save_figure

    plt = pyplot()

    key = "latency_ms" if unit == "ms" else "mflops"
    rows = [r for r in records if r.get("accuracy") is not None and not r.get("cached") and r.get(key) is not None]
    points = [(r[key], r["accuracy"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6.6, 4.2))
    if points:
        dots = ax.scatter([p[0] for p in points], [p[1] for p in points], s=14, c=[r["index"] + 1 for r in rows],
                          cmap="viridis", label="evaluated", zorder=2)
        from matplotlib.ticker import MaxNLocator

        fig.colorbar(dots, ax=ax, label="evaluation").ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        front = [points[i] for i in pareto_front(points)]
        xs = [p[0] for p in front] + [max(p[0] for p in points)]
        ys = [p[1] for p in front] + [front[-1][1]]
        ax.step(xs, ys, where="post", color="red", lw=1.2, label="Pareto front", zorder=3)
        ax.plot(xs[:-1], ys[:-1], "o", ms=5, mfc="none", mec="red", zorder=3)
    if budget is not None:
        ax.axvline(budget, color="grey", ls="--", label=f"budget {budget:g} {unit}")
    best = best_record(records)
    if best is not None and best.get(key) is not None:
        ax.plot([best[key]], [best["accuracy"]], "*", ms=14, color="orange", mec="black", mew=0.5,
                label="best within budget", zorder=4)
    ax.set_xlabel("predicted latency (ms)" if unit == "ms" else "multiply-adds (MFLOPs)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title or "evaluated architectures")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")  # a fixed corner hid points
    return save_figure(fig, path, dpi=120)


# -- the command ------------------------------------------------------------------------
@dataclass
class StrategyRun:
    """Everything one sample-based search needs (``hwnas search --strategy ...`` fills it in :mod:`hwnas.cli.search`).

    ``predictor`` is the loaded latency predictor (None: the analytic proxy); ``predictor_path`` only names it in
    config.json. Options left at None take the defaults below; config.json records them as given.
    """

    strategy: str
    space: object  # hwnas.spaces.SearchSpace
    predictor: object = None
    predictor_path: str | None = None
    seed: int = 0
    evaluations: int = 30
    out: str | None = None
    resume: bool = False
    progress: bool = True
    threads: int = TORCH_THREADS
    evaluator: str = "proxy"
    supernet: str | None = None
    dataset: str | None = None
    limit_train: int | None = None
    limit_val: int | None = None
    budget_ms: float | None = None
    budget_mflops: float | None = None
    penalty_weight: float = -0.07
    over_budget: str = "penalty"
    batch_size: int | None = None
    proxy_epochs: int | None = None
    proxy_steps: int | None = None
    proxy_lr: float | None = None
    proxy_width_mult: float | None = None
    supernet_steps: int | None = None
    calib_batches: int | None = None
    lr: float | None = None
    population: int | None = None
    sample_size: int | None = None
    controller_lr: float | None = None
    beam: int | None = None
    surrogate: str | None = None

    def get(self, name: str, default=None):
        value = getattr(self, name)
        return default if value is None else value

    @property
    def out_dir(self) -> Path:
        """``out``, or ``runs/search/<strategy>-<space>-s<seed>``."""
        return Path(self.out or Path("runs") / "search" / f"{self.strategy}-{self.space.name}-s{self.seed}")


def _check_config(out: Path, config: dict, resume: bool) -> None:
    path = out / CONFIG
    if resume and path.exists():
        saved = read_json(path, "run config")
        changed = [k for k in config if k != "evaluations" and saved.get(k) != config[k]]
        if changed:
            k = changed[0]
            raise HwnasError(f"{path}: the run was started with {k}={saved.get(k)!r}, this one has "
                             f"{k}={config[k]!r}; resume with the same settings or use another --out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")


def build_evaluator(run: StrategyRun, out: Path):
    """The accuracy evaluator ``run`` asks for: one-shot (supernet) or proxy training."""
    from hwnas.data import DEFAULT_DATASET, load_dataset

    space, seed = run.space, run.seed
    kind = run.get("evaluator", "proxy")
    splits = load_dataset(run.get("dataset", DEFAULT_DATASET), space.params["resolution"], seed=seed,
                          limit_train=run.limit_train, limit_val=run.limit_val)
    if splits.num_classes != space.params["num_classes"]:
        raise HwnasError(f"dataset {splits.name} has {splits.num_classes} classes, space {space.name} has "
                         f"{space.params['num_classes']}; add --set num_classes={splits.num_classes}")
    batch_size = run.get("batch_size", 32)
    if kind == "proxy":
        from hwnas.strategies.evaluators import ProxyEvaluator

        return ProxyEvaluator(splits, epochs=run.get("proxy_epochs", 1), max_steps=run.get("proxy_steps", 40),
                              lr=run.get("proxy_lr", 0.1), batch_size=batch_size,
                              width_mult=run.proxy_width_mult, seed=seed)
    if kind == "oneshot":
        from hwnas.strategies import supernet_bridge as bridge

        path = run.supernet
        if path is None:  # train shared weights once (sandwich rule), kept in the run folder
            path = out / bridge.SUPERNET
            if not run.resume:
                path.unlink(missing_ok=True)
            if not path.exists():
                net = bridge.train_supernet(space, splits, steps=run.get("supernet_steps", 300),
                                            lr=run.get("lr", 0.05), batch_size=batch_size, seed=seed,
                                            progress=run.progress)
                bridge.save_supernet(net, path)
        return bridge.oneshot_evaluator(path, space, splits, calib_batches=run.get("calib_batches", 4),
                                        batch_size=batch_size, seed=seed)
    raise HwnasError(f"unknown evaluator {kind!r}; known: oneshot, proxy")


def build_objective(space, predictor, budget_ms: float | None = None, budget_mflops: float | None = None,
                    penalty_weight: float = -0.07, over_budget: str = "penalty", evaluator=None) -> Objective:
    """Budget in ms (``predictor``, a loaded one or None for the analytic proxy) or in MFLOPs.

    The predictor prices every operator of the space, every stage width included: operators missing from
    its lookup table go to its fallback regressor (:func:`hwnas.search.latency.load_latency_predictor` notes
    it when it loads the file), as in the gradient search."""
    from hwnas.search.latency import AnalyticProxy

    if budget_ms is not None and budget_mflops is not None:
        raise HwnasError("give either --budget-ms or --budget-mflops, not both")
    unit = "MFLOPs" if budget_mflops is not None else "ms"
    budget = budget_mflops if budget_mflops is not None else budget_ms
    return Objective(evaluator, CostModel(predictor if predictor is not None else AnalyticProxy(), unit), budget,
                     penalty_weight, over_budget)


def strategy_options(run: StrategyRun) -> dict:
    return {"population": run.population, "sample_size": run.sample_size, "controller_lr": run.controller_lr,
            "beam": run.beam, "surrogate": run.surrogate}


def run_strategy(run: StrategyRun) -> int:
    """``hwnas search --strategy random|evolution|rl|progressive``: run, log, plot, print the best."""
    from hwnas.strategies import make_strategy

    space, seed, evaluations = run.space, run.seed, run.evaluations
    use_torch_threads(run.threads)
    out = check_writable_folder(run.out_dir)
    strategy = make_strategy(run.strategy, space, seed=seed, **strategy_options(run))
    objective = build_objective(space, run.predictor, run.budget_ms, run.budget_mflops, run.penalty_weight,
                                run.over_budget)
    objective.check_feasible(space)
    unit = objective.cost_model.unit
    config = {"strategy": run.strategy, "space": space.name, "space_params": space.params, "seed": seed,
              "evaluator": run.get("evaluator", "proxy"), "supernet": run.supernet,
              "dataset": run.get("dataset", "digits"), "limit_train": run.limit_train,
              "limit_val": run.limit_val, "predictor": run.predictor_path,
              "budget": objective.budget, "unit": unit, "over_budget": objective.over_budget,
              "penalty_weight": objective.weight, "options": strategy_options(run),
              "evaluator_options": {k: getattr(run, k) for k in ("proxy_epochs", "proxy_steps", "proxy_lr",
                                                                  "proxy_width_mult", "supernet_steps",
                                                                  "calib_batches", "batch_size")},
              "evaluations": evaluations}
    _check_config(out, config, run.resume)
    objective.evaluator = build_evaluator(run, out)
    budget_text = f"budget {objective.budget:g} {unit}" if objective.budget else "no budget"
    print(f"{run.strategy} search on {space.name} ({space.size:.2e} architectures), {evaluations} evaluations, "
          f"{config['evaluator']} evaluator, {budget_text}, latency from "
          f"{objective.cost_model.predictor.device.get('name', run.predictor_path)} -> {out}")
    t0 = time.time()
    records = search_loop(strategy, objective, evaluations, out, resume=run.resume, progress=run.progress)
    write_results(records, out, space, objective, title=f"{run.strategy} on {space.name}")
    best = best_record(records)
    print(f"{len(records)} evaluations in {time.time() - t0:.1f} s; log {out / LOG}; plot {out / 'pareto.png'}")
    if best is None:
        print("no evaluated architecture is within the budget")
        return 1
    widths = best.get("stage_widths")
    print(f"best within budget: accuracy {best['accuracy']:.4f}, {best['latency_ms']:g} ms, {best['mflops']:g} MFLOPs "
          f"(evaluation {best['index'] + 1}): {' '.join(best['choices'])}"
          + (f", stage widths {', '.join(f'{w:g}' for w in widths)}" if widths and space.searches_width else "")
          + f" -> {out / 'best.json'}")
    return 0


def write_results(records: list[dict], out: Path, space, objective: Objective, title: str = "") -> dict:
    """best.json, summary.json and pareto.png for a finished (or interrupted) run."""
    best = best_record(records)
    if best is not None:
        record_arch(space, best).save(out / "best.json")
    summary = {"evaluations": len(records), "unique": len({arch_key(record_arch(space, r)) for r in records}),
               "best": best, "evaluations_to_best": evaluations_to_best(records),
               "feasible": sum(bool(r.get("feasible", True)) for r in records),
               "seconds": round(sum(r.get("seconds", 0.0) for r in records), 2)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_pareto(records, out / "pareto.png", objective.cost_model.unit, objective.budget, title)
    return summary
