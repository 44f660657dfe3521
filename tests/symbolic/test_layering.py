"""The symbolic modules import each other in one direction (a DAG), and the low layers stay low."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import harness

ROOT = Path(harness.__file__).parent


def _imports(path: Path, package: str) -> set[str]:
    """Every ``harness.*`` module a file imports, at top level, lazily or under TYPE_CHECKING; for a lazy
    facade (``__init__.py`` beside an ``__init__.pyi``), also those its stub names (loaded on first access)."""
    out: set[str] = set()
    stub = path.with_suffix(".pyi")
    trees = [ast.parse(path.read_text())] + ([ast.parse(stub.read_text())] if stub.exists() else [])
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            out.add(f"{package}.{node.module}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("harness"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("harness")}
    return out


def _graph() -> dict[str, set[str]]:
    files = [
        *ROOT.joinpath("symbolic").rglob("*.py"),
        *ROOT.joinpath("features").rglob("*.py"),
        ROOT / "jsonio.py",
    ]
    graph: dict[str, set[str]] = {}
    for f in files:
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = _imports(f, name if parts[-1] == "__init__" else ".".join(parts[:-1]))
    return graph


def test_symbolic_imports_form_a_dag() -> None:
    graph = _graph()
    ts = graphlib.TopologicalSorter({m: [d for d in deps if d in graph] for m, deps in graph.items()})
    list(ts.static_order())  # raises CycleError on a cycle


def test_low_layers_do_not_import_up() -> None:
    graph = _graph()
    assert not {d for d in graph["harness.features"] if d.startswith("harness.symbolic")}
    assert not {d for d in graph["harness.symbolic.metrics"] if d.startswith("harness.symbolic")}
    # the facade only re-exports: nothing inside the package imports it
    users = [m for m, deps in graph.items() if "harness.symbolic.lang" in deps]
    assert users == ["harness.symbolic"]
