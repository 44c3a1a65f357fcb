"""Analytic costs against an independent count, on many random architectures of every preset.

FLOPs (multiply-adds) against ``torch.utils.flop_counter.FlopCounterMode`` / 2 (it counts a
multiply-add as two FLOPs) and parameters against the built PyTorch model; prints the largest
relative difference per space.

    .venv/bin/python benchmarks/cost_agreement.py --archs 20
"""

from __future__ import annotations

import argparse
import random

import torch
from torch.utils.flop_counter import FlopCounterMode

from hwnas.arch import sample_architecture
from hwnas.builder import build_model
from hwnas.spaces import PRESETS, get_space


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", type=int, default=20, help="architectures per 32 px space (224 px spaces: a quarter)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    for name in PRESETS:
        space = get_space(name)
        res = space.params["resolution"]
        count = args.archs if res <= 32 else max(1, args.archs // 4)
        rng = random.Random(args.seed)
        worst_flops = worst_params = 0.0
        for _ in range(count):
            arch = sample_architecture(space, rng)
            model = build_model(arch).eval()
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(torch.zeros(1, 3, res, res))
            cost = arch.cost()
            flops = counter.get_total_flops() / 2
            params = sum(t.numel() for t in model.parameters())
            worst_flops = max(worst_flops, abs(cost.flops - flops) / flops)
            worst_params = max(worst_params, abs(cost.params - params) / params)
        print(f"{name:18s} {count:3d} architectures: largest relative difference FLOPs {worst_flops:.2e}, "
              f"params {worst_params:.2e}")


if __name__ == "__main__":
    main()
