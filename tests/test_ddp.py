"""The (weight-entangled) supernet search under torchrun with 2 CPU processes (gloo; gradients averaged by hand)."""

import json
import os
import subprocess
import sys

TINY_SET = ["--set", "resolution=16", "--set", "stages=[[24,1,2],[32,2,2]]", "--set", "head_channels=64"]


def test_two_cpu_processes_keep_gates_and_alphas_in_step(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node", "2",
           "-m", "hwnas", "search", *TINY_SET, "--mode", "proxyless", "--epochs", "2", "--warmup-epochs", "1",
           "--batch-size", "8", "--max-steps", "2", "--limit-train", "48", "--limit-val", "32",
           "--device", "cpu", "--threads", "1", "--budget-ms", "0.8", "--out", str(out), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((out / "derived.json").read_text())
    assert summary["ranks"] == 2
    assert summary["gate_trace_rank_difference"] == 0.0  # every rank ran the same sampled paths
    assert summary["alpha_max_rank_difference"] == 0.0
    assert summary["weight_max_rank_difference"] == 0.0  # gradients averaged over ranks
    assert summary["within_budget"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[1]["entropy"] < 1.0  # alphas moved in the search epoch
