"""The package's shape: no import cycles, no overlong functions (issue 12's "done when").

Both read the source with ``ast``, so they fail on the change that breaks the rule, with
the modules or functions named, instead of the rule eroding unnoticed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import xgrad

PACKAGE = Path(xgrad.__file__).parent
#: Longest function, docstring included.
MAX_LINES = 120
#: Functions allowed to be longer, and why.
LONG_ON_PURPOSE = {
    ("testing.py", "hard_suite"): "a data table of hard cases, one entry per case",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """xgrad modules ``name`` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        # The package root only re-exports (lazily); a package imports its children.
        found.update(t for t in targets if t in known and t != "xgrad" and t != name)
    return {t for t in found if not t.startswith(name + ".")}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

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
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    assert graph["xgrad.backends._registry"] >= {"xgrad.backends._base"}  # the reader works
    assert _cycles(graph) == []


def test_no_function_longer_than_the_limit() -> None:
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                key = (str(path.relative_to(PACKAGE)), node.name)
                if lines > MAX_LINES and key not in LONG_ON_PURPOSE:
                    long.append(f"{key[0]}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
