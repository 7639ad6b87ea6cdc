"""No two tdmi modules import each other, directly or through others (function-level imports count too): a module
that needs part of another which needs it back is a knot to untie by moving the shared part into its own file."""

from __future__ import annotations

import ast
from pathlib import Path

import tdmi

PACKAGE = Path(tdmi.__file__).parent


def module_name(path: Path) -> str:
    parts = ("tdmi",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("tdmi"):
                imported.add(node.module)
                # `from tdmi.inference import infer_command` imports the submodule: an edge to it, kept below
                # only where such a module exists
                imported |= {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names if alias.name.startswith("tdmi")}
        graph[module_name(path)] = imported
    return {module: imported & graph.keys() for module, imported in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph[module] & graph.keys():
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_the_checker_finds_a_knot():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_a_submodule_imported_from_its_package_is_an_edge():
    graph = import_graph()
    assert "tdmi.sharding" in graph["tdmi.inference.infer_command"]  # `from tdmi import sharding`
    assert "tdmi.atomic" in graph["tdmi.data.fileio"]  # `from tdmi import atomic as _atomic`
    assert "tdmi.config.load_config" not in graph["tdmi.engine.train"]  # an imported name, not a module


def test_no_tdmi_modules_import_each_other():
    graph = import_graph()
    assert "tdmi.engine.train" in graph and "tdmi.engine.train_step" in graph["tdmi.engine.train"]
    assert cycles(graph) == []
