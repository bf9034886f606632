"""The layering holds: the core and the adapters import nothing above them, the adapters and the simulators
never import each other, and no module imports itself back through others, package `__init__`s included.
Checked with import-linter's contracts (pyproject.toml) and its import graph (grimp), which read every import
statement, including those inside functions; and with the statements as written (ast), where importing a
name from a package runs that package's `__init__`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "adapters", "mappings", "simulators")
ABOVE_THE_CORE = ("gateway.api", "gateway.service", "gateway.store", "gateway.background", "gateway.cli",
                  "gateway.client", "gateway.wire")


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def forbidden_imports(graph: grimp.ImportGraph) -> list[tuple[str, str]]:
    """(importer, imported) pairs where the core or an adapter imports a layer above the core."""
    bad = []
    for m in sorted(graph.modules):
        if _within(m, ("gateway.core",)):
            banned = (*ABOVE_THE_CORE, "adapters", "mappings")
        elif _within(m, ("adapters", "mappings")):
            banned = (*ABOVE_THE_CORE, "simulators")
        elif _within(m, ("simulators",)):
            banned = (*ABOVE_THE_CORE, "adapters")
        else:
            continue
        bad += [(m, i) for i in sorted(graph.find_modules_directly_imported_by(m)) if _within(i, banned)]
    return bad


class Graph:
    """Imports as written: `from pkg import name` and `import pkg.mod` import the package `pkg` itself (its
    `__init__` runs first), which grimp, resolving names to modules, does not show."""

    def __init__(self, edges: dict[str, set[str]]) -> None:
        self.modules = set(edges) | {t for ts in edges.values() for t in ts}
        self.edges = edges

    def find_modules_directly_imported_by(self, module: str) -> set[str]:
        return self.edges.get(module, set())


def written_imports() -> Graph:
    """Every module of ours and the modules and packages its import statements name."""
    edges: dict[str, set[str]] = {}
    for root in PACKAGES:
        for path in (ROOT / root).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            package = name if parts[-1] == "__init__" else name.rpartition(".")[0]
            out = edges.setdefault(name, set())
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        bits = alias.name.split(".")
                        out.update(".".join(bits[:i]) for i in range(1, len(bits) + 1))
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        up = package.split(".")[:len(package.split(".")) - node.level + 1]
                        base = ".".join([*up, base] if base else up)
                    out.add(base)
                    out.update(f"{base}.{a.name}" for a in node.names)
    ours = set(edges)
    return Graph({m: {t for t in ts if t in ours and t != m} for m, ts in edges.items()})


def import_cycles(graph: grimp.ImportGraph | Graph) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), i.e. every import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return out


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def test_the_core_and_the_adapters_import_nothing_above_the_core(graph: grimp.ImportGraph) -> None:
    assert len(graph.modules) > 40  # the whole tree was read
    assert forbidden_imports(graph) == []


def test_no_import_cycles_between_modules(graph: grimp.ImportGraph) -> None:
    assert import_cycles(graph) == []


def test_no_import_cycles_through_package_inits() -> None:
    graph = written_imports()
    assert {"adapters", "simulators", "gateway.store"} <= graph.modules
    assert import_cycles(graph) == []
    # The cycle this check was written for: a package __init__ importing a vendor whose transport
    # imports a name from that same package.
    graph.edges["adapters"] = {"adapters.runai.adapter"}
    graph.edges["adapters.http"] = graph.edges["adapters.http"] | {"adapters"}
    assert any("adapters" in c and "adapters.http" in c for c in import_cycles(graph))


def test_the_checks_see_a_violation_when_there_is_one(graph: grimp.ImportGraph) -> None:
    g = graph.copy() if hasattr(graph, "copy") else grimp.build_graph(*PACKAGES, cache_dir=None)
    g.add_import(importer="adapters.runai.adapter", imported="gateway.store.jobs")
    g.add_import(importer="gateway.core.models", imported="gateway.service.jobs")
    assert ("adapters.runai.adapter", "gateway.store.jobs") in forbidden_imports(g)
    assert ("gateway.core.models", "gateway.service.jobs") in forbidden_imports(g)
    assert any("gateway.core.models" in c and "gateway.service.jobs" in c for c in import_cycles(g))


def test_import_linter_contracts_are_kept() -> None:
    """The same rules, and the gateway's layer order, as import-linter sees them (pyproject.toml)."""
    out = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                          "sys.argv = ['lint-imports', '--no-cache']; lint_imports_command()"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "5 kept, 0 broken" in out.stdout
