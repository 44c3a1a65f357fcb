"""Draw the package's layers from its import graph: docs/architecture.png and the module list of
docs/architecture.md (between its ``<!-- modules -->`` markers), one line per module from its docstring.

    python tools/architecture.py            # from the repository root

The graph is the one tests/test_layering.py checks (tools/import_graph.py): every module sits in its layer of
DESIGN.md, and the arrows between layers count the imports that point down (none may point up).
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from import_graph import LAYERS, layer_of, module_files, module_graph  # noqa: E402

PACKAGE = ROOT / "hwnas"
MARK_START, MARK_END = "<!-- modules -->", "<!-- /modules -->"


def role(path: Path) -> str:
    """The first line of a module's docstring."""
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else "(no docstring)"


def draw(graph: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    by_layer: dict[int, list[str]] = {}
    for module in graph:
        by_layer.setdefault(layer_of(module), []).append(module[len("hwnas."):] or "hwnas")
    down = Counter((layer_of(m), layer_of(t)) for m, edges in graph.items() for t in edges
                   if layer_of(t) < layer_of(m))
    fig, ax = plt.subplots(figsize=(13, 11))
    height = 1.0
    for index, (title, _) in enumerate(LAYERS):
        y = index * 1.35
        ax.add_patch(plt.Rectangle((0, y), 10, height, facecolor=plt.cm.Blues(0.12 + 0.07 * index),
                                   edgecolor="#345", lw=0.8))
        ax.text(0.1, y + height - 0.12, f"{index}  {title}", fontsize=10, fontweight="bold", va="top")
        names = sorted(by_layer.get(index, []))
        lines, line = [], ""
        for name in names:
            if len(line) + len(name) > 125:
                lines.append(line)
                line = ""
            line += ("  " if line else "") + name
        lines.append(line)
        ax.text(0.1, y + height - 0.38, "\n".join(lines), fontsize=7.2, va="top", family="monospace")
        if index:  # the imports that cross down from this layer or above into the layers below
            crossing = sum(n for (src, dst), n in down.items() if src >= index > dst)
            ax.annotate("", xy=(10.35, y - 0.33), xytext=(10.35, y + 0.02),
                        arrowprops={"arrowstyle": "->", "color": "#345"})
            ax.text(10.45, y - 0.17, f"{crossing} imports cross", fontsize=7, va="center")
    ax.set_xlim(-0.1, 12)
    ax.set_ylim(-0.2, len(LAYERS) * 1.35)
    ax.axis("off")
    ax.set_title(f"hwnas: {len(graph)} modules in {len(LAYERS)} layers; imports point down only "
                 "(tests/test_layering.py)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def module_list(graph: dict) -> str:
    files = module_files(PACKAGE)
    out = []
    for index, (title, _) in enumerate(LAYERS):
        out.append(f"\n**{index}. {title}**\n")
        for module in sorted(m for m in graph if layer_of(m) == index):
            out.append(f"- `{module}`: {role(files[module])}")
    return "\n".join(out) + "\n"


def main() -> int:
    graph = module_graph(PACKAGE)
    draw(graph, ROOT / "docs" / "architecture.png")
    doc = ROOT / "docs" / "architecture.md"
    text = doc.read_text()
    start, end = text.index(MARK_START) + len(MARK_START), text.index(MARK_END)
    doc.write_text(text[:start] + module_list(graph) + text[end:])
    print(f"wrote docs/architecture.png and the module list of docs/architecture.md ({len(graph)} modules)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
