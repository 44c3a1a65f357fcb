"""The main job's configuration (``hwnas run --config FILE.toml``): sections, fields, defaults and checks.

``SCHEMA`` maps section -> field -> (default, check); a check returns an error text or None. Every error names
the file (``where``) and the field.
"""

from __future__ import annotations

import math
from pathlib import Path

from hwnas.errors import HwnasError
from hwnas.predictors.device_match import TOLERANCE
from hwnas.search.config import DERIVATIONS
from hwnas.export.trained import FP32_TOLERANCE, MIN_AGREEMENT, QUANTS

PROFILE_MODELS = 40  # whole models timed with the operators on a new machine (half fit the calibration)
PROFILE_ROUNDS = 5  # interleaved timing rounds there


# section -> field -> (default, check). A check returns an error text or None.
def _pos_int(v):
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else "must be a positive integer"


def _opt_pos_int(v):
    return None if v is None else _pos_int(v)


def _nonneg_int(v):
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else "must be a non-negative integer"


def _threads(v):
    from hwnas.threads import max_threads

    return None if _nonneg_int(v) is None and v <= max_threads() else f"must be an integer from 0 to {max_threads()}"


def _pos_threads(v):
    return _pos_int(v) or _threads(v)


def _relevel(v):
    from hwnas.search.config import MAX_RELEVEL

    return _nonneg_int(v) or (None if v <= MAX_RELEVEL else f"must be an integer from 0 to {MAX_RELEVEL}")


def _anchors(v):
    return _pos_int(v) or (None if 2 <= v <= 64 else "must be an integer from 2 to 64")


def _adapt_models(v):
    from hwnas.predictors.adapt_table import MIN_MODELS

    return None if v == 0 else _pos_int(v) or (
        None if MIN_MODELS <= v <= 200 else f"must be 0 (never adapt) or an integer from {MIN_MODELS} to 200")


def _pos_num(v):
    return None if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < math.inf else \
        "must be a positive number"


def _string(v):
    return None if isinstance(v, str) and v else "must be a non-empty string"


def _boolean(v):
    return None if isinstance(v, bool) else "must be true or false"


def _one_of(*allowed):
    return lambda v: None if v in allowed else f"must be one of {', '.join(map(repr, allowed))}"


def _budget(v):
    return None if v == "auto" or _pos_num(v) is None else "must be \"auto\" or a positive number of ms"


def _fraction(v):
    return None if isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1 else \
        "must be a number between 0 and 1"


def _table(v):
    return None if isinstance(v, dict) else "must be a table, e.g. { width_mult = 0.5 }"


def _quants(v):
    if isinstance(v, list) and v and all(q in QUANTS for q in v) and len(set(v)) == len(v):
        return None
    return f"must be a non-empty list of distinct values from {', '.join(QUANTS)}"


SCHEMA: dict[str, dict[str, tuple]] = {
    "run": {"out": ("runs/main", _string), "seed": (0, _nonneg_int), "threads": (1, _threads)},
    "space": {"name": ("proxyless-tiny", _string), "params": ({}, _table)},
    "data": {"dataset": ("digits", _string), "limit_train": (None, _opt_pos_int),
             "limit_val": (None, _opt_pos_int), "workers": (0, _nonneg_int)},
    "latency": {"runtime": ("tflite", _one_of("tflite", "onnxruntime")), "dtype": ("fp32", _one_of("fp32", "int8")),
                "threads": (1, _pos_threads), "budget_ms": ("auto", _budget), "budget_scale": (1.0, _pos_num),
                "predictor": ("auto", _string), "reference_predictors": ("predictors", _string),
                "reference_latency_data": ("latency_data", _string), "profile_models": (PROFILE_MODELS, _nonneg_int),
                "profile_rounds": (PROFILE_ROUNDS, _pos_int), "recognise": (True, _boolean),
                "anchors": (8, _anchors), "recognise_tolerance": (TOLERANCE, _fraction),
                "adapt_models": (20, _adapt_models), "adapt_tolerance": (0.15, _fraction)},
    "search": {"mode": ("proxyless", _string), "supernet": ("entangled", _one_of("entangled", "separate")),
               "epochs": (4, _pos_int), "warmup_epochs": (1, _nonneg_int), "child_warmup_epochs": (1, _nonneg_int),
               "batch_size": (64, _pos_int), "max_steps": (10, _opt_pos_int), "lr_alpha": (0.02, _pos_num),
               "relevel": (6, _relevel), "derive": ("argmax", _one_of(*DERIVATIONS)),
               "derive_children": (500, _pos_int)},
    "train": {"epochs": (8, _pos_int), "batch_size": (64, _pos_int), "lr": (0.05, _pos_num),
              "optimizer": ("sgd", _one_of("sgd", "adamw")), "weight_decay": (4e-5, lambda v: None if
              isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < math.inf else
              "must be a finite number >= 0"),
              "label_smoothing": (0.1, lambda v: None if isinstance(v, (int, float)) and 0 <= v < 1
                                  else "must be a number in [0, 1)"),
              "max_steps": (None, _opt_pos_int), "init": ("scratch", _one_of("scratch", "supernet", "best"))},
    "export": {"quant": (["fp32", "int8"], _quants), "onnx": (True, _boolean), "check_images": (100, _pos_int),
               "calib_images": (100, _pos_int), "tolerance": (FP32_TOLERANCE, _pos_num),
               "min_agreement": (MIN_AGREEMENT, _fraction), "force": (False, _boolean)},
}


def default_config() -> dict:
    return {section: {k: (list(v[0]) if isinstance(v[0], list) else dict(v[0]) if isinstance(v[0], dict) else v[0])
                      for k, v in fields.items()} for section, fields in SCHEMA.items()}


def validate_config(data: dict, where: str = "config") -> dict:
    """Defaults filled in; HwnasError naming ``where`` and the field for anything wrong."""
    if not isinstance(data, dict):
        raise HwnasError(f"{where}: a config must be a table")
    config = default_config()
    for section, values in data.items():
        if section not in SCHEMA:
            raise HwnasError(f"{where}: unknown section [{section}]; known: {', '.join(SCHEMA)}")
        if not isinstance(values, dict):
            raise HwnasError(f"{where}: [{section}] must be a table of fields")
        for key, value in values.items():
            if key not in SCHEMA[section]:
                raise HwnasError(f"{where}: unknown field '{section}.{key}'; known in [{section}]: "
                                 f"{', '.join(SCHEMA[section])}")
            problem = SCHEMA[section][key][1](value)
            if problem:
                raise HwnasError(f"{where}: field '{section}.{key}' {problem}, got {value!r}")
            config[section][key] = value
    search = config["search"]
    warm = search["warmup_epochs"] + (search["child_warmup_epochs"] if search["supernet"] == "entangled" else 0)
    if warm >= search["epochs"]:
        raise HwnasError(f"{where}: fields 'search.warmup_epochs' + 'search.child_warmup_epochs' ({warm}) must be "
                         f"below search.epochs ({search['epochs']}) so that architecture steps happen")
    from hwnas.supernet.mixed_op import MODES

    if config["search"]["mode"] not in MODES:
        raise HwnasError(f"{where}: field 'search.mode' must be one of {', '.join(MODES)}, "
                         f"got {config['search']['mode']!r}")
    try:
        from hwnas.spaces import get_space

        get_space(config["space"]["name"], config["space"]["params"])
    except HwnasError as exc:
        raise HwnasError(f"{where}: [space] {exc}") from None
    return config


def set_field(cfg: dict, pair: str) -> None:
    """Apply one ``SECTION.FIELD=VALUE`` override (``hwnas run --set``); VALUE is read as TOML
    (``3``, ``0.5``, ``true``, ``["fp32"]``), else taken as a string. Checked like a config field."""
    import tomllib

    key, sep, text = pair.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot:
        raise HwnasError(f"--set expects SECTION.FIELD=VALUE (e.g. train.epochs=2), got {pair!r}")
    if section not in SCHEMA or name not in SCHEMA[section]:
        known = ", ".join(f"{s}.{f}" for s in SCHEMA for f in SCHEMA[s])
        raise HwnasError(f"--set {pair}: unknown field {key.strip()!r}; known: {known}")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    problem = SCHEMA[section][name][1](value)
    if problem:
        raise HwnasError(f"--set {pair}: field '{key.strip()}' {problem}, got {value!r}")
    cfg[section][name] = value


def load_config(path: str | Path) -> dict:
    """Read and validate a TOML run config."""
    import tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise HwnasError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HwnasError(f"{path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise HwnasError(f"{path}: bad TOML: {exc}") from None
    return validate_config(data, str(path))
