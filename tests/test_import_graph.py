"""The package's modules import each other without cycles.

A cycle between modules means neither can be understood (or imported) on its own, and
hides behind lazy imports until an import order changes. The graph is built with ``ast``
from every ``import`` / ``from ... import`` of ``sft_interaction_callback`` (relative or
absolute, at module level, inside functions or under ``if TYPE_CHECKING:``: a type-only
import never runs, but the dependency it names is real, so it counts (issue 21). An edge
goes to the module named (``from a.b import c`` -> ``a.b.c`` when ``c`` is a module, else
``a.b``), not to every parent package on the way.

Above modules, the package's folders are floors: collapsing every module into its unit (a
sub-package, or a module at the root), the graph of units has no cycle either, so no
import runs back up a floor.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "sft_interaction_callback"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

#: Cycles through modules this test's owner may not edit, reported to their owners.
#: Each entry: a frozenset of the cycle's modules -> the reason shown by xfail.
KNOWN: dict[frozenset[str], str] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import node, those under ``if TYPE_CHECKING:`` included."""
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def _resolve(node: ast.ImportFrom, name: str, is_package: bool) -> str | None:
    """The absolute module of ``from <node.module> import ...`` inside module ``name``."""
    if node.level == 0:
        return node.module
    base = name.split(".") if is_package else name.split(".")[:-1]
    if node.level > 1:
        base = base[: -(node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` over the package's own modules."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in _imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = _resolve(node, name, is_package)
                if base is None:
                    continue
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for t in targets:
                if t in modules and t != name:
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    sccs: list[set[str]] = []
    counter = [0]

    def strong(v: str) -> None:  # Tarjan
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return [_path_in(graph, comp) for comp in sccs]


def _path_in(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the component's first module: ``[start, ..., start]``."""
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return [*reversed(path), start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)  # pragma: no cover - a component always has a cycle


def test_graph_sees_relative_absolute_and_function_level_imports():
    graph = import_graph()
    assert f"{PACKAGE}.probing.values" in graph[f"{PACKAGE}.probing.baselines"]
    assert f"{PACKAGE}.training.schema" in graph[f"{PACKAGE}.training.loader"]
    demo_run = graph[f"{PACKAGE}.demo.run"]
    assert f"{PACKAGE}.demo.finetune" in demo_run  # imported inside a function
    assert f"{PACKAGE}.tracking.schedule" in graph[f"{PACKAGE}.tracking"]  # relative


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set(), "e": {"a"}}
    (found,) = cycles(graph)
    assert found == ["a", "b", "c", "a"]
    assert all(w in graph[v] for v, w in zip(found[:-1], found[1:], strict=True))
    assert cycles({"a": {"b"}, "b": set()}) == []


def _cycle_params() -> list:
    found = cycles(import_graph())
    params = []
    for cyc in found:
        key = frozenset(cyc)
        marks = [pytest.mark.xfail(reason=KNOWN[key], strict=False)] if key in KNOWN else []
        params.append(
            pytest.param(cyc, id=" -> ".join(m.rsplit(".", 1)[-1] for m in cyc), marks=marks)
        )
    return params or [pytest.param(None, id="no-cycles")]


@pytest.mark.parametrize("cycle", _cycle_params())
def test_no_import_cycles(cycle):
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def unit_of(module: str) -> str:
    """The floor a module stands on: its sub-package, or itself at the package root."""
    parts = module.split(".")
    return ".".join(parts[:2])


def unit_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """``graph`` with modules collapsed into units; the package's public face (its
    ``__init__``, which re-exports from every floor) is left out."""
    units: dict[str, set[str]] = {}
    for v, targets in graph.items():
        if v == PACKAGE:
            continue
        u = unit_of(v)
        units.setdefault(u, set())
        units[u] |= {unit_of(t) for t in targets if t != PACKAGE and unit_of(t) != u}
    return units


def test_type_only_imports_count(tmp_path):
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from sft_interaction_callback.callback.events import InteractionCallback\n"
    )
    assert [n.module for n in _imports(tree) if isinstance(n, ast.ImportFrom)] == [
        "typing",
        "sft_interaction_callback.callback.events",
    ]


def test_floors_have_no_arrow_back_up():
    units = unit_graph(import_graph())
    assert f"{PACKAGE}.callback" in units and f"{PACKAGE}.engine" in units
    assert f"{PACKAGE}.engine" in units[f"{PACKAGE}.callback"]
    found = cycles(units)
    assert found == [], "folders import each other: " + "; ".join(" -> ".join(c) for c in found)


def _readme_floors() -> list[str]:
    """The units of the README's layout block, in its order (from the bottom up)."""
    text = (ROOT.parent / "README.md").read_text(encoding="utf-8")
    block = text.split("```text\nsft_interaction_callback/\n", 1)[1].split("```", 1)[0]
    units: list[str] = []
    for line in block.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            head = line.split("   ")[0].strip()
            units += [
                f"{PACKAGE}.{n.strip().removesuffix('.py').rstrip('/')}" for n in head.split(",")
            ]
    return units


def test_readme_layout_lists_every_floor_from_the_bottom_up():
    units = unit_graph(import_graph())
    order = _readme_floors()
    assert sorted(order) == sorted(units), set(order) ^ set(units)
    up = [(u, t) for u in units for t in units[u] if order.index(t) > order.index(u)]
    assert up == [], f"imports of a floor the README lists higher up: {up}"
