"""The house rules, checked on the source: they hold because a test fails the day they do not.

* no import cycles among ``ponder`` modules (imports inside functions and under TYPE_CHECKING count);
* the core never imports the API edge (``ponder.api``) or the server (``ponder.server``);
* no file over 400 lines, no function over 80;
* nothing outside ``ponder/backends/`` compares a backend kind's name (callers ask for a capability).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "ponder"
#: modules that are the API edge or sit outside the request path (entry points may import anything)
EDGE = ("ponder.api", "ponder.server", "ponder.cli", "ponder.lab", "ponder.distill", "ponder.usage",
        "ponder.tenancy.cli", "ponder.capacity.cli")


def modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every ponder module ``name`` imports, wherever the import statement stands."""
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in known else base)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in known and m != name}


def test_no_import_cycles():
    known = modules()
    graph = {m: imports(m, p, known) for m, p in known.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_core_does_not_import_the_edge():
    known = modules()
    bad = []
    for m, p in known.items():
        if m.startswith(EDGE) or m == "ponder":
            continue
        for dep in imports(m, p, known):
            if dep.startswith(("ponder.api", "ponder.server")):
                bad.append(f"{m} -> {dep}")
    assert not bad, bad


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_small_files_and_functions(path: Path):
    text = path.read_text()
    assert len(text.splitlines()) <= 400, f"{path.name}: {len(text.splitlines())} lines"
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(ast.parse(text))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80]
    assert not long, long


def test_no_backend_kind_comparisons_outside_backends():
    kinds = r"""["'](?:llama_cpp|openai)["']"""
    pattern = re.compile(rf"\.backend\s*(?:==|!=|in\b)|(?:==|!=)\s*{kinds}|{kinds}\s*(?:==|!=)")
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in ROOT.rglob("*.py") if "backends" not in p.parts
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits
