"""Re-time a device's operator and whole-model tables in interleaved rounds.

On a shared machine the speed of one core drifts with what runs beside it, so
operators timed in one hour and whole models timed in another disagree for
reasons no predictor can learn. This script exports every 1-thread operator
(fp32 and int8) and whole model of one runtime in a table once (kept in a cache
folder), then times all of them in ``--rounds`` rounds, each round in a fresh
random order, so operators and models see the same mix of conditions. Each
file's latency is the median of its per-round medians; the spread is their
IQR. The table is then rewritten with these values (rows of other runtimes are
kept as they are; the previous table stays in git history).

Resumable: exported files and finished round results (``rounds.jsonl`` in the
cache folder) are reused when the same command runs again; delete
``rounds.jsonl`` to time a new session.

    .venv/bin/python tools/remeasure_interleaved.py --device amd-epyc-2c --runtime tflite --rounds 5
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
from dataclasses import replace
from pathlib import Path

from hwnas.arch import Architecture
from hwnas.errors import HwnasError
from hwnas.latency_data import append_model_row, append_op_row, read_model_rows, read_op_rows
from hwnas.profiler import Exporter
from hwnas.progress import progress_bar
from hwnas.runners import get_runner

ROOT = Path(__file__).resolve().parent.parent


def _iqr(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]


def export_all(jobs: dict[str, tuple], runner, cache: Path) -> dict[str, Path]:
    """Export every job (name -> (operators, dtype, single operator?)) once into ``cache``; files are reused."""
    files = {name: cache / f"{name}{runner.suffix}" for name in jobs}
    todo = [name for name, path in files.items() if not path.exists()]
    exporters = {}
    try:
        for name in progress_bar(todo, desc=f"export {runner.name}", unit="file", enabled=bool(todo)):
            ops, dtype, per_op = jobs[name]
            if (dtype, per_op) not in exporters:
                exporters[dtype, per_op] = Exporter(runner, dtype, cache, per_op=per_op)
            os.replace(exporters[dtype, per_op].export(ops, f"tmp-{name}"), files[name])
    finally:
        for exporter in exporters.values():
            exporter.close()
    return files


def time_rounds(files: dict[str, Path], runner, rounds: int, log: Path, seed: int) -> dict[str, list[float]]:
    """Per file, its median latency in each of the first ``rounds`` rounds (rounds already in ``log`` are reused;
    a last line cut short by an interruption is ignored)."""
    results: dict[str, dict[int, float]] = {name: {} for name in files}
    text = log.read_text() if log.exists() else ""
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec["name"] in results and rec["round"] < rounds:
            results[rec["name"]][rec["round"]] = rec["median_ms"]
    with open(log, "a") as out:
        if text and not text.endswith("\n"):
            out.write("\n")  # end the cut-short line so the next record stands on its own
        for r in range(rounds):
            order = [n for n in files if r not in results[n]]
            random.Random(seed * 1000 + r).shuffle(order)
            for name in progress_bar(order, desc=f"{runner.name} round {r + 1}/{rounds}", unit="file"):
                ms = runner.time(files[name]).median_ms
                results[name][r] = ms
                out.write(json.dumps({"round": r, "name": name, "median_ms": ms}) + "\n")
                out.flush()
    return {name: [per[r] for r in sorted(per)] for name, per in results.items()}


def file_name(kind: str, identity: str, dtype: str) -> str:
    """A cache name from what a row measures (not its position, which other tables' rows do not fix)."""
    return f"{kind}-{dtype}-" + hashlib.sha1(identity.encode()).hexdigest()[:16]


def rewrite(path: Path, rows: list, updated: dict, append) -> None:
    """Replace ``path`` by ``rows``, the ones in ``updated`` (by index) with their new values."""
    tmp = path.with_suffix(".csv.tmp")
    tmp.unlink(missing_ok=True)
    for i, row in enumerate(rows):
        append(tmp, updated.get(i, row))
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", required=True, help="table name: latency_data/<device>.csv and <device>-models.csv")
    p.add_argument("--runtime", choices=("tflite", "onnxruntime"), required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=str(ROOT / "latency_data"))
    p.add_argument("--cache", default=str(Path.home() / ".cache" / "hwnas" / "interleaved"))
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, got {args.rounds}")

    data = Path(args.data)
    ops_path, models_path = data / f"{args.device}.csv", data / f"{args.device}-models.csv"
    op_rows, model_rows = read_op_rows(ops_path), read_model_rows(models_path)
    pick_op = [i for i, r in enumerate(op_rows) if (r.runtime, r.threads) == (args.runtime, 1)]
    pick_model = [i for i, r in enumerate(model_rows) if (r.runtime, r.threads) == (args.runtime, 1)]
    if not pick_op or not pick_model:
        print(f"no 1-thread {args.runtime} rows to re-time in {ops_path} / {models_path}", file=sys.stderr)
        return 2
    op_names = {i: file_name("op", op_rows[i].op.key(), op_rows[i].dtype) for i in pick_op}
    model_names = {i: file_name("model", model_rows[i].arch_file, model_rows[i].dtype) for i in pick_model}
    jobs = {op_names[i]: ([op_rows[i].op], op_rows[i].dtype, True) for i in pick_op}
    for i in pick_model:
        row = model_rows[i]
        jobs[model_names[i]] = (Architecture.load(ROOT / row.arch_file).ops(), row.dtype, False)
    cache = Path(args.cache) / args.device / args.runtime
    cache.mkdir(parents=True, exist_ok=True)

    runner = get_runner(args.runtime, threads=1)
    files = export_all(jobs, runner, cache)
    per_round = time_rounds(files, runner, args.rounds, cache / "rounds.jsonl", args.seed)

    def retimed(row, name):
        values = per_round[name]
        return replace(row, median_ms=statistics.median(values), spread_ms=_iqr(values), repeats=len(values))

    new_ops = {i: retimed(op_rows[i], op_names[i]) for i in pick_op}
    new_models = {i: retimed(model_rows[i], model_names[i]) for i in pick_model}
    rewrite(ops_path, op_rows, new_ops, append_op_row)
    rewrite(models_path, model_rows, new_models, append_model_row)
    rel = [_iqr(v) / statistics.median(v) for v in per_round.values() if statistics.median(v) > 0]
    print(f"{args.runtime}: re-timed {len(new_ops)} operators and {len(new_models)} models in {args.rounds} rounds; "
          f"IQR/median across rounds: median {statistics.median(rel):.2%}, "
          f"p90 {statistics.quantiles(rel, n=10)[-1]:.2%}; wrote {ops_path} and {models_path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HwnasError as exc:
        sys.exit(f"remeasure_interleaved: error: {exc}")
