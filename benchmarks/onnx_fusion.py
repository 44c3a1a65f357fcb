"""Which operator pairs ONNX Runtime (CPU EP, 1 thread, ORT_ENABLE_ALL as hwnas's runner) executes as one kernel.

    python benchmarks/onnx_fusion.py [--rounds 5] [--cache runs/onnx-fusion]

For each pair: the node types left in ORT's optimised graph, and the pair timed
as one model against its two parts timed alone (interleaved rounds, CPU time;
each part alone pays one model invoke, so the parts' sum subtracts one empty
model). A pair that costs about its first part (or ORT leaves one node) is
fused; one that costs about the sum of its parts is two kernels. The rules in
:data:`hwnas.kernels.onnx_detect.FUSION_RULES` follow these figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

CONV = {"type": "conv", "h": 28, "cin": 64, "cout": 64, "k": 3, "s": 1, "groups": 1, "act": "none"}
DW = {"type": "dwconv", "h": 28, "c": 192, "k": 3, "s": 1, "act": "none"}
EW = {"h": 28, "c": 64}
PAIRS = {
    "conv+relu": [CONV, {"type": "relu", **EW}],
    "conv+relu6 (Clip)": [CONV, {"type": "relu6", **EW}],
    "conv+hardswish": [CONV, {"type": "hardswish", **EW}],
    "conv+sigmoid": [CONV, {"type": "sigmoid", **EW}],
    "dwconv+relu6 (Clip)": [DW, {"type": "relu6", "h": 28, "c": 192}],
    "conv+add (residual)": [CONV, {"type": "add", **EW, "broadcast": False}],
    "swish (Sigmoid, Mul)": [{"type": "sigmoid", **EW}, {"type": "mul", **EW, "broadcast": False}],
    "bn+relu (no conv before)": [{"type": "bn", **EW}, {"type": "relu", **EW}],
    "hardsigmoid+mul (SE gate)": [{"type": "hardsigmoid", "h": 1, "c": 64},
                                  {"type": "mul", "h": 1, "c": 64, "broadcast": False}],
    "fc+relu": [{"type": "fc", "cin": 1024, "cout": 1000}, {"type": "relu", "h": 1, "c": 1000}],
}


def _second_input_is_first(spec: dict) -> dict:
    return {**spec, "self": True}


def optimised_ops(path: Path) -> list[str]:
    """The node types of ONNX Runtime's optimised graph of ``path`` (the runner's settings)."""
    import onnx
    import onnxruntime as ort

    from hwnas.runners.onnxruntime import OnnxRuntimeRunner

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "opt.onnx"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(out)
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        assert OnnxRuntimeRunner.name == "onnxruntime"
        return [n.op_type for n in onnx.load(str(out)).graph.node]


def _pair_model(specs: list[dict]):
    """The pair as one graph; a two-input second node (add, mul) takes the first node's output twice, or the
    graph input for a residual add after a conv."""
    import onnx
    from onnx import TensorProto, helper

    from hwnas.kernels.onnx_kernels import OPSET, _body, _Builder, input_shapes

    b = _Builder(0)
    y = _body(b, specs[0], "x")
    second = specs[1]
    if second["type"] in ("add", "mul") and not second.get("broadcast"):
        other = "x" if specs[0]["type"] == "conv" else y
        z = b.node("Add" if second["type"] == "add" else "Mul", [y, other])[0]
    else:
        z = _body(b, second, y)
    graph = helper.make_graph(b.nodes, "pair", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              input_shapes(specs[0])["x"])],
                              [helper.make_tensor_value_info(z, TensorProto.FLOAT, None)], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def main(argv=None) -> int:
    import onnx

    from hwnas.kernels.onnx_kernels import kernel_model
    from hwnas.kernels.profile import POLICY, spec_name
    from hwnas.runners.onnxruntime import OnnxRuntimeRunner
    from hwnas.timing_rounds import file_latencies, time_rounds

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cache", type=Path, default=Path("runs/onnx-fusion"))
    args = p.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    files = {}
    empty = {"type": "empty", "h": 1, "c": 1}
    for spec in [empty] + [s for pair in PAIRS.values() for s in pair]:
        files[spec_name(spec)] = args.cache / f"{spec_name(spec)}.onnx"
        onnx.save(kernel_model(spec), files[spec_name(spec)])
    for i, (label, pair) in enumerate(PAIRS.items()):
        files[f"pair{i}"] = args.cache / f"pair{i}.onnx"
        onnx.save(_pair_model(pair), files[f"pair{i}"])
    runner = OnnxRuntimeRunner(threads=1, policy=POLICY)
    latency = file_latencies(time_rounds(files, runner, args.rounds, args.cache / "rounds.jsonl", 0))
    e = latency[spec_name(empty)][0]
    print(f"empty model: {e:.4f} ms")
    print("| pair | ORT's optimised graph | pair ms | parts ms (sum - one invoke) | verdict |")
    print("|---|---|---:|---:|---|")
    for i, (label, pair) in enumerate(PAIRS.items()):
        a, b = (latency[spec_name(s)][0] for s in pair)
        both = latency[f"pair{i}"][0]
        ops = [o for o in optimised_ops(files[f"pair{i}"]) if not o.startswith("Reorder")]
        fused = len(ops) == 1 or both < a + 0.35 * (b - e)
        print(f"| {label} | {', '.join(optimised_ops(files[f'pair{i}']))} | {both:.4f} | {a:.4f} + {b:.4f} - {e:.4f}"
              f" = {a + b - e:.4f} | {'one kernel' if fused else 'two kernels'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
