"""Latency predictors: operator -> milliseconds on a named device.

Every predictor file is JSON (nothing in it can run code when loaded), with a
common header::

    {"format": "hwnas-predictor", "version": 1, "type": "<registered type>",
     "device": {...description...}, "space": "<space name or null>", ...}

A predictor type registers a loader with :func:`register_type`; companion
binary files (e.g. a regressor saved with skops or ONNX) sit beside the JSON and
are named in it. :func:`load_predictor` reads the header, checks it, and
dispatches on ``type``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from hwnas.errors import HwnasError
from hwnas.ops import OpSpec

FORMAT = "hwnas-predictor"
VERSION = 1

_LOADERS: dict[str, Callable[[dict, Path], "LatencyPredictor"]] = {}


class LatencyPredictor:
    """Base class: ``predict_op`` gives one operator's latency in ms."""

    device: dict
    space: str | None
    overhead_ms: float = 0.0

    def predict_op(self, op: OpSpec) -> float:
        raise NotImplementedError

    def predict_ops(self, ops: list[OpSpec]) -> float:
        """Latency of a whole network: the sum of its operators plus a constant overhead."""
        return self.overhead_ms + sum(self.predict_op(op) for op in ops if op.kind != "zero")


def register_type(name: str):
    """Decorator registering ``loader(header_dict, path) -> LatencyPredictor`` for ``type == name``."""

    def wrap(loader):
        _LOADERS[name] = loader
        return loader

    return wrap


def read_header(path: Path) -> dict:
    return _read_header(path)[0]


def _read_header(path: Path) -> tuple[dict, str]:
    """(the predictor file's content, the SHA-256 of its bytes), checked to be an hwnas predictor file."""
    from hwnas.jsonfile import read_json_and_digest

    try:
        data, digest = read_json_and_digest(path, "predictor file")
    except HwnasError as exc:
        if "bad JSON" not in str(exc):
            raise
        raise HwnasError(f"{exc}; not a valid predictor file (it may be truncated or tampered with)") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise HwnasError(f"{path}: not an hwnas predictor file (field 'format' is not {FORMAT!r})")
    if data.get("version") != VERSION:
        raise HwnasError(f"{path}: predictor format version {data.get('version')!r} is not supported ({VERSION})")
    return data, digest


def predictor_file(path: str | Path) -> Path:
    """``path``, or the one predictor .json of the folder ``path``."""
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*.json"))
        if len(candidates) != 1:
            raise HwnasError(f"{path}: expected exactly one predictor .json in the folder, found {len(candidates)}")
        path = candidates[0]
    return path


def other_device(path: str | Path) -> str | None:
    """A one-line warning when the predictor at ``path`` was not fitted on this machine (None when it was)."""
    from hwnas.latency_data import describe_this_device, device_mismatch

    path = predictor_file(path)
    data = read_header(path)
    device = data.get("device") if isinstance(data.get("device"), dict) else {}
    this = describe_this_device()
    why = device_mismatch(device, this, data.get("runtime"))
    if why is None:
        return None
    if "cpu" not in device and device.get("description"):
        why = str(device["description"])  # a phone or a published benchmark device
    return (f"predictor {path} is for device {device.get('name', '?')!r}, not this machine {this['name']!r} "
            f"({why}): its milliseconds are that device's")


def warn_if_other_device(path: str | Path) -> None:
    """Print :func:`other_device`'s warning, if any, as one line on stderr."""
    import sys

    warning = other_device(path)
    if warning:
        print(f"hwnas: warning: {warning}", file=sys.stderr)


def load_predictor(path: str | Path, space: str | None = None, device: str | None = None) -> LatencyPredictor:
    """Load a predictor; refuse one fitted for another space (or device name) when ``space`` (``device``) is given."""
    path = predictor_file(path)
    data, digest = _read_header(path)
    kind = data.get("type")
    _import_builtin_types()
    if kind not in _LOADERS:
        raise HwnasError(f"{path}: unknown predictor type {kind!r}; known: {', '.join(sorted(_LOADERS))}")
    pred_space = data.get("space")
    if space is not None and pred_space is not None and pred_space != space:
        raise HwnasError(f"{path}: predictor was fitted for space {pred_space!r}, not {space!r}")
    pred_device = data.get("device", {}).get("name") if isinstance(data.get("device"), dict) else None
    if device is not None and pred_device != device:
        raise HwnasError(f"{path}: predictor was fitted for device {pred_device!r}, not {device!r}")
    try:
        predictor = _LOADERS[kind](data, path)
    except HwnasError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise HwnasError(f"{path}: malformed predictor ({type(exc).__name__}: {exc})") from None
    predictor.file_sha256 = digest
    return predictor


def content_fingerprint(predictor: LatencyPredictor | None) -> str | None:
    """What a resumed run compares to know its predictor is the same: the SHA-256 of the file a loaded predictor
    came from, and of its fallback regressor's file when it names one (None: no predictor, the analytic proxy)."""
    from hwnas.data import file_sha256

    if predictor is None:
        return None
    base = getattr(predictor, "base", predictor)  # a leveled predictor: the wrapped one's files
    parts = [getattr(base, "file_sha256", None) or type(base).__name__]
    fallback, path = getattr(base, "fallback_name", None), getattr(base, "path", None)
    if isinstance(fallback, str) and path is not None and (Path(path).parent / fallback).exists():
        parts.append(file_sha256(Path(path).parent / fallback))
    return "+".join(parts)


def _import_builtin_types() -> None:
    """Import the modules that register the built-in predictor types."""
    import importlib
    import importlib.util

    for module in BUILTIN_TYPE_MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


# Modules that call register_type (added as predictor types land).
BUILTIN_TYPE_MODULES = [
    "hwnas.predictors.lut",
    "hwnas.predictors.regressor",
    "hwnas.predictors.whole_model",
]
