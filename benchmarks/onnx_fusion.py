"""Which operator pairs ONNX Runtime (CPU EP, 1 thread, ORT_ENABLE_ALL as hwnas's runner) executes as one kernel.

    python benchmarks/onnx_fusion.py [--rounds 5] [--cache runs/onnx-fusion]

Each pair sits between two 1x1 convs (so its input and output are in ORT's
blocked NCHWc layout, as inside a network): the node types left in ORT's optimised graph,
and the pair's time (the two convs alone subtracted) against its first part
(after the same conv; an activation first: timed alone) and its second part
timed alone (the empty model subtracted); interleaved rounds, CPU time. The
optimised graph decides whether ORT runs one kernel; the times show what the
second part still adds inside it (a fused sigmoid is still computed). The node counts of exported torchvision networks before and after
ORT's optimiser are printed too. The rules in
:data:`hwnas.kernels.onnx_detect.FUSION_RULES` follow these figures.
"""

from __future__ import annotations

import argparse
import collections
import sys
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
    "maxpool+relu": [{"type": "maxpool", "h": 28, "c": 64, "k": 3, "s": 1}, {"type": "relu", "h": 26, "c": 64}],
    "fc+relu": [{"type": "fc", "cin": 1024, "cout": 1000}, {"type": "relu", "h": 1, "c": 1000}],
}


def _stem(spec: dict) -> dict | None:
    """A 1x1 conv put before and after a 4-D kernel (None for fully connected): the kernel's input and output are
    then in ORT's blocked NCHWc layout, as inside a network, and the models differ only in the pair."""
    if spec["type"] == "fc":
        return None
    c = spec.get("cin", spec.get("c"))
    return {"type": "conv", "h": spec["h"], "cin": c, "cout": c, "k": 1, "s": 1, "groups": 1, "act": "none"}


def _model(specs: list[dict], stem: dict | None):
    """``stem``, ``specs`` and ``stem`` again in a chain; a two-input add or mul takes, besides the previous output, the input of
    the chain (the stem's output): a residual add after a conv, x * sigmoid(x) after a sigmoid."""
    import onnx
    from onnx import TensorProto, helper

    from hwnas.kernels.onnx_kernels import OPSET, add_kernel, GraphBuilder, input_shapes

    b = GraphBuilder(0)
    x = add_kernel(b, stem, "x") if stem else "x"
    y = x
    for spec in specs:
        if spec["type"] in ("add", "mul") and not spec.get("broadcast"):
            y = b.node("Add" if spec["type"] == "add" else "Mul", [y, x])[0]
        else:
            y = add_kernel(b, spec, y)
    if stem:  # and a 1x1 conv after: ORT leaves a HardSwish unfused when its output is the graph's output
        y = add_kernel(b, stem, y)
    first = stem or specs[0]
    graph = helper.make_graph(b.nodes, "pair", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                              input_shapes(first)["x"])],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def main(argv=None) -> int:
    import onnx

    from hwnas.kernels.onnx_kernels import kernel_model
    from hwnas.kernels.onnx_profile import optimised_ops
    from hwnas.kernels.profile import POLICY
    from hwnas.runners.onnxruntime import OnnxRuntimeRunner
    from hwnas.timing_rounds import file_latencies, time_rounds

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cache", type=Path, default=Path("runs/onnx-fusion"))
    p.add_argument("--zoo", type=Path, default=Path("runs/zoo-onnx"),
                   help="exported torchvision networks (benchmarks/model_zoo_onnx.py): their node counts before and "
                        "after ORT's optimiser are printed too")
    args = p.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    files = {"empty": args.cache / "empty.onnx"}
    onnx.save(kernel_model({"type": "empty", "h": 1, "c": 1}), files["empty"])
    for i, (label, pair) in enumerate(PAIRS.items()):
        stem = _stem(pair[0])
        for tag, specs in (("pair", pair), ("a", pair[:1]), ("stem", [])):
            if stem or tag != "stem":
                files[f"{tag}{i}"] = args.cache / f"{tag}{i}.onnx"
                onnx.save(_model(specs, stem), files[f"{tag}{i}"])
        for tag, spec in (("alone_a", pair[0]), ("alone_b", pair[1])):
            files[f"{tag}{i}"] = args.cache / f"{tag}{i}.onnx"
            onnx.save(kernel_model(spec), files[f"{tag}{i}"])
    runner = OnnxRuntimeRunner(threads=1, policy=POLICY)
    latency = file_latencies(time_rounds(files, runner, args.rounds, args.cache / "rounds.jsonl", 0))
    ms = {name: v[0] for name, v in latency.items()}
    print(f"empty model: {ms['empty']:.4f} ms")
    print("| pair (between two 1x1 convs) | ORT's optimised graph | pair ms | first ms | pair - first | "
          "second alone ms | ORT runs |")
    print("|---|---|---:|---:|---:|---:|---|")
    for i, (label, pair) in enumerate(PAIRS.items()):
        base = ms.get(f"stem{i}", ms["empty"])
        both = ms[f"pair{i}"] - base
        # a conv keeps its own kernel after the stem; an activation first would fuse into the stem: time it alone
        a = ms[f"a{i}"] - base if pair[0]["type"] in ("conv", "dwconv", "maxpool", "fc") else \
            ms[f"alone_a{i}"] - ms["empty"]
        b = ms[f"alone_b{i}"] - ms["empty"]
        ops = [o for o in optimised_ops(files[f"pair{i}"]) if not o.startswith("Reorder")]
        nodes = len(ops) - (2 if _stem(pair[0]) else 0)
        print(f"| {label} | {', '.join(ops)} | {both:.4f} | {a:.4f} | {both - a:+.4f} | {b:.4f} | "
              f"{'one kernel' if nodes == 1 else f'{nodes} kernels'} |")
    for name in ("resnet18-64", "mobilenet_v3_small-w1.0-96", "efficientnet_b0-64", "densenet121-64",
                 "shufflenet_v2_x0_5-96"):
        path = args.zoo / f"{name}.onnx"
        if path.exists():
            before = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
            after = collections.Counter(optimised_ops(path))
            print(f"{name}: exported {dict(before)}\n    ORT runs {dict(after)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
