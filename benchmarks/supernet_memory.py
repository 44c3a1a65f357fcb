"""Peak memory and time per training step: largest child vs entangled, proxyless and darts supernets.

Each configuration runs in a fresh subprocess so that its peak RSS (``ru_maxrss``)
is its own; on CUDA the peak allocated GPU memory is reported too. A supernet
step is one search iteration: a weight step on a training batch plus an
architecture step on a validation batch (the search loop's order); the child
step is one SGD step of the largest child (the most FLOPs at every position).
``entangled`` is the default search's step: the weight-entangled supernet's
sandwich step (largest child + one sampled child, distilled) and a binary-gated
architecture step; its largest child is the space's largest at the widest
stage widths, so the ``child`` row is measured at those widths too.

    .venv/bin/python benchmarks/supernet_memory.py --space proxyless-cifar --batch-size 16

Prints a markdown table (and writes it to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

CONFIGS = ("child", "entangled", "proxyless", "darts")


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(args) -> dict:
    import torch
    from torch.nn import functional as F

    from hwnas.builder import build_network
    from hwnas.costs import op_cost
    from hwnas.search.latency import latency_model, load_latency_predictor
    from hwnas.search.losses import resource_loss
    from hwnas.search.updates import StepContext, make_step
    from hwnas.spaces import get_space
    from hwnas.supernet import Supernet
    from hwnas.threads import use_torch_threads

    use_torch_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    space = get_space(args.space)
    res = space.params["resolution"]
    x = torch.randn(args.batch_size, 3, res, res, device=device)
    y = torch.randint(0, space.params["num_classes"], (args.batch_size,), device=device)
    warm = torch.nn.Conv2d(3, 8, 3, padding=1).to(device)  # initialise the runtime's pools before the baseline
    warm(x[:1]).sum().backward()
    del warm
    baseline_rss = _rss_mib()
    if args.config == "child":
        widest = space.at_widths([max(space.width_choices)] * space.num_stages) if space.searches_width else space
        choices = [pos.names[max(range(len(pos.ops)), key=lambda i: op_cost(pos.ops[i]).flops)]
                   for pos in widest.positions]
        model = build_network(widest.ops_for(choices)).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    elif args.config == "entangled":
        from hwnas.children import latency_table
        from hwnas.search.entangled_loop import arch_step, sandwich_backward
        from hwnas.search.plans import PlanMaker
        from hwnas.supernet.entangled import EntangledSupernet

        net = EntangledSupernet(space).to(device)
        table = latency_table(space, load_latency_predictor(space, None)[0])
        target = 0.5 * (table.min() + table.max())
        maker = PlanMaker(net, table, "proxyless", "tilt", target_ms=target, budget_ms=target / 0.95,
                          lambda_lat=1.0, generator=torch.Generator().manual_seed(0))
        opt_w = torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9)
        opt_a = torch.optim.Adam(net.arch_parameters(), lr=1e-3, betas=(0.0, 0.999))
        largest = table.largest_child()
        net.train()

        def step():
            maker.update_beta()
            opt_w.zero_grad(set_to_none=True)
            sandwich_backward(net, x, y, largest, maker.sample_child())
            opt_w.step()
            arch_step(net, maker, opt_a, (x, y), device)
    else:
        net = Supernet(space, args.config).to(device)
        lat = latency_model(space, *load_latency_predictor(space, None))
        net.set_latency(lat.per_position, lat.fixed_ms)
        ctx = StepContext(net=net, model=net, opt_w=torch.optim.SGD(net.weight_parameters(), lr=0.01, momentum=0.9),
                          opt_a=torch.optim.Adam(net.arch_parameters(), lr=1e-3, betas=(0.0, 0.999)),
                          generator=torch.Generator().manual_seed(0),
                          resource=lambda: resource_loss(net, 1.0, None, lat.max_ms, {}), sync=lambda g: None)
        stepper = make_step(args.config, ctx)
        net.train()

        def step():
            stepper.step((x, y), (x, y), update_arch=True)
    times = []
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    out = {"config": args.config, "step_ms": statistics.median(times) * 1e3,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "baseline_rss_mib": baseline_rss, "device": str(device)}
    if device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="proxyless-cifar")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", default=None, help="also write the table to this file")
    parser.add_argument("--config", choices=CONFIGS, help=argparse.SUPPRESS)  # worker mode
    args = parser.parse_args()
    if args.config:
        print(json.dumps(worker(args)))
        return 0
    rows = []
    for config in CONFIGS:
        options = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                   if k not in ("config", "out") and v is not None]
        cmd = [sys.executable, __file__, "--config", config] + options
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"{config}: {rows[-1]}", file=sys.stderr)
    child = rows[0]
    cuda = "cuda_peak_mib" in child
    head = ("| run | step time (ms) | x child | peak RSS (MiB) | RSS above start (MiB) | x child |"
            + (" CUDA peak (MiB) | x child |" if cuda else ""))
    lines = [f"space {args.space}, batch {args.batch_size}, {args.threads} thread(s), device {child['device']}, "
             f"median of {args.steps} steps", "", head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        above = r["peak_rss_mib"] - r["baseline_rss_mib"]
        child_above = child["peak_rss_mib"] - child["baseline_rss_mib"]
        line = (f"| {r['config']} | {r['step_ms']:.1f} | {r['step_ms'] / child['step_ms']:.2f} | "
                f"{r['peak_rss_mib']:.0f} | {above:.0f} | {above / child_above:.2f} |")
        if cuda:
            line += f" {r['cuda_peak_mib']:.0f} | {r['cuda_peak_mib'] / child['cuda_peak_mib']:.2f} |"
        lines.append(line)
    by = {r["config"]: r for r in rows}
    added = {k: r["peak_rss_mib"] - r["baseline_rss_mib"] for k, r in by.items()}
    lines += ["", f"entangled / child: step time {by['entangled']['step_ms'] / child['step_ms']:.2f}x, RSS above "
              f"start {added['entangled'] / added['child']:.2f}x"
              + (f", CUDA peak {by['entangled']['cuda_peak_mib'] / child['cuda_peak_mib']:.2f}x" if cuda else "")]
    lines += [f"darts / proxyless: step time {by['darts']['step_ms'] / by['proxyless']['step_ms']:.2f}x, "
              f"RSS above start {added['darts'] / added['proxyless']:.2f}x"
              + (f", CUDA peak {by['darts']['cuda_peak_mib'] / by['proxyless']['cuda_peak_mib']:.2f}x" if cuda else "")]
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
