"""No import cycles between Custos's own modules.

A cycle works only as long as every module in it happens to be imported in a lucky order and uses
the others' names late enough; one moved import and a process fails to start with a half-initialised
module. This reads the source (nothing is imported): every `import` and `from ... import`, at module
level and inside functions (a deferred import still ties the modules together, it only hides the
cycle until the function runs), except those under `if TYPE_CHECKING:`, which never run. The graph
is between the project's modules only, and its strongly connected components are the cycles.

An edge goes to the module named: `import a.b.c` and `from a.b import c` (c a module) are edges to
a.b.c, not to a and a.b, although Python runs their `__init__` too; `from a.b import name` (name not
a module) is an edge to a.b.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("apps", "project")
TOP_LEVEL_MODULES = ("celery_app",)
SKIPPED_DIRECTORIES = frozenset({"migrations", "__pycache__"})


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    deferred: bool  # inside a function


@dataclass
class ModuleInfo:
    name: str
    path: Path
    is_package: bool


@dataclass
class ImportGraph:
    modules: dict[str, ModuleInfo]
    edges: dict[str, dict[str, list[Edge]]] = field(default_factory=dict)

    def successors(self, module: str) -> list[str]:
        return sorted(self.edges.get(module, {}))


# --- finding the modules ---------------------------------------------------------------------------


def find_modules(root: Path, packages: Iterable[str], top_level: Iterable[str] = ()) -> dict[str, ModuleInfo]:
    """Every .py file under each package directory (migrations and caches skipped), plus the named
    top-level modules, keyed by dotted module name."""
    modules: dict[str, ModuleInfo] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            if SKIPPED_DIRECTORIES.intersection(relative.parts[:-1]):
                continue
            parts = list(relative.with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            modules[".".join(parts)] = ModuleInfo(".".join(parts), path, is_package)
    for name in top_level:
        path = root / f"{name}.py"
        if path.exists():
            modules[name] = ModuleInfo(name, path, False)
    return modules


# --- reading the imports ---------------------------------------------------------------------------


def _is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:` (any module alias)."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    if isinstance(test, ast.Attribute):
        return test.attr == "TYPE_CHECKING"
    return False


def _imports(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it sits inside a function; the bodies of
    `if TYPE_CHECKING:` are skipped (their `else:` branches run, and are kept)."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, in_function = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            children: list[ast.AST] = [node.test, *node.orelse]
        else:
            children = list(ast.iter_child_nodes(node))
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        stack.extend((child, inner) for child in reversed(children))


def _resolve_relative(module: ModuleInfo, level: int, name: str | None) -> str | None:
    """The absolute module a `from <dots><name> import ...` refers to, or None past the top."""
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    if level - 1 > len(package) or (level - 1 == len(package) and not name):
        return None
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, *([name] if name else [])])


def _known(name: str, modules: dict[str, ModuleInfo]) -> str | None:
    """`name` if it is one of the project's modules, else its longest prefix that is, else None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _targets(
    node: ast.Import | ast.ImportFrom, module: ModuleInfo, modules: dict[str, ModuleInfo]
) -> list[str]:
    if isinstance(node, ast.Import):
        return [t for alias in node.names if (t := _known(alias.name, modules))]
    base = _resolve_relative(module, node.level, node.module) if node.level else node.module
    if not base:
        return []
    targets = []
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        if alias.name != "*" and submodule in modules:
            targets.append(submodule)
        elif known := _known(base, modules):
            targets.append(known)
    return targets


def build_graph(modules: dict[str, ModuleInfo]) -> ImportGraph:
    graph = ImportGraph(modules=modules)
    for name, info in modules.items():
        tree = ast.parse(info.path.read_text(encoding="utf-8"), filename=str(info.path))
        for node, deferred in _imports(tree):
            for target in _targets(node, info, modules):
                if target == name:
                    continue  # a package naming its own attribute: not an edge to anything else
                graph.edges.setdefault(name, {}).setdefault(target, []).append(
                    Edge(name, target, node.lineno, deferred)
                )
    return graph


# --- the cycles ------------------------------------------------------------------------------------


def strongly_connected_components(nodes: Iterable[str], successors) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit to hit on a long import chain)."""
    index: dict[str, int] = {}
    lowlink: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0

    for root in sorted(nodes):
        if root in index:
            continue
        index[root] = lowlink[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        work: list[tuple[str, Iterator[str]]] = [(root, iter(successors(root)))]
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = lowlink[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(successors(child))))
                    break
                if child in on_stack:
                    lowlink[node] = min(lowlink[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    lowlink[parent] = min(lowlink[parent], lowlink[node])
                if lowlink[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def import_cycles(graph: ImportGraph) -> list[list[str]]:
    """The groups of modules that import each other (directly or around a loop), sorted."""
    nodes = set(graph.modules) | set(graph.edges)
    components = strongly_connected_components(nodes, graph.successors)
    return sorted(c for c in components if len(c) > 1)


def _one_loop(graph: ImportGraph, component: list[str]) -> list[str]:
    """A concrete loop through the component, from its first module back to it (breadth-first, so
    the shortest), to show where the cycle runs."""
    members = set(component)
    start = component[0]
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in graph.successors(node):
                if child not in members:
                    continue
                if child == start:
                    loop = [node]
                    while loop[-1] != start:
                        loop.append(came_from[loop[-1]])
                    return [start, *reversed(loop[:-1]), start]
                if child not in came_from:
                    came_from[child] = node
                    following.append(child)
        frontier = following
    return component  # unreachable for a real component


def describe(graph: ImportGraph, cycles: list[list[str]]) -> str:
    lines = []
    for component in cycles:
        lines.append(f"import cycle between {len(component)} modules: {', '.join(component)}")
        loop = _one_loop(graph, component)
        for source, target in zip(loop, loop[1:], strict=False):
            edge = graph.edges[source][target][0]
            path = graph.modules[source].path
            where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            how = "inside a function" if edge.deferred else "at module level"
            lines.append(f"    {source} -> {target}   ({where}:{edge.line}, {how})")
    return "\n".join(lines)


# --- the tests -------------------------------------------------------------------------------------


def test_the_project_has_no_import_cycles():
    modules = find_modules(ROOT, PACKAGES, TOP_LEVEL_MODULES)
    assert "celery_app" in modules
    assert "apps.wallets.services" in modules
    assert "project.queues" in modules
    assert not any("migrations" in name.split(".") for name in modules)
    graph = build_graph(modules)
    assert graph.edges, "no imports found: the scan is broken"

    cycles = import_cycles(graph)

    assert cycles == [], "\n" + describe(graph, cycles)


def _write(root: Path, relative: str, source: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)


def test_the_check_finds_a_cycle_hidden_in_a_function_and_ignores_type_checking_imports(tmp_path):
    # pkg.a imports pkg.b at module level; pkg.b imports pkg.a only inside a function: a cycle.
    _write(tmp_path, "pkg/__init__.py", "")
    _write(tmp_path, "pkg/a.py", "from . import b\n\nVALUE = 1\n")
    _write(tmp_path, "pkg/b.py", "def late():\n    from pkg.a import VALUE\n    return VALUE\n")
    # pkg.sub.c and pkg.sub.d point at each other, but d's import runs only for type checkers.
    _write(tmp_path, "pkg/sub/__init__.py", "")
    _write(tmp_path, "pkg/sub/c.py", "import pkg.sub.d\n")
    _write(
        tmp_path,
        "pkg/sub/d.py",
        "from typing import TYPE_CHECKING\nimport typing\n\n"
        "if TYPE_CHECKING:\n    from .c import thing\n"
        "if typing.TYPE_CHECKING:\n    from ..sub import c\n",
    )
    # Migrations are not scanned.
    _write(tmp_path, "pkg/migrations/__init__.py", "")
    _write(tmp_path, "pkg/migrations/0001_initial.py", "import pkg.a\n")

    modules = find_modules(tmp_path, ["pkg"])
    graph = build_graph(modules)
    cycles = import_cycles(graph)

    assert "pkg.migrations.0001_initial" not in modules
    assert "pkg.migrations" not in modules
    assert cycles == [["pkg.a", "pkg.b"]]
    assert graph.edges["pkg.b"]["pkg.a"][0].deferred
    assert not graph.edges["pkg.a"]["pkg.b"][0].deferred
    message = describe(graph, cycles)
    assert "pkg.a, pkg.b" in message
    assert "pkg.b -> pkg.a" in message
    assert "inside a function" in message


def test_edges_go_to_the_named_module_and_relative_imports_resolve(tmp_path):
    _write(tmp_path, "top/__init__.py", "from .inner import helper\n")
    _write(tmp_path, "top/inner/__init__.py", "def helper():\n    pass\n")
    _write(
        tmp_path, "top/inner/mod.py", "from . import sibling\nfrom .. import NAME\nfrom ..other import f\n"
    )
    _write(tmp_path, "top/inner/sibling.py", "import top.other as o\nfrom top.inner import helper\n")
    _write(tmp_path, "top/other.py", "NAME = 1\ndef f():\n    import top.inner.sibling\n")
    _write(tmp_path, "solo.py", "from top.inner.mod import *\n")

    graph = build_graph(find_modules(tmp_path, ["top"], ["solo"]))
    edges = {source: sorted(targets) for source, targets in graph.edges.items()}

    assert edges == {
        "top": ["top.inner"],  # `helper` is a function: the edge is to the package it comes from
        "top.inner.mod": ["top", "top.inner.sibling", "top.other"],
        "top.inner.sibling": ["top.inner", "top.other"],  # not to `top`, the parent of both
        "top.other": ["top.inner.sibling"],
        "solo": ["top.inner.mod"],
    }
    assert import_cycles(graph) == [["top.inner.sibling", "top.other"]]


def test_tarjan_separates_components_and_handles_long_chains():
    graph = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": ["e"], "e": ["d"], "f": ["a"]}
    components = strongly_connected_components(graph, lambda n: graph.get(n, []))
    assert sorted(components) == [["a", "b", "c"], ["d", "e"], ["f"]]

    # A 5000-module chain closed into a ring: one component, no recursion limit hit.
    ring = {f"m{i}": [f"m{(i + 1) % 5000}"] for i in range(5000)}
    (only,) = strongly_connected_components(ring, lambda n: ring[n])
    assert len(only) == 5000
