"""The layering holds: the core and the adapters import nothing above them, and no module imports
itself back through others. Checked with import-linter's contracts (pyproject.toml) and its import
graph (grimp), which read every import statement, including those inside functions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("gateway", "adapters", "mappings")
ABOVE_THE_CORE = ("gateway.api", "gateway.service", "gateway.store", "gateway.background", "gateway.cli",
                  "gateway.client")


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def forbidden_imports(graph: grimp.ImportGraph) -> list[tuple[str, str]]:
    """(importer, imported) pairs where the core or an adapter imports a layer above the core."""
    bad = []
    for m in sorted(graph.modules):
        if _within(m, ("gateway.core",)):
            banned = (*ABOVE_THE_CORE, "adapters", "mappings")
        elif _within(m, ("adapters", "mappings")):
            banned = ABOVE_THE_CORE
        else:
            continue
        bad += [(m, i) for i in sorted(graph.find_modules_directly_imported_by(m)) if _within(i, banned)]
    return bad


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
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
    assert "3 kept, 0 broken" in out.stdout
