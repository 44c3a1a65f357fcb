"""The package's imports point one way: no import circle, no module takes another's `_private` names, arguments
are parsed only in hwnas/cli/ (no argparse import, no `args` namespace parameter, no import of hwnas.cli below it).

The graph is read with `ast` from the source (imports inside functions included), the same graph that
tools/architecture.py draws into docs/architecture.png.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from import_graph import (module_files, cycles, layer_of, module_graph, private_imports, upward_imports,  # noqa: E402
                          uses_module)

PACKAGE = ROOT / "hwnas"


def _outside_cli():
    return {m: p for m, p in module_files(PACKAGE).items()
            if not (m == "hwnas.cli" or m.startswith("hwnas.cli.") or m == "hwnas.__main__")}


def test_no_import_cycle():
    assert cycles(module_graph(PACKAGE)) == []


def test_imports_point_down_the_layers_of_design_md():
    graph = module_graph(PACKAGE)
    assert [m for m in graph if layer_of(m) is None] == []  # every module has its layer
    assert upward_imports(graph) == []


def test_no_private_name_crosses_a_module():
    assert private_imports(module_graph(PACKAGE)) == []


def test_arguments_parsed_only_in_cli():
    graph = module_graph(PACKAGE)
    outside = _outside_cli()
    assert [m for m, p in outside.items() if uses_module(p, "argparse")] == []
    assert [m for m in outside if any(t == "hwnas.cli" or t.startswith("hwnas.cli.") for t in graph[m])] == []
    takes_args = []
    for module, path in outside.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if any(a.arg == "args" for a in node.args.args + node.args.kwonlyargs):
                    takes_args.append(f"{module}.{node.name}")
    assert takes_args == []


def test_the_checks_can_fail():
    """The cycle and private-name checks find a circle and an underscore import when there is one."""
    graph = {"a": {"b": {None}}, "b": {"c": {"_x"}}, "c": {"a": {None}}, "d": {"a": {None}}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert private_imports(graph) == ["b -> c._x"]
    assert upward_imports({"hwnas.ops": {"hwnas.search.loop": {None}}}) == ["hwnas.ops (1) -> hwnas.search.loop (6)"]
