"""``hwnas predict``: an architecture's predicted latency with a per-block breakdown."""

from __future__ import annotations

from hwnas.arch import Architecture


def _predict(args) -> int:
    from hwnas.predictors import load_predictor
    from hwnas.predictors.lut import LookupTable

    arch = Architecture.load(args.arch)
    predictor = load_predictor(args.predictor, space=arch.space_name)
    if args.fallback:
        if not isinstance(predictor, LookupTable):
            from hwnas.errors import HwnasError
            raise HwnasError("--fallback applies to lookup-table predictors only")
        predictor.enable_fallback()
    space = arch.space
    rows = [("stem", op) for op in space.stem]
    rows += [(f"pos{p.index}:{c}", p.op(c)) for p, c in zip(space.positions, arch.choices)]
    rows += [("head", op) for op in space.head]
    print(f"{args.arch}: {arch.space_name}, predictor {args.predictor} "
          f"({getattr(predictor, 'type_name', '?')}, {predictor.device.get('name')}, "
          f"{getattr(predictor, 'runtime', '?')} {getattr(predictor, 'dtype', '?')})")
    print(f"{'block':14s} {'operator':48s} {'ms':>9s}")
    total = 0.0
    for label, op in rows:
        ms = 0.0 if op.kind == "zero" else predictor.predict_op(op)
        total += ms
        print(f"{label:14s} {op.key():48s} {ms:9.4f}")
    print(f"{'overhead':14s} {'':48s} {predictor.overhead_ms:9.4f}")
    print(f"{'total':14s} {'':48s} {total + predictor.overhead_ms:9.4f} ms")
    return 0


def register(sub) -> None:
    p = sub.add_parser("predict", help="predict an architecture's latency, block by block")
    p.add_argument("arch", help="architecture JSON file")
    p.add_argument("--predictor", required=True, help="predictor file (e.g. predictors/<device>-tflite-fp32.json)")
    p.add_argument("--fallback", action="store_true",
                   help="lookup table: predict missing operators with its fallback regressor instead of failing")
    p.set_defaults(func=_predict)
