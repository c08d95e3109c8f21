"""The import graph of clinvk_lib, read from the source (module-level imports and those inside
functions alike): no cycles, front ends never import each other, the leaves import nothing above
them, and nothing imports a composition root. An import inside a function is for start-up speed
only; this test keeps it from hiding a cycle."""

from __future__ import annotations

import ast
import os
from typing import Dict, List, Set

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIB = os.path.join(ROOT, "clinvk_lib")

# Modules that know nothing above them: processes, events, policy, the YAML subset, the JSON
# text helpers, the small text, file and lock utilities, the Redis client, deferred imports,
# the setting types and the CLIs' own knowledge. They may import each other, and nothing else.
LEAVES = ("clinvk_lib.events", "clinvk_lib.runner", "clinvk_lib.supervisor",
          "clinvk_lib.policy", "clinvk_lib.miniyaml", "clinvk_lib.yamledit",
          "clinvk_lib.jsontext", "clinvk_lib.textutil", "clinvk_lib.fsutil",
          "clinvk_lib.filelock", "clinvk_lib.config_types", "clinvk_lib.backends",
          "clinvk_lib.redisclient", "clinvk_lib.deferred")
# What a leaf may import besides other leaves: the package root (its version string).
LEAF_EXTRAS = ("clinvk_lib",)
# Each front end is wired by one composition root that nothing imports; the CLI reaches the
# others' roots through its lazy dispatch table (a module name as a string), not an import.
COMPOSITION_ROOTS = ("clinvk_lib.server.serve", "clinvk_lib.mcp.command", "clinvk_lib.cli.main")
CLI = "clinvk_lib.cli"


def module_name(path: str) -> str:
    rel = os.path.relpath(path, ROOT)[:-len(".py")].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def all_modules() -> Dict[str, str]:
    found = {}
    for folder, _, files in os.walk(LIB):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                found[module_name(path)] = path
    return found


def resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (before its imported names)."""
    if not node.level:
        return node.module or ""
    parts = current.split(".")
    base = parts if is_package else parts[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: str, modules: Dict[str, str]) -> Set[str]:
    """Every clinvk_lib module ``name`` imports anywhere in its source."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    out: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("clinvk_lib"))
        elif isinstance(node, ast.ImportFrom):
            target = resolve(name, is_package, node)
            if not target.startswith("clinvk_lib"):
                continue
            subs = [target + "." + a.name for a in node.names
                    if target + "." + a.name in modules]
            out.update(subs if len(subs) == len(node.names) else subs + [target])
    out.discard(name)
    return {m for m in out if m in modules}


@pytest.fixture(scope="module")
def graph() -> Dict[str, Set[str]]:
    modules = all_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_import_graph_is_read_from_every_module(graph):
    # A guard for the test itself: the graph sees function-level imports and relative ones.
    assert "clinvk_lib.execute" in graph["clinvk_lib.orchestrate"]
    assert graph["clinvk_lib.server.serve"] & {"clinvk_lib.server.native",
                                                "clinvk_lib.server.openai"}


def test_no_module_takes_part_in_an_import_cycle(graph):
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_planted_cycle(graph):
    planted = dict(graph, **{"clinvk_lib.events": graph["clinvk_lib.events"] | {
        "clinvk_lib.execute"}})
    assert any("clinvk_lib.events" in c and "clinvk_lib.execute" in c for c in cycles(planted))


@pytest.mark.parametrize("front_end", ["clinvk_lib.server", "clinvk_lib.mcp"])
def test_server_and_mcp_never_import_the_command_line(graph, front_end):
    bad = sorted("%s -> %s" % (m, i) for m, deps in graph.items() if within(m, [front_end])
                 for i in deps if within(i, [CLI]))
    assert bad == []


def test_server_and_mcp_never_import_each_other(graph):
    bad = sorted("%s -> %s" % (m, i) for m, deps in graph.items() for i in deps
                 if (within(m, ["clinvk_lib.server"]) and within(i, ["clinvk_lib.mcp"]))
                 or (within(m, ["clinvk_lib.mcp"]) and within(i, ["clinvk_lib.server"])))
    assert bad == []


def test_leaves_import_nothing_above_them(graph):
    bad = sorted("%s -> %s" % (m, i) for m, deps in graph.items() if within(m, LEAVES)
                 for i in deps if not within(i, LEAVES) and i not in LEAF_EXTRAS)
    assert bad == []


def test_nothing_imports_a_composition_root(graph):
    bad = sorted("%s -> %s" % (m, i) for m, deps in graph.items() for i in deps
                 if i in COMPOSITION_ROOTS)
    assert bad == []
