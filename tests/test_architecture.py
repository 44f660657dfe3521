"""The architecture's rules, read from the source: pure algorithms, no import cycles, files a person can read.

* ``harness/stages``, ``harness/symbolic``, ``teachers`` and ``optimizees`` never import Ray or MLflow
  (at module level or inside functions): algorithms stay testable without infrastructure;
* no module-level import cycle among the project's modules (imports inside functions and under
  ``if TYPE_CHECKING:`` are not module level), and none even counting imports inside functions;
* no source file over 600 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "teachers", "optimizees", "search_spaces")
PURE = ("harness/stages", "harness/symbolic", "teachers", "optimizees")
INFRA = ("ray", "mlflow")
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(mod: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_package else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mod: str, path: Path, module_level: bool) -> set[str]:
    """Names of modules ``path`` imports (``from a import b`` gives ``a.b`` when that is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    nodes: list[ast.AST] = []
    if module_level:

        def walk(body: list[ast.stmt]) -> None:
            for stmt in body:
                if isinstance(stmt, ast.If) and "TYPE_CHECKING" in ast.unparse(stmt.test):
                    continue
                if isinstance(stmt, ast.If | ast.Try):
                    walk(stmt.body)
                    walk(stmt.orelse)
                    for h in getattr(stmt, "handlers", []):
                        walk(h.body)
                    walk(getattr(stmt, "finalbody", []))
                elif isinstance(stmt, ast.Import | ast.ImportFrom):
                    nodes.append(stmt)

        walk(tree.body)
    else:
        nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
    out: set[str] = set()
    for n in nodes:
        if isinstance(n, ast.Import):
            out.update(a.name for a in n.names)
        else:
            base = _resolve(mod, n, is_package)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in n.names)
    return out


def test_pure_packages_never_import_ray_or_mlflow() -> None:
    bad = []
    for mod, path in _sources().items():
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith(PURE):
            continue
        for imp in _imports(mod, path, module_level=False):
            if imp.split(".")[0] in INFRA:
                bad.append(f"{rel} imports {imp}")
    assert not bad, "algorithms must stay Ray- and MLflow-free:\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
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
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def module_graph() -> dict[str, set[str]]:
    """Module-level imports between the project's own modules."""
    sources = _sources()
    return {
        mod: {i for i in _imports(mod, path, module_level=True) if i in sources and i != mod}
        for mod, path in sources.items()
    }


def test_no_module_level_import_cycles() -> None:
    cycles = _cycles(module_graph())
    assert not cycles, "module-level import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_import_cycles_even_inside_functions() -> None:
    """Deferred imports hide a cycle from Python, not from the reader: keep the layers one-way."""
    sources = _sources()
    graph = {
        mod: {i for i in _imports(mod, path, module_level=False) if i in sources and i != mod}
        for mod, path in sources.items()
    }
    cycles = _cycles(graph)
    assert not cycles, "import cycles (counting function-level imports):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("pkg", PACKAGES)
def test_no_source_file_passes_600_lines(pkg: str) -> None:
    long = [
        f"{p.relative_to(ROOT)} ({n} lines)"
        for p in sorted((ROOT / pkg).rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]
    assert not long, f"split these along their seams (limit {MAX_LINES}): {', '.join(long)}"
