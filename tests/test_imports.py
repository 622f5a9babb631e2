"""Imports go one way: the project's static import graph has no cycle and no import from a lower layer into a
higher one (docs/architecture.md). :data:`LAYERS` is the table; the docs point here.

The graph is read with :mod:`ast` from every ``.py`` file under :data:`PACKAGES`: every ``import`` and
``from ... import`` statement, wherever it stands (inside functions and ``if TYPE_CHECKING:`` blocks too),
relative ones resolved against the importing module. ``from package import name`` is an import of the
submodule ``package.name`` where one exists, else of ``package``; an import of the project that names no
module of it fails (a stale path would hide an edge). An import of ``a.b.c`` counts as an
edge to ``a.b.c`` alone: Python runs the packages ``a`` and ``a.b`` first, but a package whose
``__init__`` gathers its modules (``reference``) would otherwise form a cycle with each of them.
What is not counted: modules found at run time by name (``importlib.import_module``; the harness's
registry finds adapter and transform modules so, ``conformance/harness/registry.py``) and code run in
another interpreter (``python -c "import ..."``, ``python -m ...``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("reference", "conformance", "benchmarks", "perf", "mutants", "examples")

# Bottom to top. A module belongs to the entry that names it or its nearest package; it may import from its
# own layer (when that makes no cycle) and from the layers below it. Entries of one row share a layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("reference",),  # the specification: float64 NumPy, no conformance machinery
    ("conformance.core",),  # operator-neutral vocabulary: dtypes, State, comparisons, Case
    ("conformance.operators",),  # operator records (BatchNorm's reference side, cases, tolerances)
    ("conformance.adapters.base",),  # the adapter protocol
    ("conformance.report",),  # results, JSON document, Markdown/HTML
    ("conformance.harness",),  # registry, isolation, mirror, deviations, the fixture, the pytest plugin
    ("conformance.adapters",),  # one module per implementation
    ("conformance.transforms",),  # compile, export, port, shard (+ world/)
    ("conformance.checks",),  # the generic check bodies
    ("conformance.cli",),  # bn-conformance
    ("mutants", "examples", "benchmarks"),  # users of the suite, outside the package
    ("perf",),  # tooling around the benchmarks
)


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module of the project
    where: str  # file:line of the import statement

    def __str__(self) -> str:
        return f"{self.where}: {self.source} imports {self.target}"


def _files(root: Path) -> dict[str, Path]:
    """Every module of the project, by name (a package by its own name, for its ``__init__.py``)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name ``from <level dots><name>`` stands for in ``module``."""
    if not level:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join([*base, *([name] if name else [])])


def _imported(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, str | None, int]]:
    """``(module, name, line)`` for every import in the tree: ``import X`` as ``(X, None)``, ``from X import a``
    as ``(X, a)`` (absolute)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            found += [(base, alias.name, node.lineno) for alias in node.names]
    return found


def _graph(root: Path) -> tuple[dict[str, Path], list[Import], list[str]]:
    """The project's modules, every import of one of them, and the project imports that name no module (a
    stale path, which would hide an edge)."""
    files = _files(root)
    edges, unresolved = [], []
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, attribute, line in _imported(tree, module, path.name == "__init__.py"):
            where = f"{path.relative_to(root)}:{line}"
            if name.split(".")[0] not in PACKAGES:
                continue
            if attribute and f"{name}.{attribute}" in files:  # ``from X import a``, ``a`` a submodule of X
                target = f"{name}.{attribute}"
            elif name in files:
                target = name
            else:
                unresolved.append(f"{where}: {module} imports {name}: no such module")
                continue
            if target != module:
                edges.append(Import(module, target, where))
    return files, edges, unresolved


def _layer(module: str) -> int | None:
    """Index in LAYERS of the entry naming ``module`` or its nearest package; None: no entry does."""
    best: tuple[int, int] | None = None
    for index, row in enumerate(LAYERS):
        for entry in row:
            if (module == entry or module.startswith(entry + ".")) and (best is None or len(entry) > best[0]):
                best = (len(entry), index)
    return best and best[1]


def _label(module: str) -> str:
    return ", ".join(LAYERS[_layer(module)])


def _cycles(edges: list[Import]) -> list[list[Import]]:
    """One cycle through each strongly connected component of more than one module (Tarjan), as its edges."""
    out: dict[str, dict[str, Import]] = {}
    for edge in edges:
        out.setdefault(edge.source, {}).setdefault(edge.target, edge)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in out.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(out):
        if node not in index:
            visit(node)
    return [_cycle_in(sorted(c), out) for c in components]


def _cycle_in(component: list[str], out: dict[str, dict[str, Import]]) -> list[Import]:
    """A shortest cycle through the component's first module (breadth first, within the component)."""
    start, members = component[0], set(component)
    paths: dict[str, list[Import]] = {start: []}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt, edge in sorted(out.get(node, {}).items()):
            if nxt == start:
                return [*paths[node], edge]
            if nxt in members and nxt not in paths:
                paths[nxt] = [*paths[node], edge]
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start}")  # a strongly connected component always has one


FILES, EDGES, UNRESOLVED = _graph(ROOT)


def test_the_graph_is_read(tmp_path: Path) -> None:
    """The reader itself, on a small tree: absolute and relative imports, at module level and inside functions,
    ``from package import submodule`` and ``from module import name``, a stale path."""
    sources = {
        "reference/__init__.py": "from .layer import BatchNorm\n",
        "reference/layer.py": "import numpy as np\nBatchNorm = None\n",
        "conformance/__init__.py": "",
        "conformance/core/__init__.py": "",
        "conformance/core/case.py": "from reference import BatchNorm\n",
        "conformance/harness/__init__.py": "from . import mirror\n",
        "conformance/harness/mirror.py": "def f():\n    from ..core import case\n    import conformance.gone\n",
        "perf/run.py": "from benchmarks.common import x\n",
    }
    for name, text in sources.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    files, edges, unresolved = _graph(tmp_path)
    assert "conformance.harness" in files and "conformance.harness.mirror" in files
    assert sorted(str(e) for e in edges) == [
        "conformance/core/case.py:1: conformance.core.case imports reference",
        "conformance/harness/__init__.py:1: conformance.harness imports conformance.harness.mirror",
        "conformance/harness/mirror.py:2: conformance.harness.mirror imports conformance.core.case",
        "reference/__init__.py:1: reference imports reference.layer",
    ]
    assert unresolved == [
        "conformance/harness/mirror.py:3: conformance.harness.mirror imports conformance.gone: no such module",
        "perf/run.py:1: perf.run imports benchmarks.common: no such module",
    ]


def test_every_project_import_names_a_module() -> None:
    assert not UNRESOLVED, "\n".join(dict.fromkeys(UNRESOLVED))


def test_every_module_has_a_layer() -> None:
    """A module outside the table must be placed in it; only a package ``__init__`` that imports nothing of the
    project (a docstring, as ``conformance/__init__.py``) needs no place."""
    importing = {e.source for e in EDGES}
    homeless = [f"{FILES[m].relative_to(ROOT)}: {m}" for m in FILES
                if _layer(m) is None and (FILES[m].name != "__init__.py" or m in importing)]
    assert not homeless, "add these to LAYERS (tests/test_imports.py) and docs/architecture.md:\n" + "\n".join(homeless)


def test_no_import_climbs() -> None:
    """Nothing imports from a layer above its own."""
    upward = [f"{e} (layer {_label(e.source)} below {_label(e.target)})" for e in EDGES
              if _layer(e.source) is not None and _layer(e.target) is not None and _layer(e.target) > _layer(e.source)]
    assert not upward, "\n".join(upward)


def test_no_cycle() -> None:
    cycles = ["\n  ".join(["cycle:", *map(str, cycle)]) for cycle in _cycles(EDGES)]
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize(("edges", "expected"), [
    ([("a", "b"), ("b", "c")], []),
    ([("a", "b"), ("b", "a")], [["a", "b"]]),
    ([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e"), ("e", "d")], [["d", "e"], ["a", "b", "c"]]),
])
def test_cycles_are_found(edges: list[tuple[str, str]], expected: list[list[str]]) -> None:
    found = _cycles([Import(source, target, "x.py:1") for source, target in edges])
    assert sorted([e.source for e in cycle] for cycle in found) == sorted(expected)


@pytest.mark.parametrize(("module", "layer"), [
    ("reference", "reference"), ("reference.porting", "reference"),
    ("conformance.operators.batchnorm.cases", "conformance.operators"),
    ("conformance.adapters.base", "conformance.adapters.base"), ("conformance.adapters", "conformance.adapters"),
    ("conformance.adapters.torch_nn", "conformance.adapters"), ("benchmarks.common", "mutants, examples, benchmarks"),
    ("conformance", None), ("conformance.loose", None), ("tests.test_imports", None),
])
def test_a_module_belongs_to_the_entry_naming_it_or_its_nearest_package(module: str, layer: str | None) -> None:
    assert (None if _layer(module) is None else _label(module)) == layer


@pytest.mark.parametrize(("module", "is_package", "level", "name", "expected"), [
    ("conformance.harness.mirror", False, 1, "registry", "conformance.harness.registry"),
    ("conformance.harness.mirror", False, 2, "adapters.base", "conformance.adapters.base"),
    ("conformance.operators.batchnorm", True, 1, "cases", "conformance.operators.batchnorm.cases"),
    ("conformance.operators.batchnorm", True, 2, None, "conformance.operators"),
    ("reference.layer", False, 0, "numpy", "numpy"),
])
def test_relative_imports_resolve(module: str, is_package: bool, level: int, name: str | None, expected: str) -> None:
    assert _resolve(module, is_package, level, name) == expected
