"""A network's predicted latency block by block: from an architecture file or a model file.

``arch_breakdown(arch, predictor)`` prices the operators of an architecture;
``model_breakdown(graph, predictor)`` prices the hwnas operators recognised in
a TFLite or ONNX graph (:mod:`hwnas.modelgraph.recognise`), naming every node
it could not recognise (given no time). Both give a :class:`Breakdown`: one row
per block (label, operator, ms, where the ms came from), the predictor's
constant overhead, its correction for whole networks when it has one
(``whole_model`` predictors), and the total, which is what the predictor's
``predict_ops`` says for the priced operators.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from hwnas.errors import HwnasError
from hwnas.ops import OpSpec
from hwnas.predictors import LatencyPredictor

RUNTIME_OF_FORMAT = {"tflite": ("tflite", "adb-tflite"), "onnx": ("onnxruntime",)}


@dataclass
class Row:
    label: str
    operator: str
    ms: float
    source: str  # table | regressor | <predictor type> | none (no entry: no time)
    nodes: str = ""  # the graph nodes of the block (model files)
    note: str = ""


@dataclass
class Breakdown:
    file: str
    kind: str  # architecture | tflite | onnx
    predictor: dict
    blocks: list[Row]
    overhead_ms: float
    correction_ms: float
    total_ms: float
    model_dtype: str | None = None
    unrecognised: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def predictor_info(predictor: LatencyPredictor, path: str) -> dict:
    return {"path": str(path), "type": getattr(predictor, "type_name", "?"), "device": predictor.device.get("name"),
            "runtime": getattr(predictor, "runtime", None), "dtype": getattr(predictor, "dtype", None),
            "threads": getattr(predictor, "threads", None), "space": predictor.space}


def source_of(predictor: LatencyPredictor, op: OpSpec) -> str:
    """Where ``predictor.predict_op(op)`` takes its number from."""
    entries = getattr(predictor, "entries", None)
    if getattr(predictor, "type_name", None) == "lut":
        if op.key() in entries:
            return "table"
        return "identity" if op.is_identity else "regressor"
    return getattr(predictor, "type_name", "?")


def known_keys(predictor: LatencyPredictor) -> set[str]:
    """Operator keys the predictor knows: its entries and every operator of its space."""
    from hwnas.spaces import get_space

    keys = set(getattr(predictor, "entries", None) or {})
    if predictor.space:
        try:
            space = get_space(predictor.space, getattr(predictor, "space_params", None) or {})
        except HwnasError:  # a space that is not a chain preset (e.g. darts-cell)
            return keys
        keys.update(op.key() for op in space.unique_ops())
    return keys


def _finish(predictor: LatencyPredictor, ops: list[OpSpec], rows: list[Row], exact: bool) -> tuple[float, float]:
    """(correction, total): the total is the predictor's own for ``ops`` when every block was priced."""
    summed = predictor.overhead_ms + sum(r.ms for r in rows)
    total = predictor.predict_ops(ops) if exact else summed
    return total - summed, total


def arch_breakdown(arch, predictor: LatencyPredictor, predictor_path: str, file: str) -> Breakdown:
    """Every block of an architecture (stem, positions, head); a missing table entry is an error."""
    space = arch.space
    labelled = [("stem", op) for op in space.stem]
    labelled += [(f"pos{p.index}:{c}", p.op(c)) for p, c in zip(space.positions, arch.choices)]
    labelled += [("head", op) for op in space.head]
    rows = []
    for label, op in labelled:
        ms = 0.0 if op.kind == "zero" else predictor.predict_op(op)
        rows.append(Row(label, op.key(), ms, "zero" if op.kind == "zero" else source_of(predictor, op)))
    correction, total = _finish(predictor, arch.ops(), rows, exact=True)
    return Breakdown(file, "architecture", predictor_info(predictor, predictor_path), rows, predictor.overhead_ms,
                     correction, total)


def model_breakdown(graph, predictor: LatencyPredictor, predictor_path: str) -> Breakdown:
    """The recognised blocks of a model graph, priced; unrecognised nodes and unpriced blocks get no time."""
    from hwnas.modelgraph.recognise import choose_op, recognise

    found = recognise(graph)
    known = known_keys(predictor)
    rows, ops, warnings = [], [], []
    for i, block in enumerate(found.blocks):
        op = choose_op(block, known)
        try:
            ms, source = predictor.predict_op(op), source_of(predictor, op)
            ops.append(op)
        except HwnasError as exc:
            ms, source = 0.0, "none"
            warnings.append(f"block #{i} ({op.key()}) given no time: {exc}")
        rows.append(Row(f"#{i}", op.key(), ms, source, block.span, block.note))
    unrecognised = [{"node": u.node.index, "op": u.node.op, "name": u.node.name, "reason": u.reason}
                    for u in found.unrecognised]
    runtime = getattr(predictor, "runtime", None)
    if runtime and runtime not in RUNTIME_OF_FORMAT[graph.format]:
        warnings.append(f"the model is a {graph.format} file, the predictor is for {runtime}")
    dtype = getattr(predictor, "dtype", None)
    if dtype and dtype != graph.dtype:
        warnings.append(f"the model is {graph.dtype}, the predictor is for {dtype}")
    correction, total = _finish(predictor, ops, rows, exact=all(r.source != "none" for r in rows))
    return Breakdown(str(graph.path), graph.format, predictor_info(predictor, predictor_path), rows,
                     predictor.overhead_ms, correction, total, graph.dtype, unrecognised, warnings)
