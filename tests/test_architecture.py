"""The architecture's rules, read from the source (see docs/architecture.md).

* the layers import downwards only (:data:`LAYERS`, counting imports inside functions and under
  ``TYPE_CHECKING``), and the named pairs in :data:`FORBIDDEN` never import each other;
* algorithms (stages, symbolic, features, training, teachers, optimizees) never import Ray or MLflow;
* no import cycle among the project's modules, at module level or counting function-level imports;
* nothing imports a private (underscore) name from another package;
* the top level of ``harness/`` holds at most 8 modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "teachers", "optimizees", "search_spaces")
PURE = (
    "harness/stages",
    "harness/symbolic",
    "harness/features",
    "harness/training",
    "teachers",
    "optimizees",
)
INFRA = ("ray", "mlflow")
#: from the bottom up: a module may import its own layer and those below, never one above
LAYERS: tuple[tuple[str, ...], ...] = (
    ("harness.jsonio", "harness.registry", "harness.plotting", "harness.testing", "harness"),
    ("harness.features", "harness.symbolic", "harness.training", "optimizees", "teachers"),
    ("harness.config", "search_spaces"),
    ("harness.stages",),
    ("harness.tracking", "harness.cluster", "harness.report"),
    ("harness.engine",),
    ("harness.cli",),
)
#: (importer, imported) package pairs that never meet, inside a layer or across: the issue's examples
#: and the symbolic core's own order (the expression language sits below the optimizer and SR)
FORBIDDEN: tuple[tuple[str, str], ...] = (
    ("harness.stages", "harness.engine"),
    ("harness.stages", "harness.tracking"),
    ("harness.stages", "harness.cluster"),
    ("harness.stages", "harness.report"),
    ("harness.symbolic", "harness.stages"),
    ("harness.symbolic.lang", "harness.symbolic.optim"),
    ("harness.symbolic.lang", "harness.symbolic.sr"),
    ("harness.cluster", "harness.engine"),
    ("harness.cluster", "harness.tracking"),
    ("harness.tracking", "harness.engine"),
    ("harness.tracking", "harness.cluster"),
    ("harness.report", "harness.engine"),
    ("harness.report", "harness.cluster"),
    ("harness.testing", "harness"),
)
#: the registry loads the built-in plug-ins by name (``importlib``), never by an import statement
MAX_TOP_MODULES = 8


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
        stub = path.with_suffix(".pyi")
        if is_package and stub.exists():  # a lazy facade imports what its stub names, on first access
            nodes += [
                n for n in ast.walk(ast.parse(stub.read_text(), str(stub))) if isinstance(n, ast.ImportFrom)
            ]
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


def _within(mod: str, pkg: str) -> bool:
    return mod == pkg or mod.startswith(pkg + ".")


def layer_of(mod: str) -> int:
    """The layer of ``mod``: that of the longest package prefix named in :data:`LAYERS`."""
    best, depth = -1, -1
    for i, layer in enumerate(LAYERS):
        for pkg in layer:
            if _within(mod, pkg) and pkg.count(".") > depth:
                best, depth = i, pkg.count(".")
    if best < 0:
        raise AssertionError(f"module {mod} is in no layer of tests/test_architecture.LAYERS")
    return best


def _all_imports() -> dict[str, set[str]]:
    sources = _sources()
    return {
        mod: {i for i in _imports(mod, path, module_level=False) if i in sources and i != mod}
        for mod, path in sources.items()
    }


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import of ``graph`` that goes up a layer or crosses a :data:`FORBIDDEN` pair."""
    bad = []
    for mod, deps in sorted(graph.items()):
        for dep in sorted(deps):
            if _within(dep, "harness") and dep == "harness":
                continue  # the package's own version string
            if layer_of(dep) > layer_of(mod):
                bad.append(f"{mod} (layer {layer_of(mod)}) imports {dep} (layer {layer_of(dep)})")
            for src, dst in FORBIDDEN:
                if _within(mod, src) and _within(dep, dst) and not (dst == "harness" and dep == "harness"):
                    if not _within(mod, dst) or dst == "harness":
                        bad.append(f"{mod} imports {dep} ({src} never imports {dst})")
    return bad


def test_layers_import_downwards_only() -> None:
    bad = layer_violations(_all_imports())
    assert not bad, "imports against the layer order (docs/architecture.md):\n" + "\n".join(bad)


def test_an_inverted_import_is_caught() -> None:
    """The check fails on a deliberately inverted import (a stage kind importing the runner)."""
    graph = _all_imports()
    graph["harness.stages.base"] = graph["harness.stages.base"] | {"harness.engine.runner"}
    bad = layer_violations(graph)
    assert any(b.startswith("harness.stages.base (layer 3) imports harness.engine.runner") for b in bad), bad
    graph = _all_imports()
    graph["harness.symbolic.lang.expression"] = graph["harness.symbolic.lang.expression"] | {
        "harness.symbolic.optim.optimizer"
    }
    assert any(
        "harness.symbolic.lang never imports harness.symbolic.optim" in b for b in layer_violations(graph)
    )


def test_every_module_is_in_a_layer() -> None:
    for mod in _sources():
        layer_of(mod)


def test_no_private_name_is_imported_across_packages() -> None:
    bad = []
    for mod, path in _sources().items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        own = mod if is_package else mod.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                src = _resolve(mod, node, is_package)
                if src.split(".")[0] not in PACKAGES:
                    continue  # third-party privates are the third party's business
                src_pkg = src if (ROOT / Path(*src.split("."))).is_dir() else src.rpartition(".")[0]
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__") and src_pkg != own:
                        bad.append(f"{mod} imports {a.name} from {src}")
    assert not bad, "private names imported from another package:\n" + "\n".join(bad)


def test_the_top_level_of_harness_is_small() -> None:
    top = sorted(p.name for p in (ROOT / "harness").glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, f"harness/ holds {len(top)} modules at its top level: {top}"
