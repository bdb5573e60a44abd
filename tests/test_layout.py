"""Imports point down (DESIGN.md: cli -> domain packages -> policy/mongo/store -> home/errors).

Read statically from the source (every ``import``, including those inside functions, which a
runtime check would miss): the package has no import cycle, and the low layers never reach up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fluxa_integrity

ROOT = Path(fluxa_integrity.__file__).parent
LOW = ("mongo", "store", "policy")
UPPER = ("cli", "web", "access", "checks", "backup", "restore", "incidents", "fluxa", "comms", "schema", "recovery")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (anywhere in its body)."""
    mods = {_module(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                # `from .x import y` imports module x.y when y is a module, else module x
                hit = next((c for c in [f"{target}.{a.name}" for a in node.names] + [target] if c in mods), None)
                if hit:
                    deps.add(hit)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in mods)
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_imports_inside_functions():
    # config used to import the dev server inside resolve_target(): the reader must see such imports
    src = "def f():\n    from .mongo.devserver import DevServer\n"
    node = ast.parse(src).body[0].body[0]
    assert isinstance(node, ast.ImportFrom) and node.level == 1 and node.module == "mongo.devserver"
    graph = import_graph()
    assert "fluxa_integrity.mongo.devserver" in graph["fluxa_integrity.config"]
    assert "fluxa_integrity.errors" in graph["fluxa_integrity.home"]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_low_layers_never_import_upwards():
    up = sorted((m, d) for m, deps in import_graph().items() if m.split(".")[1:2] and m.split(".")[1] in LOW
                for d in deps if d.split(".")[1:2] and d.split(".")[1] in UPPER)
    assert up == []


def test_home_is_the_bottom_layer():
    graph = import_graph()
    assert graph["fluxa_integrity.home"] <= {"fluxa_integrity.errors"}
    # config finds the dev server (it sits above mongo/); mongo/ takes the home directory from home
    assert not any(d == "fluxa_integrity.config" for m, deps in graph.items()
                   if m.startswith("fluxa_integrity.mongo") for d in deps)
