"""The layers, checked from the source: the import graph of the shipped packages.

    engine        diffusekit.core.*  except  diffusekit.core.app.*      imports torch only
    application   diffusekit.core.app.*, and `diffusekit` (api/)        may import the engine
                                                                        and diffusekit.plugins
    plugin API    diffusekit.plugins.*
    domains       diffusekit.domains.*                                  on top of all of them

Rules: (1) no engine module imports the application layer, the plugin API or a domain, at any
depth of its code (a function-level import counts too); (2) the engine's only third-party import
is torch; (3) no import cycle among module-level imports (a cycle works only by import order);
(4) no domain imports another domain. Module-level means the statements Python runs when the
module is imported (including those inside `if`/`try` at the top level); imports inside functions
run later and cannot take part in an import-order cycle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the folder of each top-level package of the distribution (pyproject's package-dir)
PACKAGES = {"diffusekit": ROOT / "api", "diffusekit.core": ROOT / "core",
            "diffusekit.domains": ROOT / "domains", "diffusekit.plugins": ROOT / "plugins"}
SKIP = {ROOT / "plugins" / "example"}  # a separate distribution with its own pyproject


def module_files() -> dict[str, Path]:
    """module name -> file, for every module of the shipped packages."""
    out = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            if any(skip in path.parents for skip in SKIP):
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = module_files()


def _resolve(name: str) -> str | None:
    """The module a dotted name refers to: itself, or the longest prefix that is a module
    (`diffusekit.core.samplers.get` -> `diffusekit.core.samplers`)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, top_level_only: bool) -> set[str]:
    """The diffusekit modules and the third-party top-level names `module` imports."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    nodes = []

    def walk(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                nodes.append(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if not top_level_only:
                    nodes.extend(n for n in ast.walk(node)
                                 if isinstance(n, (ast.Import, ast.ImportFrom)))
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                continue
            else:  # class bodies, if / try / with blocks: they run at import
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        walk([child])
                    elif isinstance(child, ast.excepthandler):
                        walk(child.body)

    walk(tree.body)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative import
                anchor = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{base}" if base else anchor
            # `from pkg import sub` imports the submodule when there is one
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                     for alias in node.names]
        for name in names:
            if name.startswith("diffusekit."):
                target = _resolve(name)
                if target and target != module:
                    found.add(target)
            else:
                found.add(name.partition(".")[0])
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def layer(module: str) -> str:
    if module == "diffusekit" or module.startswith("diffusekit.core.app"):
        return "application"
    if module.startswith("diffusekit.core"):
        return "engine"
    if module.startswith("diffusekit.plugins"):
        return "plugins"
    return "domains"


ENGINE = sorted(m for m in MODULES if layer(m) == "engine")


def test_the_tree_has_both_layers():
    assert "diffusekit.core.schedules" in ENGINE and "diffusekit.core.samplers" in ENGINE
    assert "diffusekit.core.app.cli" in MODULES and "diffusekit.core.app.training.fit" in MODULES


@pytest.mark.parametrize("module", ENGINE)
def test_the_engine_imports_torch_and_itself_only(module):
    found = imports(module, top_level_only=False)
    upward = sorted(m for m in found if m.startswith("diffusekit.") and layer(m) != "engine")
    assert not upward, f"{module} imports {upward}: the engine never imports the layers above it"
    third_party = sorted(m for m in found if not m.startswith("diffusekit.")
                         and m not in sys.stdlib_module_names and m != "__future__")
    assert third_party in ([], ["torch"]), f"{module} imports {third_party}: torch only"


def test_no_import_cycles():
    graph = {m: {t for t in imports(m, top_level_only=True) if t in MODULES} for m in MODULES}
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles (module-level): " + "; ".join(
        " <-> ".join(sorted(c)) for c in cycles)


def test_no_domain_imports_another():
    for module in MODULES:
        if layer(module) != "domains" or module.count(".") < 2:
            continue
        own = ".".join(module.split(".")[:3])
        others = sorted(m for m in imports(module, top_level_only=False)
                        if m.startswith("diffusekit.domains.") and not m.startswith(own)
                        and m.count(".") >= 2)
        assert not others, f"{module} imports another domain: {others}"


def test_the_checker_finds_a_cycle_and_an_upward_import():
    """The checks above can fail: a made-up graph with a cycle gives it back."""
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        {"a", "b", "c"}]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []
    assert layer("diffusekit.core.app.cli") == "application"
    assert "diffusekit.core.app.config" in imports("diffusekit.core.app.training.fit", True)


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one node (Tarjan 1972), i.e. the cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out
