"""One-way layers: every import inside activevlm (module level and in functions, absolute and
relative) points down the layer order, and no modules or packages import each other in a
cycle. A failure lists the offending imports by file and line."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "activevlm"
LAYERS: tuple[tuple[str, ...], ...] = (  # bottom to top; one group may import each other
    ("utils", "metrics"),
    ("data",),
    ("models",),
    ("pool",),
    ("bayes",),
    ("evaluation", "finetune", "vilu"),
    ("index",),
    ("acquisition",),
    ("demo",),
    ("runs",),
    ("loop",),
    ("bench",),
    ("cli",),
)


@dataclass(frozen=True)
class Edge:
    source: str       # importing module, e.g. "activevlm.data.layouts"
    target: str       # imported activevlm module (a submodule when the name is one)
    path: Path
    line: int
    in_function: bool

    def __str__(self) -> str:
        where = " (in a function)" if self.in_function else ""
        return f"{self.path}:{self.line}: {self.source} -> {self.target}{where}"


def module_names(root: Path) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` under the package ``root``."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_edges(root: Path) -> Iterator[Edge]:
    """Every import of a module of the package ``root`` by a module of it."""
    modules = module_names(root)
    top = root.name
    for source, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        in_function = {id(node) for fn in ast.walk(tree)
                       if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
                       for node in ast.walk(fn)}
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            else:
                continue
            for target in dict.fromkeys(targets):
                if target == top or target.startswith(top + "."):
                    yield Edge(source, target, path.relative_to(root.parent), node.lineno,
                               id(node) in in_function)


def package_of(module: str) -> str:
    """``activevlm.data.layouts`` -> ``data``; the root package -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(package: str) -> int:
    if package == "":
        return -1  # activevlm/__init__.py: the version string, below everything
    for level, group in enumerate(LAYERS):
        if package in group:
            return level
    raise AssertionError(f"package {package!r} is in no layer; add it to LAYERS (and the "
                         "README's layout section)")


def upward_edges(edges: list[Edge]) -> list[Edge]:
    return [e for e in edges
            if layer_of(package_of(e.source)) < layer_of(package_of(e.target))]


def cycles(edges: list[Edge], key) -> list[list[Edge]]:
    """The import edges inside each strongly connected component of the graph whose nodes
    are ``key(module)`` (modules or packages) and that has more than one node."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        a, b = key(e.source), key(e.target)
        if a != b:
            graph.setdefault(a, set()).add(b)
            graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [[e for e in edges if key(e.source) in c and key(e.target) in c
             and key(e.source) != key(e.target)] for c in components]


def report(title: str, edges: list[Edge]) -> str:
    return title + "\n" + "\n".join(f"  {e}" for e in edges)


@pytest.fixture(scope="module")
def edges() -> list[Edge]:
    return list(import_edges(PACKAGE_ROOT))


def test_every_package_has_a_layer(edges):
    for module in module_names(PACKAGE_ROOT):
        layer_of(package_of(module))


def test_no_import_points_up_the_layers(edges):
    bad = upward_edges(edges)
    if bad:
        pytest.fail(report("imports from a lower layer to a higher one:", bad), pytrace=False)


@pytest.mark.parametrize("level", ["module", "package"])
def test_no_import_cycles(edges, level):
    key = (lambda m: m) if level == "module" else package_of
    found = cycles(edges, key)
    if found:
        pytest.fail("\n".join(report(f"{level} import cycle:", c) for c in found), pytrace=False)


def test_in_function_imports_of_activevlm_only_in_the_cli(edges):
    bad = [e for e in edges if e.in_function and package_of(e.source) != "cli"]
    if bad:
        pytest.fail(report("import these at module level (in-function imports are for "
                           "optional or heavy dependencies):", bad), pytrace=False)


def test_public_names_are_defined_once_outside_the_cli():
    """Two public functions or classes of one name would mean two things (cli commands are
    named after the command they run and are left out)."""
    where: dict[str, list[str]] = {}
    for module, path in module_names(PACKAGE_ROOT).items():
        if package_of(module) == "cli":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                where.setdefault(node.name, []).append(f"{path.relative_to(PACKAGE_ROOT.parent)}"
                                                       f":{node.lineno}")
    twice = {name: places for name, places in where.items() if len(places) > 1}
    if twice:
        pytest.fail("public names defined more than once:\n" + "\n".join(
            f"  {name}: {', '.join(places)}" for name, places in sorted(twice.items())),
            pytrace=False)


def test_the_checker_finds_upward_imports_and_cycles(tmp_path):
    """The checks above on a small package with one upward import, one module cycle and one
    package cycle (data -> utils -> pool -> models -> data) without a module cycle."""
    files = {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/a.py": "from . import b\n",
        "data/b.py": "from activevlm.data.a import x\n",
        "data/c.py": "import activevlm.utils.u\n",
        "models/__init__.py": "",
        "models/m.py": "import activevlm.data.a\n",
        "pool/__init__.py": "",
        "pool/p.py": "def f():\n    from ..models import m\n",
        "utils/__init__.py": "",
        "utils/u.py": "\n\ndef g():\n    from activevlm.pool.p import f\n",
    }
    root = tmp_path / "activevlm"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    found = list(import_edges(root))
    assert {(e.source, e.target, e.line, e.in_function) for e in found} == {
        ("activevlm.data.a", "activevlm.data.b", 1, False),
        ("activevlm.data.b", "activevlm.data.a", 1, False),
        ("activevlm.data.c", "activevlm.utils.u", 1, False),
        ("activevlm.models.m", "activevlm.data.a", 1, False),
        ("activevlm.pool.p", "activevlm.models.m", 2, True),
        ("activevlm.utils.u", "activevlm.pool.p", 4, True),
    }
    up = upward_edges(found)
    assert [str(e) for e in up] == [
        "activevlm/utils/u.py:4: activevlm.utils.u -> activevlm.pool.p (in a function)"]
    module_cycles = cycles(found, lambda m: m)
    assert [sorted((e.source, e.target) for e in c) for c in module_cycles] == [
        [("activevlm.data.a", "activevlm.data.b"), ("activevlm.data.b", "activevlm.data.a")]]
    package_cycles = cycles(found, package_of)
    assert len(package_cycles) == 1
    assert {package_of(e.source) for e in package_cycles[0]} == {"data", "models", "pool", "utils"}
