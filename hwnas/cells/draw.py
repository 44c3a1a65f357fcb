"""Pictures: a drawn cell (matplotlib, Agg) and the edge-entropy curves of searches."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.patches import FancyArrowPatch

from hwnas.cells.genotype import CellSpec, Genotype
from hwnas.cells.ops import PRIMITIVES
from hwnas.plots import pyplot, save_figure

plt = pyplot()

COLORS = dict(zip(PRIMITIVES, ["#999999", "#2ca02c", "#1f77b4", "#17becf", "#9467bd", "#e377c2",
                               "#d62728", "#ff7f0e"]))


def _positions(nodes: int) -> dict[int | str, tuple[float, float]]:
    pos: dict[int | str, tuple[float, float]] = {0: (0.0, 1.0), 1: (0.0, -1.0)}
    for j in range(nodes):  # zig-zag left to right
        pos[j + 2] = (1.6 + 1.5 * j, 0.9 if j % 2 == 0 else -0.9)
    pos["out"] = (1.2 + 1.1 * nodes + 0.6, 0.0)
    return pos


def draw_cell(ax, cell: CellSpec, title: str) -> None:
    """Draw one cell: inputs c_{k-2}, c_{k-1}, intermediate nodes, the concatenated output."""
    nodes = len(cell)
    pos = _positions(nodes)
    labels = {0: "$c_{k-2}$", 1: "$c_{k-1}$", "out": "$c_{k}$", **{j + 2: str(j) for j in range(nodes)}}
    for j, inputs in enumerate(cell):
        for k, (op, inp) in enumerate(inputs):
            (x0, y0), (x1, y1) = pos[inp], pos[j + 2]
            rad = 0.25 if (j + k) % 2 else -0.25
            ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), connectionstyle=f"arc3,rad={rad}",
                                         arrowstyle="-|>", mutation_scale=12, color=COLORS[op], lw=1.8,
                                         shrinkA=14, shrinkB=14))
            # midpoint of matplotlib's arc3 Bezier: mid + rad / 2 * (dy, -dx)
            lx, ly = (x0 + x1) / 2 + rad / 2 * (y1 - y0), (y0 + y1) / 2 - rad / 2 * (x1 - x0)
            ax.text(lx, ly, op, fontsize=7, color=COLORS[op], ha="center", va="center",
                    bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.85))
    for j in range(nodes):
        (x0, y0), (x1, y1) = pos[j + 2], pos["out"]
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=8, color="#cccccc",
                                     lw=0.8, shrinkA=14, shrinkB=14, linestyle="--"))
    for key, (x, y) in pos.items():
        color = "#c6dbef" if key in (0, 1) else "#fdd0a2" if key == "out" else "#e5f5e0"
        no_input = isinstance(key, int) and key >= 2 and not cell[key - 2]
        ax.text(x, y, labels[key], ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round,pad=0.35", fc=color, ec="red" if no_input else "black"))
    ax.set_title(title, fontsize=10)
    xs = [p[0] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(-2.2, 2.2)
    ax.axis("off")


def draw_genotype(genotype: Genotype, path: str | Path, title: str = "") -> Path:
    """Normal and reduction cell side by side in one PNG."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    draw_cell(axes[0], genotype.normal, f"{title} normal cell".strip())
    draw_cell(axes[1], genotype.reduce, f"{title} reduction cell".strip())
    return save_figure(fig, path)


def plot_entropy(runs: dict[str, list[dict]], path: str | Path) -> Path:
    """Mean edge entropy (normal and reduction cells) against epochs, one colour per run."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (name, rows) in enumerate(runs.items()):
        color = f"C{i}"
        epochs = [r["epoch"] for r in rows]
        ax.plot(epochs, [r["normal"] for r in rows], color=color, label=f"{name} normal")
        ax.plot(epochs, [r["reduce"] for r in rows], color=color, linestyle="--", label=f"{name} reduce")
    ax.axhline(math.log(len(PRIMITIVES)), color="gray", lw=0.8, linestyle=":", label="uniform (ln 8)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean edge entropy (nats)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
