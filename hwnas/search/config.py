"""Settings of a gradient search run, and its result."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hwnas.errors import HwnasError
from hwnas.spaces import DEFAULT_SPACE
from hwnas.threads import check_threads
from hwnas.supernet.mixed_op import MODES
from hwnas.search.weight_sampling import WEIGHT_SAMPLINGS

# Settings that must match for --resume to continue a run: every one that changes the result.
RESUME_KEYS = ("space", "space_params", "dataset", "mode", "darts_order", "epochs", "warmup_epochs", "batch_size",
               "max_steps", "limit_train", "limit_val", "seed", "predictor", "budget_ms", "budget_on",
               "lr_w", "momentum", "weight_decay", "lr_alpha", "lambda_lat", "eta_flops", "eta_mac", "eta_params",
               "tau_start", "tau_end", "baseline_decay", "fit_budget",
               "supernet", "control", "target_fraction", "band_low", "band_high", "arch_fraction",
               "child_warmup_epochs", "distill", "alpha_init_std", "label_smoothing", "latency_level",
               "weight_sampling")
RESUME_DEFAULTS = {"weight_sampling": "alpha"}  # keys older checkpoints lack, and the value they ran with
SUPERNETS = ("entangled", "separate")
MAX_RELEVEL = 1000  # children timed for the session level (~5 s each)
CONTROLS = ("tilt", "absolute", "hinge")
# how the child is chosen after the supernet is trained (hwnas.search.derive): the proxies score by
# hwnas.search.proxies
DERIVATIONS = ("argmax", "evolution", "short", "flops", "params", "mac", "synflow")


def check_common(cfg) -> None:
    """The checks every gradient search's config shares (chain and cell): DARTS order, epochs, batch size,
    learning rates and temperatures; every float setting finite."""
    for name, value in asdict(cfg).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise HwnasError(f"{name} must be a finite number, got {value!r}")
    if cfg.darts_order not in (1, 2):
        raise HwnasError(f"darts order must be 1 or 2, got {cfg.darts_order!r}")
    for name in ("epochs", "batch_size"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise HwnasError(f"{name.replace('_', ' ')} must be a positive integer, got {value!r}")
    for name in ("lr_w", "lr_alpha", "tau_start", "tau_end"):
        if not getattr(cfg, name) > 0:
            raise HwnasError(f"{name} must be positive, got {getattr(cfg, name)!r}")


def check_cuda(device: str, what: str = "device") -> None:
    """Refuse ``cuda`` on a machine where torch finds no GPU (before any work, not at the first tensor)."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise HwnasError(f"{what} cuda: torch finds no CUDA GPU on this machine; use auto or cpu")


@dataclass
class SearchConfig:
    """Everything ``run_search`` needs; the CLI fills it from ``hwnas search`` options."""

    space: str = DEFAULT_SPACE
    space_params: dict = field(default_factory=dict)
    dataset: str = "digits"
    predictor: str | None = None  # None: analytic latency proxy (hwnas.search.latency)
    budget_ms: float | None = None
    latency_level: float = 1.0  # every prediction x this (the session level, hwnas.search.session_level)
    relevel: int = 0  # > 0: measure the session level on this many children near the budget before searching
    mode: str = "proxyless"
    darts_order: int = 1  # 1 or 2 (finite-difference Hessian-vector product; separate supernet only)
    supernet: str = "entangled"  # entangled (shared weights, hwnas.search.entangled_loop) | separate
    epochs: int = 6
    warmup_epochs: int = 2  # epochs training only the weights (entangled: the largest child alone)
    child_warmup_epochs: int = 0  # entangled: sandwich epochs before architecture steps start
    control: str = "tilt"  # entangled budget control: tilt | absolute (TuNAS) | hinge
    target_fraction: float = 0.95  # entangled: expected latency held at this fraction of the budget
    band_low: float = 0.93  # derived child's predicted latency within [band_low, band_high] x budget
    band_high: float = 0.97
    arch_fraction: float = 0.2  # entangled: share of the training images kept for architecture steps
    distill: bool = True  # entangled: sampled children learn from the largest child's outputs
    weight_sampling: str = "alpha"  # entangled: the sandwich's sampled child: alpha | uniform | band (weight_sampling.py)
    alpha_init_std: float = 1e-3  # entangled: architecture logits start at N(0, std)
    label_smoothing: float = 0.1  # entangled: on the largest child's labels
    recalib_batches: int = 10  # entangled: batches to re-estimate BN before a child is scored
    derive: str = "argmax"  # entangled: argmax (most probable child in the band) | evolution | a proxy (derive.py)
    derive_children: int = 500  # evolution: children of the band scored by the supernet
    derive_images: int = 128  # evolution: architecture-split images each child is scored on
    derive_calib_batches: int = 2  # evolution: batches re-estimating each child's BatchNorm
    derive_short_children: int = 12  # short: candidates of the band trained stand-alone (short_training.py)
    derive_short_epochs: int = 2  # short: epochs each candidate is trained
    batch_size: int = 64
    max_steps: int | None = None  # steps per epoch (None: the whole training split)
    limit_train: int | None = None
    limit_val: int | None = None
    seed: int = 0
    lr_w: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 4e-5
    lr_alpha: float = 0.02
    lambda_lat: float | None = None  # None: 1.0 with a budget, 0 without
    eta_flops: float = 0.0  # per M multiply-adds
    eta_mac: float = 0.0  # per M elements
    eta_params: float = 0.0  # per M parameters
    tau_start: float = 5.0  # SNAS temperature, annealed geometrically to tau_end
    tau_end: float = 0.2
    baseline_decay: float = 0.9  # REINFORCE moving-average baseline
    budget_on: str = "derived"  # derived | expected (see hwnas.search.losses)
    fit_budget: bool = True  # separate: derive the most probable child in the budget band (else the argmax)
    device: str = "auto"  # auto | cpu | cuda
    out: str | None = None
    resume: bool = False
    progress: bool = True
    workers: int = 0
    threads: int = 1  # torch CPU threads (0: torch's default; see hwnas.threads)
    stop_after: int | None = None  # stop after this many finished epochs (time slicing; continue with resume)

    @property
    def latency_weight(self) -> float:
        if self.lambda_lat is not None:
            return self.lambda_lat
        return 1.0 if self.budget_ms is not None else 0.0

    def check(self) -> None:
        if self.mode not in MODES:
            raise HwnasError(f"unknown mode {self.mode!r}; known: {', '.join(MODES)}")
        check_common(self)
        if not isinstance(self.warmup_epochs, int) or not 0 <= self.warmup_epochs < self.epochs:
            raise HwnasError(f"warm-up epochs must be in [0, epochs={self.epochs}), got {self.warmup_epochs!r}")
        if self.max_steps is not None and self.max_steps < 1:
            raise HwnasError(f"max steps must be positive, got {self.max_steps!r}")
        for name in ("lambda_lat", "eta_flops", "eta_mac", "eta_params", "weight_decay"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise HwnasError(f"{name} must not be negative, got {value!r}")
        if self.budget_on not in ("derived", "expected"):
            raise HwnasError(f"budget_on must be 'derived' or 'expected', got {self.budget_on!r}")
        if self.supernet not in SUPERNETS:
            raise HwnasError(f"supernet must be one of {', '.join(SUPERNETS)}, got {self.supernet!r}")
        if self.control not in CONTROLS:
            raise HwnasError(f"budget control must be one of {', '.join(CONTROLS)}, got {self.control!r}")
        if self.supernet == "entangled":
            if self.darts_order != 1:
                raise HwnasError("second-order DARTS needs --supernet-type separate")
            if self.warmup_epochs + self.child_warmup_epochs >= self.epochs:
                raise HwnasError(f"warm-up epochs ({self.warmup_epochs}) + child warm-up epochs "
                                 f"({self.child_warmup_epochs}) must be below epochs ({self.epochs}) so that "
                                 "architecture steps happen")
        if not 0 < self.band_low <= self.band_high <= 1:
            raise HwnasError(f"the budget band must satisfy 0 < low <= high <= 1, got [{self.band_low}, "
                             f"{self.band_high}]")
        if not self.band_low <= self.target_fraction <= self.band_high:
            raise HwnasError(f"target fraction {self.target_fraction} must lie in the band [{self.band_low}, "
                             f"{self.band_high}]")
        if not 0 < self.arch_fraction < 1:
            raise HwnasError(f"arch fraction must be between 0 and 1, got {self.arch_fraction!r}")
        if not isinstance(self.child_warmup_epochs, int) or self.child_warmup_epochs < 0:
            raise HwnasError(f"child warm-up epochs must be a non-negative integer, got {self.child_warmup_epochs!r}")
        if self.weight_sampling not in WEIGHT_SAMPLINGS:
            raise HwnasError(f"weight sampling must be one of {', '.join(WEIGHT_SAMPLINGS)}, got "
                             f"{self.weight_sampling!r}")
        if self.weight_sampling != "alpha" and self.supernet != "entangled":
            raise HwnasError(f"weight sampling {self.weight_sampling!r} needs the entangled supernet")
        if self.weight_sampling == "band" and self.budget_ms is None:
            raise HwnasError("weight sampling 'band' needs a latency budget")
        if self.derive not in DERIVATIONS:
            raise HwnasError(f"derive must be one of {', '.join(DERIVATIONS)}, got {self.derive!r}")
        for name in ("derive_children", "derive_images", "derive_calib_batches", "derive_short_children",
                     "derive_short_epochs"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise HwnasError(f"{name.replace('_', ' ')} must be a positive integer, got {getattr(self, name)!r}")
        if not isinstance(self.recalib_batches, int) or self.recalib_batches < 1:
            raise HwnasError(f"recalibration batches must be a positive integer, got {self.recalib_batches!r}")
        if not 0 <= self.label_smoothing < 1 or not self.alpha_init_std >= 0:
            raise HwnasError("label smoothing must be in [0, 1) and alpha_init_std >= 0")
        if not 0 < self.latency_level < float("inf"):
            raise HwnasError(f"latency level must be a positive number, got {self.latency_level!r}")
        if not isinstance(self.relevel, int) or not 0 <= self.relevel <= MAX_RELEVEL:
            raise HwnasError(f"relevel must be an integer from 0 to {MAX_RELEVEL} (children to time), "
                             f"got {self.relevel!r}")
        if self.stop_after is not None and (not isinstance(self.stop_after, int) or self.stop_after < 1):
            raise HwnasError(f"stop after must be a positive number of epochs, got {self.stop_after!r}")
        if self.relevel and (self.predictor is None or self.budget_ms is None):
            raise HwnasError("re-levelling (--relevel) needs --predictor and --budget-ms: it times children "
                             "predicted near the budget on the predictor's runtime")
        if self.device not in ("auto", "cpu", "cuda"):
            raise HwnasError(f"device must be auto, cpu or cuda, got {self.device!r}")
        check_cuda(self.device)
        check_threads(self.threads, "threads")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / "search" / f"{self.space}-{self.mode}-s{self.seed}"


@dataclass
class SearchResult:
    """The derived architecture and where the run's files are."""

    arch: object  # hwnas.arch.Architecture
    summary: dict  # predicted latency / FLOPs / params of the derived child, budget, probabilities
    history: list[dict]
    out_dir: Path
    supernet: object = None  # the trained Supernet (in memory only)
    level: float = 1.0  # the session level the search aimed with (every prediction x this)
