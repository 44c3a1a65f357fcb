"""The import graph of the hwnas package, read with `ast` (imports inside functions included).

`module_graph(package_dir)` maps each module name to the in-package modules it imports, with the names it takes
from them; `cycles(graph)` lists the import circles (strongly connected components of more than one module, or a
module importing itself). Used by tests/test_layering.py and tools/architecture.py, so the test and the picture
read the same graph.
"""

from __future__ import annotations

import ast
from pathlib import Path


def module_files(package_dir: Path) -> dict[str, Path]:
    """{module name: its file} for every .py file of the package."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str | None, int]]:
    """(imported module, name taken from it or None, line) for every in-package import of one module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.append((alias.name, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            if target not in modules:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:  # `from pkg import submodule`
                    found.append((sub, None, node.lineno))
                else:
                    found.append((target, alias.name, node.lineno))
    return found


def uses_module(path: Path, name: str) -> bool:
    """Whether a file imports the top-level module `name` (e.g. argparse) anywhere."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == name for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == name:
            return True
    return False


def module_graph(package_dir: Path) -> dict[str, dict[str, set[str | None]]]:
    """{module: {imported module: names taken (None for a plain module import)}} over the whole package.

    A package's __init__ re-exporting its submodules is not an edge from a submodule to its package: importing
    `pkg.sub` runs `pkg/__init__`, so edges into a package's own __init__ from inside it are skipped.
    """
    modules = module_files(Path(package_dir))
    graph: dict[str, dict[str, set]] = {}
    for module, path in modules.items():
        edges: dict[str, set] = {}
        for target, name, _ in imports_of(module, path, modules):
            if target == module or module.startswith(target + "."):
                continue
            edges.setdefault(target, set()).add(name)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, dict]) -> list[list[str]]:
    """The import circles: each strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def private_imports(graph: dict[str, dict]) -> list[str]:
    """'importer -> module._name' for every underscore name one module takes from another."""
    return sorted(f"{m} -> {t}.{n}" for m, edges in graph.items() for t, names in edges.items()
                  for n in names if n and n.startswith("_") and not n.startswith("__"))


# The layers of DESIGN.md, lowest first: (title, module prefixes under hwnas/). An import points to the same
# layer or one below, never up; the longest prefix decides (cells.ops sits low, cells.search high).
LAYERS = [
    ("base utilities", ["errors", "jsonfile", "threads", "progress", "plots", "outputs", "budget", "weights",
                        "paired"]),
    ("operators: descriptions, costs, PyTorch blocks", ["ops", "costs", "blocks"]),
    ("spaces, architectures, children, data", ["spaces", "arch", "children", "builder", "netfile", "data",
                                                "cells.ops", "cells.space", "cells.genotype", "cells.network",
                                                "cells.derive"]),
    ("export and runtimes", ["export", "runners", "modelgraph"]),
    ("latency data and predictors", ["latency_data", "predictors", "profiler", "timing_rounds", "phones",
                                              "kernels"]),
    ("supernets and training", ["supernet", "cells.supernet", "train", "tune", "runlog"]),
    ("search engine, algorithms, strategies", ["search", "cells", "strategies"]),
    ("the main job", ["pipeline", "run_config", "run_report"]),
    ("command line", ["cli", "__main__", ""]),
]


def layer_of(module: str) -> int | None:
    """Index into :data:`LAYERS` of a module (``hwnas.x.y``), None when no prefix names it."""
    name = module[len("hwnas."):] if module.startswith("hwnas.") else ""
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or (prefix and name.startswith(prefix + ".")):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    return None if best is None else best[0]


def upward_imports(graph: dict[str, dict]) -> list[str]:
    """'importer (layer) -> imported (layer)' for every import that points up a layer."""
    return sorted(f"{m} ({layer_of(m)}) -> {t} ({layer_of(t)})" for m, edges in graph.items() for t in edges
                  if layer_of(m) is not None and layer_of(t) is not None and layer_of(t) > layer_of(m))
