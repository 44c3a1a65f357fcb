"""A predictor for a new device from a few measured architectures, transferred from known devices.

Given n (5-20) architectures measured on the new device (choices ``a_i``,
latencies ``y_i``) and S source devices with additive ``whole_model`` tables
(overhead ``o_s``, per-operator entries ``e_s[k]``; their corrections are not
used), the new device's table is modelled as

    entry[k]  = ybar * ( sum_s w_s e_s[k] / m_s  +  sum_j v_j b_j[k]  +  sum_j d_j b_j[k] )
    overhead  = ybar * ( c + sum_s w_s o_s / m_s )

* ``m_s`` is source s's mean prediction over the n samples and ``ybar`` the
  samples' mean latency, so every source is on the same scale and equal
  shares ``w_s = 1/S`` mean "the consensus of the sources at the new level".
* **Mix** (base ``mix``): the shares ``w_s >= 0`` (a non-negative mix of the
  source tables) are pulled toward equal shares by a ridge penalty
  ``alpha_w |w - 1/S|^2``; ``c`` is a free level.
* **Structure** (base ``structure``): the mix plus four non-negative
  structural pseudo-sources ``v_j >= 0`` pulled toward 0 by ``alpha_s |v|^2``
  (``STRUCTURE``): the expanded channel count (``mid``: a cost per channel
  whatever the spatial size, as on the Xeon Gold 6226 of ../shared/phones,
  where an e6 block costs 10-26 ms in every stage and an e1 block 0-2 ms),
  1x1-conv and depthwise multiply-adds, the expanded activation. A device
  whose time follows its arithmetic or its channels more than any source
  does gets it here without a discrete choice; time never falls with work,
  hence the sign.
* **Deviations** on either base, for a device unlike both: ``b_j[k]`` are
  structural bases over the operators, each scaled to mean 1 over the
  samples, with free-sign coefficients ``d_j`` pulled toward 0 by
  ``alpha_d |d|^2``. A candidate term is one basis or a group of them (19
  terms): ``stage<s>``, the consensus entry of k when k lies in stage s, else 0
  (a relative scale of one stage); analytic counts of k: 1x1-conv and
  depthwise multiply-adds, depthwise work at kernel 5, the expanded
  activation, the expanded channel count, the input and output sizes, 1 per
  non-identity layer, 1 per grouped layer, 1 per projection shortcut; and two
  groups of one basis per stage: ``stage_scales`` (every stage's relative
  scale at once) and ``flops_per_stage`` (the multiply-adds of k when k lies
  in stage s). The consensus is the mean of the normalized source tables
  ``e_s / m_s``.

Each candidate is a bounded least-squares problem on the relative latencies
``y_i / ybar`` (``w, v >= 0``), the penalties entered as extra rows
(``scipy.optimize.lsq_linear``). Samples more than 10% and 3 robust deviations
off the fit are down-weighted (Huber weights, a few reweighting passes): whole-
network phone measurements contain disturbed runs.

**Leave-one-out on the samples.** Each sample i is predicted by the candidate
fitted on the others (``p_i``), and ``CRITERION`` judges these predictions
(lower is better):

* ``error``: the mean absolute relative error, mean |p_i / y_i - 1|;
* ``shape``: the same on logs after removing their median,
  mean |r_i - median(r)| with r_i = log(p_i / y_i): the common level is set
  afterwards (**Level** below), so only the relative latencies are judged;
* ``pairs`` (ranking-aware): the share of the n(n-1)/2 sample pairs that the
  ``p_i`` order otherwise than the ``y_i``, plus ``PAIRS_TIE`` (0.01) times
  the mean absolute relative error, which only breaks ties.

**Trials** (:func:`fit_trials`): the mix with ``alpha_w`` in {0.01, 0.1, 1,
10}; the structure base with ``alpha_w`` in {0.1, 1} x ``alpha_s`` in {0.01,
0.1, 1, 10}; then, on each base's best, every deviation term x ``alpha_d`` in
{0.01, 0.1, 1}, and (from 15 samples) a second term on the best first one. At
most one deviation per 5 samples beyond the first 5, 2 in all, and at most one
free coefficient besides the shares per ``PER_COEFFICIENT`` = 2 samples (the
level and the deviation columns, ``1 + c <= n / 2``): at 10 samples this keeps
out the groups of 7 bases, whose 7 coefficients fit 10 samples closely
whatever the device.

**Weights** (:func:`combine`): the final table is the weighted mean of every
trial's table, with weight ``exp(-(L / L_best - 1) / TAU - DEVIATION_COST x
deviations)`` (``L``: its leave-one-out criterion). A trial within a few
percent of the best counts nearly as much, so tables the samples cannot tell
apart are averaged (this steadies the ranking), and a deviation must cut the
criterion by about ``TAU x DEVIATION_COST`` = 80% of the best one's to weigh as
much as a trial without it: a noisy device (a phone measured in whole
milliseconds) rarely earns that, an exact per-layer sum often does. Unlike a
hard choice of one family, a deviation that wins by a little gets part of the
weight, not all of it. A fit whose shares sum to less than 0.2 (it ignores the
sources) weighs nothing. Fewer than 5 samples are refused: the mix alone fits
a level and S shares, and leave-one-out needs samples to spare.

**Stage scales** (:func:`stage_scales`): the weighted table is then
refined by one relative scale per stage, by empirical Bayes. Each sample is
``y_i = a (b_i + sum_j r_j S_ij) + noise``: ``b_i`` the table's prediction,
``S_ij`` its part in stage j, the scales ``r_j ~ N(0, STAGE_PRIOR^2)`` (0.2),
the noise relative, its size chosen by the marginal likelihood of the samples
over a grid (0.3% to 30%), and the posterior mean of ``r`` kept. A device
whose stages cost otherwise than the sources' (the Raspberry Pi 4's last stage
runs 1.56x its mix of the others' on all training rows) gets its scales from
10 samples when they fit tightly; a phone's noisy samples, whose likelihood
asks for 5-10% noise, move them little. No discrete choice: every stage's
scale is shrunk, none picked.

**Level.** Disturbances only add time, so the final table is rescaled so
that 35% of the samples lie below its prediction (rank order unchanged), the
samples weighed by how recently they were measured: they are given oldest
first, and sample i of n weighs ``exp(-(n - 1 - i) / ((n - 1) x RECENCY))``,
so the newest weighs 1 and the oldest e^-2 (``RECENCY`` 0.5; ``None``: all
the same). The 0.35 quantile is the Harrell-Davis estimate (a Beta-weighted
mean of all the sorted samples, not one or two of them), which from 10-20
noisy samples varies less draw to draw than a single order statistic.
Phones drift over a measurement campaign (PH-1's first 1,000 rows in
../shared/phones run ~10% above its full-data table, its last 1,000 ~3%
below), and the device's state now is told best by its latest runs, as
``whole_model``'s drift blocks predict with the last block's level. Only the
level moves; the shares and deviations are fitted on every sample alike.

**Constants.** ``TAU``, ``DEVIATION_COST``, ``PER_COEFFICIENT`` (2, or 0 for
no such limit), ``CRITERION``, ``RECENCY`` and ``STAGE_PRIOR`` are the setting
that meets the issue's targets best summed over the seven devices of
../shared/phones in the leave-one-device-out benchmark
``benchmarks/phone_few_shot.py`` (which judges each device with the setting
best on the other six). The level quantile 0.35, the grids and the
structure base's four columns were chosen earlier on the same benchmark, not by
that nested rule.

The result is an ordinary ``whole_model`` predictor file (entries gauged as
there, no correction), with ``meta.few_shot`` recording the number of samples,
the sources and their (weighted mean) shares, the structure coefficients (each
pseudo-source's part of the mean latency), the top-weighted trial's base and
deviations, the members with their weights, every leave-one-out trial, the
stage scales with the noise the likelihood chose, and the level.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import lsq_linear
from scipy.stats import beta

from hwnas.arch import space_overrides
from hwnas.errors import HwnasError
from hwnas.predictors.features import FEATURE_NAMES, op_features
from hwnas.predictors.whole_model import Encoding, WholeModelPredictor, gauge, metrics
from hwnas.spaces import SearchSpace

MIN_SAMPLES = 5
MIN_SHARES = 0.2
MAX_DEVIATIONS = 2
SAMPLES_PER_DEVIATION = 5  # one deviation term per 5 samples beyond the first 5
MIX_ALPHAS = (0.01, 0.1, 1.0, 10.0)
DEVIATION_ALPHAS = (0.01, 0.1, 1.0)
OUTLIER = 0.10  # relative residuals below this are never down-weighted
LEVEL_PENALTY = 1e-3  # ridge weight on the free level c (relative units)
LEVEL_QUANTILE = 0.35  # the final level: a share 0.35 of the samples (weighed by RECENCY) lies below the prediction
STAGE_PRIOR = 0.2  # prior standard deviation of each stage's relative scale (stage_scales); 0: no refinement
STAGE_NOISE_GRID = np.geomspace(0.003, 0.3, 25)  # the relative noise sizes the marginal likelihood chooses from
RECENCY: float | None = 0.5  # level weights: the oldest sample weighs exp(-1 / RECENCY) of the newest; None: equal
PER_COEFFICIENT = 2  # samples per free coefficient (level + deviation columns); 0: no such limit
CRITERIA = ("error", "shape", "pairs")
CRITERION = "error"  # what leave-one-out selection minimizes (see the module docstring)
PAIRS_TIE = 0.01  # "pairs": weight of the mean absolute error, which only breaks ties
TAU = 0.2  # weights: a trial whose leave-one-out criterion is (1 + TAU) x the best one's weighs 1/e as much
DEVIATION_COST = 4.0  # weights: each deviation term divides a trial's weight by e^DEVIATION_COST
BASES = ("mix", "structure")
STRUCTURE = ("mid", "pw_flops", "dw_flops", "mid_elems")  # the "structure" base's non-negative pseudo-sources
STRUCTURE_MIX_ALPHAS = (0.1, 1.0)  # the shares' penalty on the "structure" base
STRUCTURE_ALPHAS = (0.01, 0.1, 1.0, 10.0)  # the pseudo-sources' penalty toward 0
STRUCT = ("pw_flops", "dw_flops", "dw_k5", "mid_elems", "mid", "in_elems", "out_elems")


@dataclass
class Sources:
    """The source tables on one encoding: ``E`` (operators x sources), ``O`` (overheads), names."""

    names: list[str]
    E: np.ndarray
    O: np.ndarray

    @classmethod
    def of(cls, enc: Encoding, predictors: dict[str, WholeModelPredictor]) -> "Sources":
        if not predictors:
            raise HwnasError("few-shot adaptation needs at least one source device's whole_model predictor")
        for name, p in predictors.items():
            if not isinstance(p, WholeModelPredictor):
                raise HwnasError(f"source {name}: a whole_model predictor is needed, got type {p.type_name!r}")
            if p.space != enc.space.name:
                raise HwnasError(f"source {name}: fitted for space {p.space!r}, not {enc.space.name!r}")
        E = np.stack([[p.entries.get(k, 0.0) for k in enc.keys] for p in predictors.values()], axis=1)
        return cls(list(predictors), E, np.array([p.overhead_ms for p in predictors.values()]))


def load_sources(path: str | Path, space: str, exclude_name: str | None = None,
                 exclude_path: str | Path | None = None) -> dict[str, WholeModelPredictor]:
    """The ``whole_model`` predictors of ``space`` in a folder (or one file), by device name.

    Other predictor types and spaces are skipped; so are the device ``exclude_name`` and the file
    ``exclude_path`` (the one being written).
    """
    from hwnas.predictors import load_predictor, read_header

    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    skip = Path(exclude_path).resolve() if exclude_path else None
    out = {}
    for f in files:
        if skip is not None and f.resolve() == skip:
            continue
        head = read_header(f)
        if head.get("type") != "whole_model" or head.get("space") != space:
            continue
        pred = load_predictor(f, space=space)
        name = pred.device.get("name", f.stem)
        if name != exclude_name:
            out[name] = pred
    if not out:
        raise HwnasError(f"{path}: no whole_model predictors of space {space} to transfer from")
    return out


def stage_index(enc: Encoding) -> np.ndarray:
    """The index (into ``enc.stages``) of each operator column's stage."""
    stage_of = np.zeros(len(enc.keys), dtype=int)
    for pos, cols in zip(enc.positions, enc.col):
        stage_of[cols] = enc.stages.index(pos.stage)
    return stage_of


def deviation_bases(enc: Encoding, consensus: np.ndarray) -> dict[str, np.ndarray]:
    """Every candidate deviation term: name -> its bases (operators x columns; see the module docstring)."""
    stage_of = stage_index(enc)
    rows = np.zeros((len(enc.keys), len(STRUCT) + 4))
    for pos, cols in zip(enc.positions, enc.col):
        for op, k in zip(pos.ops, cols):
            f = op_features(op)
            rows[k] = [f[FEATURE_NAMES.index(s)] for s in STRUCT] + [
                0.0 if op.is_identity else 1.0, float(op.groups > 1), float(op.kind == "skip" and not op.is_identity),
                f[FEATURE_NAMES.index("flops")]]
    in_stage = np.stack([stage_of == j for j in range(len(enc.stages))], axis=1).astype(float)
    out = {f"stage{stage}": (consensus * in_stage[:, j])[:, None] for j, stage in enumerate(enc.stages)}
    for j, name in enumerate(list(STRUCT) + ["layers", "grouped_layers", "projection_shortcuts"]):
        out[name] = rows[:, j:j + 1]
    out["stage_scales"] = consensus[:, None] * in_stage  # every stage's relative scale, one column each
    out["flops_per_stage"] = rows[:, -1:] * in_stage  # multiply-adds of each stage, one column each
    return out


def _huber_weights(rel: np.ndarray) -> np.ndarray:
    scale = max(1.4826 * np.median(np.abs(rel - np.median(rel))), OUTLIER / 3)
    u = np.abs(rel) / (3 * scale)
    return np.where(u <= 1.0, 1.0, 1.0 / np.maximum(u, 1e-12))


def _solve(X: np.ndarray, y: np.ndarray, src: Sources, bases: np.ndarray, alpha_w: float, alpha_d: float,
           structure: np.ndarray | None = None, alpha_s: float = 0.0,
           passes: int = 4) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """``(overhead, entries, shares, structure coefficients)`` of one candidate fitted on the rows ``X``
    (operator counts), ``y`` (ms); ``structure``: the non-negative structural pseudo-sources (operators x k)."""
    S = len(src.names)
    structure = np.zeros((len(src.E), 0)) if structure is None else structure
    k = structure.shape[1]
    P = src.O + X @ src.E  # n x S source predictions
    m = P.mean(axis=0)
    B = np.hstack([structure, bases])
    D = X @ B
    dm = np.where(np.abs(D).mean(axis=0) > 1e-12, np.abs(D).mean(axis=0), 1.0)
    ybar = float(y.mean())
    A = np.hstack([np.ones((len(y), 1)), P / m, D / dm])
    t = y / ybar
    pen = np.concatenate([[LEVEL_PENALTY], np.full(S, alpha_w), np.full(k, alpha_s), np.full(bases.shape[1], alpha_d)])
    prior = np.concatenate([[0.0], np.full(S, 1.0 / S), np.zeros(D.shape[1])])
    lower = np.concatenate([[-np.inf], np.zeros(S + k), np.full(bases.shape[1], -np.inf)])
    w = np.ones(len(y))
    for _ in range(passes):
        sw = np.sqrt(w)
        sol = lsq_linear(np.vstack([A * sw[:, None], np.diag(np.sqrt(pen))]),
                         np.concatenate([t * sw, np.sqrt(pen) * prior]), bounds=(lower, np.inf), method="bvls").x
        new = _huber_weights(A @ sol / t - 1.0)
        if np.allclose(new, w):
            break
        w = new
    c, shares, d = sol[0], sol[1:1 + S], sol[1 + S:]
    entries = (src.E / m) @ shares + B @ (d / dm)
    overhead = c + (src.O / m) @ shares
    return ybar * float(overhead), ybar * entries, shares, d[:k]


def _loo_predictions(X, y, src, bases, alpha_w, alpha_d, structure=None, alpha_s=0.0) -> np.ndarray:
    """Each sample's latency predicted by a fit on the others."""
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        overhead, entries, _, _ = _solve(X[keep], y[keep], src, bases, alpha_w, alpha_d, structure, alpha_s)
        out[i] = overhead + X[i] @ entries
    return out


def criterion(pred: np.ndarray, y: np.ndarray, kind: str) -> float:
    """What the selection minimizes over the leave-one-out predictions ``pred`` (see the module docstring)."""
    if kind == "error":
        return float(np.mean(np.abs(pred / y - 1.0)))
    if kind == "shape":
        r = np.log(np.maximum(pred / y, 1e-6))  # a (rare) prediction <= 0 counts as a very large error
        return float(np.mean(np.abs(r - np.median(r))))
    if kind == "pairs":
        i, j = np.triu_indices(len(y), 1)
        wrong = np.mean(np.sign(pred[i] - pred[j]) != np.sign(y[i] - y[j]))
        return float(wrong + PAIRS_TIE * np.mean(np.abs(pred / y - 1.0)))
    raise HwnasError(f"unknown few-shot selection criterion {kind!r}; known: {', '.join(CRITERIA)}")


def check_samples(n: int, where: str = "samples") -> None:
    if n < MIN_SAMPLES:
        raise HwnasError(f"{where}: {n} measured architectures; few-shot adaptation needs at least {MIN_SAMPLES} "
                         "(it fits a level and the sources' shares, with a penalty chosen by leave-one-out; each "
                         f"deviation term needs {SAMPLES_PER_DEVIATION} more)")


@dataclass
class Trials:
    """Every candidate fitted on the samples, with its leave-one-out criterion: what :func:`combine` weighs."""

    space: SearchSpace
    enc: Encoding
    X: np.ndarray
    y: np.ndarray
    src: Sources
    choices: list
    trials: list[dict]
    fits: list[tuple]
    per_coefficient: float
    criterion_kind: str


def fit_trials(space: SearchSpace, sources: dict[str, WholeModelPredictor], choices, y, where: str = "samples",
               per_coefficient: float = PER_COEFFICIENT, criterion_kind: str = CRITERION,
               progress: bool = False) -> Trials:
    """Fit every candidate (both bases, their penalties, the deviations on top) and judge it by leave-one-out;
    ``progress``: a bar counting the candidates (about 130; 20 samples take ~10 s)."""
    from hwnas.progress import progress_bar

    y = np.asarray(y, dtype=np.float64)
    check_samples(len(y), where)
    criterion(y, y, criterion_kind)  # an unknown criterion fails here, before any fit
    enc = Encoding(space)
    X = enc.additive(enc.indices(choices))
    src = Sources.of(enc, sources)
    consensus = (src.E / (src.O + X @ src.E).mean(axis=0)).mean(axis=1)
    candidates = deviation_bases(enc, consensus)
    structure = np.hstack([candidates[name] for name in STRUCTURE])
    stack = lambda names: np.hstack([candidates[n] for n in names]) if names else np.zeros((len(enc.keys), 0))
    trials, fits = [], []

    def trial(base, terms, alpha_w, alpha_s, alpha_d):
        args = (stack(terms), alpha_w, alpha_d, structure if base == "structure" else None, alpha_s)
        pred = _loo_predictions(X, y, src, *args)
        fit = _solve(X, y, src, *args)
        score = criterion(pred, y, criterion_kind)
        if fit[2].sum() < MIN_SHARES or not np.isfinite(score):
            score = None  # refused (JSON null): a fit that (nearly) ignores the sources, whatever its error
        trials.append({"base": base, "deviations": list(terms), "alpha_w": alpha_w, "alpha_s": alpha_s,
                       "alpha_d": alpha_d, "loo_criterion": score,
                       "loo_mean_abs_rel_error": criterion(pred, y, "error")})
        fits.append(fit)
        bar.update(1)
        return trials[-1]

    def affordable(terms):  # the level and the deviation columns: at most one per PER_COEFFICIENT samples
        return not per_coefficient or (1 + stack(terms).shape[1]) * per_coefficient <= len(y)

    with progress_bar(desc="few-shot fits", unit="fit", enabled=progress) as bar:
        for a in MIX_ALPHAS:
            trial("mix", [], a, 0.0, 0.0)
        for a in STRUCTURE_MIX_ALPHAS:
            for a_s in STRUCTURE_ALPHAS:
                trial("structure", [], a, a_s, 0.0)
        for base in BASES:
            current = min((t for t in trials if t["base"] == base), key=_score)
            for _ in range(min(MAX_DEVIATIONS, len(y) // SAMPLES_PER_DEVIATION - 1)):
                terms = [current["deviations"] + [name] for name in candidates if name not in current["deviations"]]
                terms = [t for t in terms if affordable(t)]
                if not terms:
                    break
                current = min((trial(base, t, current["alpha_w"], current["alpha_s"], a)
                               for t in terms for a in DEVIATION_ALPHAS), key=_score)
    return Trials(space, enc, X, y, src, list(choices), trials, fits, per_coefficient, criterion_kind)


def _score(trial: dict) -> float:
    """A trial's leave-one-out criterion; a refused one (``None``) scores infinitely badly."""
    return float("inf") if trial["loo_criterion"] is None else float(trial["loo_criterion"])


def weights(trials: list[dict], tau: float = TAU, deviation_cost: float = DEVIATION_COST) -> np.ndarray:
    """Each trial's weight in the final table: ``exp(-(L / L_best - 1) / tau - deviation_cost * deviations)``.

    ``L`` is a trial's leave-one-out criterion; a trial the shares rule refused (``None``) weighs 0. Weights
    below 1e-4 are dropped, the rest sum to 1.
    """
    L = np.array([_score(t) for t in trials], dtype=np.float64)
    ok = np.isfinite(L)
    if not ok.any():  # every fit ignores the sources: fall back to the mix with the lowest error
        ok = np.array([t["base"] == "mix" for t in trials])
        L = np.where(ok, [t["loo_mean_abs_rel_error"] for t in trials], np.inf)
        ok &= L == L[ok].min()
    count = np.array([len(t["deviations"]) for t in trials], dtype=np.float64)
    cost = np.where(count > 0, deviation_cost * count, 0.0)
    z = np.where(ok, -(L / max(L[ok].min(), 1e-12) - 1.0) / tau - cost, -np.inf)
    w = np.exp(z - z[ok].max())
    w[w < 1e-4 * w.sum()] = 0.0
    return w / w.sum()


def stage_scales(y: np.ndarray, base: np.ndarray, parts: np.ndarray,
                 prior: float = STAGE_PRIOR) -> tuple[float, np.ndarray, float]:
    """Empirical-Bayes relative stage scales (see the module docstring): ``(a, r, noise)``.

    ``y``: the samples (ms), ``base``: the table's predictions of them, ``parts``: their stage parts (samples x
    stages). The refined prediction is ``a * (base + parts @ r)``; ``noise`` is the relative noise the marginal
    likelihood chose.
    """
    level = float(np.median(y / base))
    A = np.hstack([base[:, None], parts]) * level / y[:, None]  # relative units: a perfect fit gives 1
    mean = np.r_[1.0, np.zeros(parts.shape[1])]
    var = np.r_[100.0, np.full(parts.shape[1], prior ** 2)]  # the level: all but free
    resid = 1.0 - A @ mean
    best = None
    for noise in STAGE_NOISE_GRID:
        C = (A * var) @ A.T + noise ** 2 * np.eye(len(y))
        solved = np.linalg.solve(C, resid)
        evidence = -0.5 * (resid @ solved + np.linalg.slogdet(C)[1])
        if best is None or evidence > best[0]:
            best = (evidence, noise, mean + var * (A.T @ solved))
    _, noise, post = best
    return level * float(post[0]), post[1:] / post[0], float(noise)


def recency_weights(n: int, recency: float | None = RECENCY) -> np.ndarray:
    """Weights of n samples given oldest first: the newest 1, the oldest ``exp(-1 / recency)``; None: all 1."""
    if recency is None or n < 2:
        return np.ones(n)
    return np.exp((np.arange(n) - (n - 1)) / ((n - 1) * recency))


def weighted_quantile(values: np.ndarray, w: np.ndarray, q: float) -> float:
    """The q quantile of ``values`` weighed by ``w``: the Harrell-Davis estimate, every sorted value weighed by
    the Beta((n + 1) q, (n + 1) (1 - q)) probability of its share of the weight, n the effective sample size
    ``(sum w)^2 / sum w^2`` (with equal weights, the usual Harrell-Davis estimator)."""
    order = np.argsort(values)
    v, w = np.asarray(values, dtype=np.float64)[order], np.asarray(w, dtype=np.float64)[order]
    w = w / w.sum()
    n = 1.0 / float(np.sum(w ** 2))
    edges = np.clip(np.r_[0.0, np.cumsum(w)], 0.0, 1.0)
    return float(np.diff(beta.cdf(edges, (n + 1) * q, (n + 1) * (1 - q))) @ v)


def combine(fitted: Trials, device: dict, tau: float = TAU, deviation_cost: float = DEVIATION_COST,
            recency: float | None = RECENCY, stage_prior: float = STAGE_PRIOR) -> WholeModelPredictor:
    """The new device's ``whole_model`` predictor: the weighted mean of the trials' tables, its stages rescaled
    and levelled (``stage_prior``, ``recency``: see :data:`STAGE_PRIOR`, :data:`RECENCY`; the samples are in the
    order measured, oldest first)."""
    enc, X, y, src = fitted.enc, fitted.X, fitted.y, fitted.src
    w = weights(fitted.trials, tau, deviation_cost)
    used = np.flatnonzero(w)
    overhead = float(sum(w[i] * fitted.fits[i][0] for i in used))
    entries = sum(w[i] * fitted.fits[i][1] for i in used)
    shares = sum(w[i] * fitted.fits[i][2] for i in used)
    structure = {name: float(sum(w[i] * fitted.fits[i][3][j] for i in used if len(fitted.fits[i][3])))
                 for j, name in enumerate(STRUCTURE)}
    refined = {}
    if stage_prior > 0:
        idx = enc.indices(fitted.choices)
        a, r, noise = stage_scales(y, overhead + X @ entries, enc.stage_sums(idx, entries), stage_prior)
        overhead, entries = a * overhead, a * entries * (1.0 + r[stage_index(enc)])
        refined = {"prior": stage_prior, "noise": round(noise, 4),
                   "scales": {str(stage): round(1.0 + float(v), 4) for stage, v in zip(enc.stages, r)}}
    scale = weighted_quantile(y / (overhead + X @ entries), recency_weights(len(y), recency), LEVEL_QUANTILE)
    overhead, entries = overhead * scale, entries * scale
    overhead, entries = gauge(enc, overhead, entries.copy())
    entries = np.maximum(entries, 0.0)  # a deviation may push an entry of a shared operator set below 0
    space = fitted.space
    pred = WholeModelPredictor(device, space.name, space_overrides(space), overhead,
                               dict(zip(enc.keys, map(float, entries))))
    top = fitted.trials[int(np.argmax(w))]
    keys = ("base", "deviations", "alpha_w", "alpha_s", "alpha_d")
    members = [{**{k: fitted.trials[i][k] for k in keys}, "weight": round(float(w[i]), 4)}
               for i in sorted(used, key=lambda i: -w[i])]
    pred.meta = {"fitted_on_rows": int(len(y)), "settings": {"robust": True, "drift_block": 0, "features": [],
                                                             "alpha": 0.0},
                 "few_shot": {"samples": int(len(y)), "sources": src.names,
                              "shares": {n: round(float(v), 4) for n, v in zip(src.names, shares)},
                              "structure": {n: round(v, 4) for n, v in structure.items()},
                              "base": top["base"], "deviations": top["deviations"],
                              "loo_mean_abs_rel_error": top["loo_mean_abs_rel_error"],
                              "criterion": fitted.criterion_kind, "loo_criterion": top["loo_criterion"],
                              "tau": tau, "deviation_cost": deviation_cost, "per_coefficient": fitted.per_coefficient,
                              "recency": recency, "level_scale": round(scale, 4), "stage_scales": refined,
                              "members": members,
                              "trials": fitted.trials, "method": "hwnas.predictors.few_shot (see its docstring)"},
                 "train_fit": metrics(y, pred.predict_many_choices(fitted.choices)),
                 "gauge": "the cheapest candidate of every position is 0 ms; the rest is overhead_ms"}
    return pred


def adapt(space: SearchSpace, sources: dict[str, WholeModelPredictor], choices, y, device: dict,
          where: str = "samples", tau: float = TAU, deviation_cost: float = DEVIATION_COST,
          per_coefficient: float = PER_COEFFICIENT, criterion_kind: str = CRITERION,
          recency: float | None = RECENCY, stage_prior: float = STAGE_PRIOR,
          progress: bool = False) -> WholeModelPredictor:
    """Fit the new device's ``whole_model`` predictor from measured ``choices`` / ``y`` (ms, in the order
    measured, oldest first) and source tables.

    ``tau``, ``deviation_cost``, ``per_coefficient``, ``criterion_kind``, ``recency`` and ``stage_prior``: the
    constants :data:`TAU`, :data:`DEVIATION_COST`, :data:`PER_COEFFICIENT`, :data:`CRITERION`, :data:`RECENCY` and
    :data:`STAGE_PRIOR` (the benchmark varies them).
    """
    return combine(fit_trials(space, sources, choices, y, where, per_coefficient, criterion_kind, progress), device,
                   tau, deviation_cost, recency, stage_prior)
