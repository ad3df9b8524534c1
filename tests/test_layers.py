"""The package's layers point one way: a module imports only modules of its own layer or below,
and no two modules import each other, directly or through others.

Every ``import`` statement counts, at module level or inside a function: a deferred import is
still a dependency. The layers follow the flow of data (DESIGN.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "simlab"

# lowest first; a module belongs to the longest prefix listed
LAYERS = [
    ("simlab._version", "simlab.errors", "simlab.registry", "simlab.fileio"),
    ("simlab.specs",),
    ("simlab.protocol",),
    ("simlab.rundir",),
    ("simlab.ops",),
    ("simlab.subjects",),
    ("simlab.rules",),
    ("simlab.training",),
    ("simlab.recording",),
    ("simlab.nwb",),  # NWB files in and out of the recording contract
    ("simlab.analysis",),
    ("simlab.cluster", "simlab.info", "simlab.pipeline"),
    ("simlab.api",),
    ("simlab.cli", "simlab.__main__"),
    ("simlab",),  # the package itself: the public API, re-exported
]


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, rank = -1, None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{module} is in no layer of tests/test_layers.py"
    return rank


def _is_parent(package: str, module: str) -> bool:
    """Importing a submodule runs its packages' ``__init__``; that is not an import of them."""
    return module.startswith(package + ".")


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports (``from a.b import c`` counts a.b.c when c is
    a module), leaving out its own parent packages."""
    modules = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name and not _is_parent(m, name)}
    return graph


def upward_imports(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    return {
        module: sorted(m for m in deps if layer_of(m) > layer_of(module))
        for module, deps in graph.items()
        if any(layer_of(m) > layer_of(module) for m in deps)
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as a list of modules that ends where it starts, or None.

    A package's ``__init__`` importing its own submodules is how it exports them, not a cycle.
    """
    graph = {m: {d for d in deps if not _is_parent(m, d)} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


GRAPH = import_graph()


def test_every_module_has_a_layer():
    for module in GRAPH:
        layer_of(module)


def test_no_upward_import():
    assert upward_imports(GRAPH) == {}


def test_no_import_cycle():
    assert find_cycle(GRAPH) is None


def test_the_checks_find_a_cycle_and_an_upward_import(tmp_path):
    """The checks above can fail: a deferred upward import and a two-module cycle are found."""
    root = tmp_path / "simlab"
    for folder in ("specs", "analysis"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    (root / "specs" / "x.py").write_text("def f():\n    from simlab.analysis import y\n")
    (root / "analysis" / "y.py").write_text("from . import z\n")
    (root / "analysis" / "z.py").write_text("import simlab.analysis.y\n")
    graph = import_graph(root)
    assert upward_imports(graph) == {"simlab.specs.x": ["simlab.analysis", "simlab.analysis.y"]}
    assert find_cycle(graph) == ["simlab.analysis.y", "simlab.analysis.z", "simlab.analysis.y"]
