"""Every built-in domain has the same files with the same roles (the skeleton documented in
`diffusekit.domains`): checked from the source (ast) and from the imported modules."""

from __future__ import annotations

import ast
import importlib
import tomllib
from pathlib import Path

import click
import pytest

from diffusekit.plugins import Domain, hookspecs

ROOT = Path(__file__).resolve().parents[2]
DOMAINS_DIR = ROOT / "domains"
REQUIRED = ("__init__.py", "domain.py", "config.yaml", "data.py", "network.py", "process.py",
            "metrics.py", "benchmark.py")


def builtin_domains() -> list[str]:
    """The domain packages the distribution declares as entry points (pyproject.toml)."""
    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "entry-points"]["diffusekit"]
    prefix = "diffusekit.domains."
    return sorted(v[len(prefix):] for v in entry_points.values() if v.startswith(prefix))


DOMAINS = builtin_domains()
HOOK_NAMES = {name for name in dir(hookspecs)
              if hasattr(getattr(hookspecs, name), f"{hookspecs.PROJECT}_spec")}


def parse(domain: str, file: str) -> ast.Module:
    path = DOMAINS_DIR / domain / file
    return ast.parse(path.read_text(), filename=str(path))


def is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) \
        and isinstance(node.value.value, str)


def decorator_name(node: ast.expr) -> str:
    node = node.func if isinstance(node, ast.Call) else node
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def registers_commands(domain: str) -> bool:
    return any(isinstance(node, ast.FunctionDef) and node.name == "register_commands"
               for node in parse(domain, "__init__.py").body)


def test_every_domain_folder_is_a_declared_builtin_and_the_four_are_there():
    folders = sorted(p.name for p in DOMAINS_DIR.iterdir() if (p / "__init__.py").is_file())
    assert folders == DOMAINS
    assert {"audio", "image", "text", "molecules"} <= set(DOMAINS)
    assert HOOK_NAMES >= {"register_domains", "register_commands"}


@pytest.mark.parametrize("domain", DOMAINS)
def test_the_required_files_exist(domain):
    missing = [f for f in REQUIRED if not (DOMAINS_DIR / domain / f).is_file()]
    assert not missing, f"domains/{domain} lacks {missing}"


@pytest.mark.parametrize("domain", DOMAINS)
def test_init_holds_only_imports_and_hook_implementations(domain):
    for node in parse(domain, "__init__.py").body:
        if is_docstring(node) or isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        assert isinstance(node, ast.FunctionDef), \
            f"domains/{domain}/__init__.py line {node.lineno}: only imports and hookimpls belong here"
        assert node.name in HOOK_NAMES, f"{node.name} is not a hook ({sorted(HOOK_NAMES)})"
        assert "hookimpl" in [decorator_name(d) for d in node.decorator_list], node.name
    module = importlib.import_module(f"diffusekit.domains.{domain}")
    hooks = [name for name in HOOK_NAMES if hasattr(module, name)]
    assert "register_domains" in hooks
    for name in hooks:  # pluggy's own marker: the decorator really is the project's hookimpl
        assert hasattr(getattr(module, name), f"{hookspecs.PROJECT}_impl"), name


@pytest.mark.parametrize("domain", DOMAINS)
def test_domain_module_defines_exactly_one_domain_subclass(domain):
    classes = []
    for node in parse(domain, "domain.py").body:
        if is_docstring(node) or isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.ClassDef):
            classes.append(node.name)
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        assert isinstance(node, (ast.Assign, ast.AnnAssign)) and all(
            isinstance(t, ast.Name) and t.id.isupper() for t in targets), \
            f"domains/{domain}/domain.py line {node.lineno}: only the Domain subclass " \
            "(and module constants) belong here"
    assert len(classes) == 1, f"domains/{domain}/domain.py defines {classes}"
    cls = getattr(importlib.import_module(f"diffusekit.domains.{domain}.domain"), classes[0])
    assert issubclass(cls, Domain) and cls is not Domain and cls.name == domain


@pytest.mark.parametrize("domain", DOMAINS)
def test_commands_module_exists_exactly_when_the_domain_adds_commands(domain):
    has_file = (DOMAINS_DIR / domain / "commands.py").is_file()
    assert has_file == registers_commands(domain), \
        f"domains/{domain}: commands.py and the register_commands hook go together"
    if has_file:  # the hook adds commands, and each is defined in commands.py
        group = click.Group("toolkit")
        importlib.import_module(f"diffusekit.domains.{domain}").register_commands(cli=group)
        assert group.commands
        for command in group.commands.values():
            assert command.callback.__module__ == f"diffusekit.domains.{domain}.commands"
