"""``hwnas predict``: predicted latency block by block, of an architecture file or a model file.

``MODEL`` is an architecture JSON (its blocks are known) or a ``.tflite`` /
``.onnx`` file, whose hwnas operators are recognised from the graph
(:mod:`hwnas.modelgraph`); for model files a lookup table prices operators it
lacks with its fallback regressor, and nodes that are no hwnas operator are
named and given no time.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hwnas.cli.jsonout import add_json_argument, messages_to_stderr, print_json
from hwnas.errors import HwnasError


def _load(args, space: str | None):
    from hwnas.predictors import load_predictor
    from hwnas.predictors.lut import LookupTable

    predictor = load_predictor(args.predictor, space=space)
    if args.no_fallback and not isinstance(predictor, LookupTable):
        raise HwnasError("--no-fallback applies to lookup-table predictors only")
    return predictor


RUNTIMES = {"tflite": "tflite", "onnx": "onnxruntime"}  # a model file's format -> the runtime that runs it


def this_machines_predictor(space, runtime: str, dtype: str) -> str:
    """The predictor ``hwnas run`` would use on this machine (its default config): a committed one in
    predictors/ fitted on this CPU, else the one it fitted earlier in runs/main/predictor/. Says which on
    stderr; HwnasError saying how to get one when there is none (profiling takes minutes: not done here)."""
    from pathlib import Path

    from hwnas.latency_data import describe_this_device
    from hwnas.pipeline import find_reference_predictor
    from hwnas.predictors.fit import output_stem
    from hwnas.run_config import default_config

    config = default_config()
    lat, threads = config["latency"], config["latency"]["threads"]
    this = describe_this_device()
    path, _, why = find_reference_predictor(space, runtime, dtype, threads, Path(lat["reference_predictors"]), this)
    stem = output_stem(this["name"], runtime, dtype, threads, None, "")
    fitted = Path(config["run"]["out"]) / "predictor" / f"{stem}.json"
    if path is None and fitted.is_file():
        path, why = fitted, f"fitted on this machine by `hwnas run` ({fitted})"
    if path is None:
        raise HwnasError(f"no {runtime} {dtype} predictor for this machine ({this['name']}): {why}. Get one with "
                         f"`hwnas run` (profiles this CPU, about 17 minutes, and fits {fitted}) or `hwnas profile` + "
                         "`hwnas fit`, or name one with --predictor")
    print(f"hwnas: predictor: {why} (--predictor to use another)", file=sys.stderr)
    return str(path)


def _breakdown(args):
    from hwnas.modelgraph import model_format, read_model
    from hwnas.predictors.breakdown import arch_breakdown, model_breakdown
    from hwnas.predictors.lut import LookupTable

    if model_format(args.model) is None:
        from hwnas.arch import Architecture

        arch = Architecture.load(args.model)
        args.predictor = args.predictor or this_machines_predictor(arch.space, "tflite", "fp32")
        predictor = _load(args, arch.space_name)
        if isinstance(predictor, LookupTable) and predictor.fallback_name and not args.no_fallback:
            predictor.enable_fallback()
        return arch_breakdown(arch, predictor, args.predictor, args.model)
    from hwnas.cli.predict_kernels import kernel_result, this_machines_kernels

    graph = read_model(args.model)
    kernels = args.kernels or (None if args.predictor else this_machines_kernels(RUNTIMES[graph.format], "fp32"))
    if args.kernels:
        return kernel_result(graph, args.kernels, f"kernel predictor {args.kernels} (--kernels)")
    try:
        args.predictor = args.predictor or this_machines_predictor(
            None, RUNTIMES[graph.format], graph.dtype if graph.dtype in ("fp32", "int8") else "fp32")
    except HwnasError:
        if kernels is None:
            raise
        return kernel_result(graph, kernels, "no operator table for this machine: kernel predictor")
    predictor = _load(args, None)
    if isinstance(predictor, LookupTable) and predictor.fallback_name:
        predictor.enable_fallback()
    b = model_breakdown(graph, predictor, args.predictor)
    if kernels is not None and (b.unrecognised or any(r.source != "table" for r in b.blocks)):
        return kernel_result(graph, kernels, "not a search-space model (nodes outside hwnas operators or operators "
                                             "missing from the table): priced by the kernel predictor")
    return b


def _print(b) -> None:
    p = b.predictor
    what = b.kind if b.kind == "architecture" else f"{b.kind} {b.model_dtype} model, {len(b.blocks)} hwnas operators" \
        f" recognised, {len(b.unrecognised)} node(s) not"
    print(f"{b.file}: {what}; predictor {p['path']} ({p['type']}, {p['device']}, {p['runtime']} {p['dtype']})")
    print(f"{'block':14s} {'operator':48s} {'ms':>9s}  {'source':11s} {'nodes' if b.kind != 'architecture' else ''}".rstrip())
    for r in b.blocks:
        extra = f"{r.nodes}" + (f"  ({r.note})" if r.note else "")
        print(f"{r.label:14s} {r.operator:48s} {r.ms:9.4f}  {r.source:11s} {extra}".rstrip())
    print(f"{'overhead':14s} {'':48s} {b.overhead_ms:9.4f}")
    if abs(b.correction_ms) > 1e-9:
        print(f"{'correction':14s} {'':48s} {b.correction_ms:9.4f}  (whole-network correction of the predictor)")
    print(f"{'total':14s} {'':48s} {b.total_ms:9.4f} ms")
    if b.unrecognised:
        print(f"not recognised as hwnas operators, given no time ({len(b.unrecognised)}):")
        for u in b.unrecognised:
            print(f"  node {u['node']} {u['op']} {u['name']!r}: {u['reason']}")


def _predict(args) -> int:
    from hwnas.predictors import other_device

    with messages_to_stderr(args.json):
        b = _breakdown(args)
        if isinstance(b, dict):  # the kernel predictor's answer (hwnas.cli.predict_kernels)
            from hwnas.cli.predict_kernels import print_kernels

            for warning in b["warnings"]:
                print(f"hwnas: warning: {warning}", file=sys.stderr)
            if not args.json:
                print_kernels(b)
    if isinstance(b, dict):
        if args.json:
            print_json(b)
        return 0
    with messages_to_stderr(args.json):
        device = other_device(args.predictor)
        if device:
            b.warnings.insert(0, device)
        for warning in b.warnings:
            print(f"hwnas: warning: {warning}", file=sys.stderr)
        if not args.json:
            _print(b)
    if args.json:
        print_json(b.to_dict())
    return 0


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict the latency of an architecture or a .tflite/.onnx model, block by block")
    p.add_argument("model", metavar="MODEL", help="architecture JSON file, or a .tflite / .onnx model file")
    p.add_argument("--predictor", help="predictor file (e.g. predictors/<device>-tflite-fp32.json; default: this "
                                       "machine's, found as `hwnas run` finds it, named on stderr)")
    p.add_argument("--no-fallback", action="store_true",
                   help="architecture files, lookup table: fail on an operator missing from the table instead of "
                        "pricing it with the table's fallback regressor (the 'source' column says which priced "
                        "each block)")
    p.add_argument("--kernels", type=Path, help="model files: price with this kernel predictor (predictors/kernels/"
                                                "<device>-tflite-fp32-t1.json or -onnxruntime-fp32-t1.json; default: "
                                                "this machine's for the file's runtime, used for models that are "
                                                "not from a search space)")
    add_json_argument(p)
    p.set_defaults(func=_predict)
