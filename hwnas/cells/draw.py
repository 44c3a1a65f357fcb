"""Pictures: a drawn cell (matplotlib, Agg) and the edge-entropy curves of searches."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.patches import FancyArrowPatch
from matplotlib.path import Path as CurvePath

from hwnas.cells.genotype import CellSpec, Genotype
from hwnas.cells.ops import PRIMITIVES
from hwnas.plots import pyplot, save_figure

plt = pyplot()

COLORS = dict(zip(PRIMITIVES, ["#999999", "#2ca02c", "#1f77b4", "#17becf", "#9467bd", "#e377c2",
                               "#d62728", "#ff7f0e"]))


RISE = 0.28  # height of an input arc per node it spans (data units; nodes are 1 apart)
DIP = 0.18  # depth of an output (concatenation) arc per node it spans
BOX = (0.24, 0.14)  # half width / height of a node's box, where arcs start and end


def _arc(ax, x0: float, x1: float, height: float, color: str, width: float, style: str = "-",
         shift: tuple[float, float] = (0.0, 0.0)) -> tuple[float, float]:
    """A quadratic arc from node x0 to node x1 peaking at ``height``, its ends moved along x by ``shift`` (arcs
    sharing a node fan out), trimmed to the node boxes, with an arrow head; returns its apex."""
    t = np.linspace(0.0, 1.0, 200)[:, None]
    a, b = np.array([x0 + shift[0], 0.0]), np.array([x1 + shift[1], 0.0])
    c = np.array([(a[0] + b[0]) / 2, 2 * height])
    points = (1 - t) ** 2 * a + 2 * (1 - t) * t * c + t ** 2 * b

    def outside(x):
        return ((points[:, 0] - x) / BOX[0]) ** 2 + (points[:, 1] / BOX[1]) ** 2 > 1

    keep = outside(x0) & outside(x1)
    ax.add_patch(FancyArrowPatch(path=CurvePath(points[keep]), arrowstyle="-|>", mutation_scale=11, color=color,
                                 lw=width, linestyle=style, zorder=2))
    return (a[0] + b[0]) / 2, height


def _fan(count: int, index: int) -> float:
    """Offset of the ``index``-th of ``count`` arc ends at one node (spread over the node's box)."""
    return 0.0 if count < 2 else BOX[0] * 0.8 * (index / (count - 1) - 0.5)


def draw_cell(ax, cell: CellSpec, title: str) -> None:
    """Draw one cell as an arc diagram: c_{k-2}, c_{k-1}, the intermediate nodes and c_k on a line; each input edge
    an arc above it labelled with its operation (arcs rise with the distance they span, so labels never overlap),
    the concatenation into c_k as grey arcs below."""
    nodes = len(cell)
    x_out = nodes + 2
    labels = {0: "$c_{k-2}$", 1: "$c_{k-1}$", x_out: "$c_{k}$", **{j + 2: str(j) for j in range(nodes)}}
    edges = [(inp, j + 2, op) for j, inputs in enumerate(cell) for op, inp in inputs]
    # arc ends at a node, ordered so that taller arcs stay outside there (no crossing): leaving ones with the
    # farthest target on the left, arriving ones with the farthest source on the right
    leaving = {x: sorted((e for e in edges if e[0] == x), key=lambda e: -e[1]) for x in range(x_out)}
    arriving = {x: sorted((e for e in edges if e[1] == x), key=lambda e: -e[0]) for x in range(x_out)}
    top = 0.0
    for edge in edges:
        inp, node, op = edge
        shift = (_fan(len(leaving[inp]), leaving[inp].index(edge)) + 0.1,
                 _fan(len(arriving[node]), arriving[node].index(edge)) - 0.1)
        x, y = _arc(ax, inp, node, RISE * (node - inp), COLORS[op], 1.6, shift=shift)
        top = max(top, y)
        ax.text(x, y, op, fontsize=8, ha="center", va="center", zorder=3,
                bbox=dict(boxstyle="round,pad=0.2", fc="white", ec=COLORS[op], lw=1.2))
    for j in range(nodes):
        _arc(ax, j + 2, x_out, -DIP * (x_out - j - 2), "#aaaaaa", 0.9, "--")
    for x, label in labels.items():
        color = "#c6dbef" if x in (0, 1) else "#fdd0a2" if x == x_out else "#e5f5e0"
        no_input = 2 <= x < x_out and not cell[x - 2]
        ax.text(x, 0, label, ha="center", va="center", fontsize=11, zorder=4,
                bbox=dict(boxstyle="round,pad=0.35", fc=color, ec="red" if no_input else "black"))
    ax.set_title(title, fontsize=11)
    ax.set_xlim(-0.5, x_out + 0.5)
    ax.set_ylim(-DIP * nodes - 0.2, top + 0.25)
    ax.axis("off")


def draw_genotype(genotype: Genotype, path: str | Path, title: str = "") -> Path:
    """Normal cell above, reduction cell below, in one PNG."""
    deepest = max(j + 2 - inp for cell in (genotype.normal, genotype.reduce) for j, edges in enumerate(cell)
                  for _, inp in edges)
    nodes = len(genotype.normal)
    fig, axes = plt.subplots(2, 1, figsize=(1.5 * (nodes + 3), 2 * (1.2 + 0.5 * deepest)))
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
