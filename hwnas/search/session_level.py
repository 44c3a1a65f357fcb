"""The session level: how fast this machine runs NOW against a latency predictor, near a budget.

A predictor's milliseconds were timed in one session; a shared machine's speed
drifts between sessions (neighbours, clocks, caches: the same models ran 1.03-1.09x
their table times on intel-xeon-2c three days after its table was made). A
search that aims at 0.95 x budget by the table then measures outside the
0.90-1.00 x budget band. So, before a search:

1. :func:`measure_session_level` draws ``count`` children predicted in
   [0.85, 1.00] x budget (uniformly, stage widths included), exports each whole
   (random weights) to the predictor's runtime, and times them on this machine
   in ``rounds`` interleaved rounds (a fresh random order each round, pinned to
   one core); a child's measured ms is its fastest round
   (:func:`hwnas.runners.latency_now`), the level the median over children of
   measured / predicted;
2. :class:`LeveledPredictor` multiplies every prediction by the level, so the
   search, its band and its report speak in milliseconds measured now.

``hwnas search --relevel N``, the main job (``search.relevel``) and
``benchmarks/cifar10_budgets.py`` use it. A search resumed from its folder keeps
the level it was started with (``config.json``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from hwnas.errors import HwnasError
from hwnas.predictors import LatencyPredictor
from hwnas.predictors.leveled import LeveledPredictor  # noqa: F401  (re-exported)

LEVEL_BAND = (0.85, 1.00)  # children timed for the level: predicted in this fraction of the budget
LEVEL_LIMITS = (0.2, 5.0)  # a level outside this range: the predictor is for another machine or runtime
FAR_LEVEL = 1.25  # a level beyond 1.25x (or 1/1.25) gets a note suggesting a table of this machine's own


@dataclass
class SessionLevel:
    level: float
    models: list[dict] = field(default_factory=list)  # choices, stage widths, predicted_ms, measured_ms, rounds_ms

    def describe(self) -> str:
        ratios = sorted(m["measured_ms"] / m["predicted_ms"] for m in self.models)
        return (f"session level {self.level:.3f}x: {len(self.models)} children timed now run at "
                f"{ratios[0]:.3f}-{ratios[-1]:.3f}x their predicted latency")


def measure_session_level(space, predictor: LatencyPredictor, budget_ms: float, runtime: str = "tflite",
                          dtype: str = "fp32", threads: int = 1, count: int = 6, rounds: int = 3, seed: int = 0,
                          core: int | None = None, progress: bool = True) -> SessionLevel:
    """Time ``count`` children predicted near ``budget_ms`` now; the level is median(measured / predicted)."""
    from hwnas.runners import get_runner, latency_now
    from hwnas.search.band import sample_children_in_band
    from hwnas.children import child_arch, latency_table
    from hwnas.timing_rounds import time_architectures

    if count < 1 or rounds < 1:
        raise HwnasError(f"the session level needs at least one child and one round, got {count} and {rounds}")
    table = latency_table(space, predictor)
    low, high = LEVEL_BAND[0] * budget_ms, LEVEL_BAND[1] * budget_ms
    children = sample_children_in_band(table, low, high, count, [seed, 31, int(round(budget_ms * 1e4))])
    if not children:
        raise HwnasError(f"no child of {space.name} is predicted in [{low:.4f}, {high:.4f}] ms to time for the "
                         f"session level (the space reaches {table.min():.4f}-{table.max():.4f} ms)")
    archs = [child_arch(space, c) for c in children]
    predicted = [float(predictor.predict_ops(a.ops())) for a in archs]
    per_arch = time_architectures(archs, get_runner(runtime, threads), dtype, rounds, seed, core, progress,
                                  what="session level")
    models = [{"choices": list(a.choices), "stage_widths": list(a.space.stage_widths), "predicted_ms": round(p, 5),
               "measured_ms": round(latency_now(r), 5), "rounds_ms": [round(v, 5) for v in r]}
              for a, p, r in zip(archs, predicted, per_arch)]
    level = statistics.median(m["measured_ms"] / m["predicted_ms"] for m in models)
    if not LEVEL_LIMITS[0] <= level <= LEVEL_LIMITS[1]:
        raise HwnasError(f"children predicted near {budget_ms:g} ms measure {level:.2f}x their prediction on this "
                         f"machine: the predictor is not for this machine (or runtime); profile it here "
                         f"(hwnas profile, hwnas fit) instead of re-levelling")
    return SessionLevel(round(level, 4), models)


def level_for_search(cfg, space, predictor: LatencyPredictor) -> float:
    """The level a search with ``cfg.relevel`` children runs with: the one its folder was started with when it
    resumes, else measured now for ``predictor`` (loaded, not levelled) and written to ``OUT/session_level.json``."""
    import json
    import os

    out = cfg.out_dir
    saved = out / "config.json"
    if cfg.resume and saved.exists() and (out / "checkpoint.pt").exists():
        level = json.loads(saved.read_text()).get("latency_level")
        if level:
            print(f"session level {level:g}x: kept from {saved} (resuming)")
            return float(level)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise HwnasError("re-levelling times models on this machine: measure it in one process "
                         "(hwnas search --relevel N) and pass --latency-level to the distributed run")
    if "cpu" not in (predictor.device or {}):  # a phone's or a published benchmark's milliseconds
        raise HwnasError(f"{cfg.predictor}: re-levelling times children on this machine, but this predictor is "
                         f"for {predictor.device.get('name', 'another device')!r}, not a CPU it can run on; "
                         "search without --relevel (or re-level on that device's own runtime)")
    print(f"session level: timing {cfg.relevel} children predicted in [{LEVEL_BAND[0]:g}, {LEVEL_BAND[1]:g}] x "
          f"{cfg.budget_ms:g} ms with {predictor.runtime} {predictor.dtype}, {predictor.threads} thread(s)")
    found = measure_session_level(space, predictor, cfg.budget_ms, predictor.runtime, predictor.dtype,
                                  predictor.threads, count=cfg.relevel, seed=cfg.seed, progress=cfg.progress)
    print(found.describe() + "; the search aims at milliseconds measured now")
    if not 1 / FAR_LEVEL <= found.level <= FAR_LEVEL:
        print(f"note: this machine runs children {found.level:.2f}x as long as {cfg.predictor} predicts: it is "
              "probably not the machine the table was timed on; re-levelling corrects the level, but a table of "
              "this machine's own (hwnas profile, hwnas fit) also ranks its operators right")
    out.mkdir(parents=True, exist_ok=True)
    (out / "session_level.json").write_text(json.dumps({"level": found.level, "budget_ms": cfg.budget_ms,
                                                         "predictor": cfg.predictor, "models": found.models},
                                                        indent=2) + "\n")
    return found.level
