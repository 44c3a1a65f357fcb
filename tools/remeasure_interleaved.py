"""Re-time a device's 1-thread operator and whole-model rows of one runtime in interleaved rounds.

A thin wrapper over :func:`hwnas.timing_rounds.retime` for tables that already
exist (every dtype and space in them, e.g. the committed reference tables):
each row's file is exported once into the cache, all of them are timed in
``--rounds`` rounds, each in a fresh random order, and each row is replaced in
place by the median of its round medians (spread: IQR over rounds; ``repeats`` =
rounds). Rows of other runtimes and thread counts are kept as they are. The
table's device description must be this machine's (a table measured elsewhere
is refused). Resumable: re-run the same command; ``--new-session`` times again.
To profile a space on a new machine use ``hwnas profile --models N --rounds R``.

    .venv/bin/python tools/remeasure_interleaved.py --device amd-epyc-2c --runtime tflite --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from hwnas.arch import Architecture
from hwnas.errors import HwnasError
from hwnas.latency_data import describe_this_device, read_model_rows, read_op_rows
from hwnas.profiler import prepare_output
from hwnas.runners import get_runner
from hwnas.timing_rounds import cache_folder, retime, start_new_session, store_rows

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", required=True, help="table name: latency_data/<device>.csv and <device>-models.csv")
    p.add_argument("--runtime", choices=("tflite", "onnxruntime"), required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=str(ROOT / "latency_data"))
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "hwnas" / "rounds"))
    p.add_argument("--new-session", action="store_true", help="time again from round 1 (old log kept)")
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")

    data = Path(args.data)
    ops_path, models_path = data / f"{args.device}.csv", data / f"{args.device}-models.csv"
    runner = get_runner(args.runtime, threads=1)
    device = dict(describe_this_device(args.device), runners={runner.name: runner.describe()})
    op_rows = prepare_output(ops_path, device, runner.name, read_op_rows)  # refuses another machine's table
    model_rows = prepare_output(models_path, device, runner.name, read_model_rows)
    ops = [(r.op, r.dtype) for r in op_rows if (r.runtime, r.threads) == (args.runtime, 1)]
    models = [(Architecture.load(ROOT / r.arch_file), r.arch_file, r.dtype) for r in model_rows
              if (r.runtime, r.threads) == (args.runtime, 1)]
    if not ops or not models:
        print(f"no 1-thread {args.runtime} rows to re-time in {ops_path} / {models_path}", file=sys.stderr)
        return 2
    cache = cache_folder(args.cache, device, runner)
    if args.new_session:
        start_new_session(cache)
    result = retime(ops, models, runner, args.rounds, cache, args.seed)
    store_rows(ops_path, result.op_rows, "op")
    store_rows(models_path, result.model_rows, "model")
    rel = result.rel_spread
    print(f"{args.runtime}: re-timed {len(result.op_rows)} operators and {len(result.model_rows)} models in "
          f"{args.rounds} rounds; IQR/median across rounds: median {statistics.median(rel):.2%}, "
          f"p90 {statistics.quantiles(rel, n=10)[-1] if len(rel) > 1 else rel[0]:.2%}; wrote {ops_path} and "
          f"{models_path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HwnasError as exc:
        sys.exit(f"remeasure_interleaved: error: {exc}")
