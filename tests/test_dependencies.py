"""Every third-party package the code imports is declared in pyproject.toml, where it belongs.

The rule, per folder (imports read with `ast`, so every import counts: at the top of a module,
inside a function, under `try: ... except ImportError` for an optional feature, or under
`if TYPE_CHECKING`; a package that arrives only as someone else's dependency is not declared):

    core/, plugins/ (the engine, the plugin API)   the base dependencies
    domains/<name>/                                the base dependencies + the extra <name>
    plugins/example/ (its own distribution)        its own dependencies + diffusekit's base
    tests/                                         base + dev + every domain's extra (`make test`
                                                   installs them all)
    benchmarks/                                    base + bench

Not third-party: the standard library (`sys.stdlib_module_names`), relative imports,
`diffusekit` itself, and the modules of the folder's own tree (test helpers such as
`toy_domain`, the example plugin's `diffusekit_example`). An import name maps to its
distribution through the installed packages' metadata, and through `DISTRIBUTIONS` for names
that differ and may not be installed (PIL -> Pillow, yaml -> PyYAML, ...).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "plugins" / "example"

# import name -> distribution, where they differ (also used when the package is not installed)
DISTRIBUTIONS = {
    "PIL": "Pillow", "yaml": "PyYAML", "sklearn": "scikit-learn", "skimage": "scikit-image",
    "torch_geometric": "torch-geometric", "cv2": "opencv-python", "attr": "attrs",
    "google": "protobuf", "dateutil": "python-dateutil", "pytorch_lightning": "lightning",
}
# imports that name no distribution to declare -> why
NOT_DISTRIBUTIONS = {
    "k_diffusion": "benchmarks/sampler_baselines.py loads k-diffusion's sampling.py from its "
                   "wheel (the package is not installable beside CPU torch) when no copy is "
                   "installed",
    "diffusekit_example": "the example plugin: tests/conftest.py's example_site installs it "
                          "from plugins/example",
}


def normalise(name: str) -> str:
    """PEP 503: Pillow, pillow and PILLOW are one distribution; so are torch_geometric and
    torch-geometric."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    """The normalised distribution names of PEP 508 requirement strings."""
    return {normalise(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", r).group(1))
            for r in requirements}


@cache
def declared() -> dict[str, set[str]]:
    """{"base": ..., "<extra>": ...} of this project's pyproject.toml, normalised names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = {"base": requirement_names(project["dependencies"])}
    for extra, requirements in project.get("optional-dependencies", {}).items():
        out[extra] = requirement_names(requirements)
    return out


def imports(folder: Path, skip: tuple[Path, ...] = ()) -> dict[str, set[str]]:
    """Top-level name -> the files that import it, for every .py under `folder` (but not under
    `skip`), without stdlib, relative and `diffusekit` imports and the tree's own modules."""
    files = [p for p in folder.rglob("*.py")
             if "__pycache__" not in p.parts and not any(p.is_relative_to(s) for s in skip)]
    own = {p.stem for p in files} | {p.parent.name for p in files} | {"diffusekit"}
    found: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in own:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


@cache
def _installed() -> dict[str, list[str]]:
    return packages_distributions()


def distributions(top: str) -> set[str]:
    """The normalised distributions that may provide import name `top`."""
    names = {DISTRIBUTIONS.get(top, top), *_installed().get(top, [])}
    return {normalise(n) for n in names}


def undeclared(found: dict[str, set[str]], allowed: set[str], where: str) -> list[str]:
    """One line per import of `found` that no distribution of `allowed` provides."""
    return [f"{top} (from {sorted(files)[0]}{' and more' if len(files) > 1 else ''}): declare "
            f"{DISTRIBUTIONS.get(top, top)} in {where}"
            for top, files in sorted(found.items())
            if top not in NOT_DISTRIBUTIONS and not distributions(top) & allowed]


def domain_names() -> list[str]:
    return sorted(p.name for p in (ROOT / "domains").iterdir() if (p / "__init__.py").is_file())


def test_every_domain_has_its_extra():
    """`pip install diffusekit[<domain>]` is how a user gets a domain's dependencies."""
    missing = [name for name in domain_names() if name not in declared()]
    assert not missing, f"add [project.optional-dependencies] extras for {missing}"


def test_engine_and_plugin_api_imports_are_base_dependencies():
    found = imports(ROOT / "core")
    for name, files in imports(ROOT / "plugins", skip=(EXAMPLE,)).items():
        found.setdefault(name, set()).update(files)
    assert "torch" in found  # the scan sees imports at all
    assert not undeclared(found, declared()["base"], "the base dependencies")


@pytest.mark.parametrize("domain", domain_names())
def test_domain_imports_are_in_its_extra_or_the_base(domain):
    found = imports(ROOT / "domains" / domain)
    problems = undeclared(found, declared()["base"] | declared().get(domain, set()),
                          f"the extra {domain!r} (or the base dependencies)")
    assert not problems, problems


def test_example_plugin_imports_are_its_own_or_diffusekit_base_dependencies():
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    own = requirement_names(project.get("dependencies", []))
    assert "diffusekit" in own
    problems = undeclared(imports(EXAMPLE), own | declared()["base"],
                          "plugins/example/pyproject.toml")
    assert not problems, problems


def test_test_and_benchmark_imports_are_declared():
    everything = declared()["base"] | declared()["dev"]
    everything |= set().union(*(declared()[d] for d in domain_names()))
    problems = undeclared(imports(ROOT / "tests"), everything, "the extra 'dev'")
    problems += undeclared(imports(ROOT / "benchmarks"),
                           declared()["base"] | declared()["bench"], "the extra 'bench'")
    assert not problems, problems


def test_an_undeclared_import_is_reported(tmp_path, monkeypatch):
    """The check itself: Pillow imported as PIL is found and mapped, even when Pillow is not
    among the allowed distributions; a stdlib, a relative and an own-module import are not."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "helper.py").write_text("X = 1\n")
    (tmp_path / "pkg" / "mod.py").write_text(
        "import os, json\nfrom . import helper\nimport helper\n"
        "def f():\n    try:\n        from PIL import Image\n    except ImportError:\n"
        "        pass\n")
    found = imports(tmp_path / "pkg")
    assert found == {"PIL": {"pkg/mod.py"}}
    assert undeclared(found, {"numpy"}, "x") == ["PIL (from pkg/mod.py): declare Pillow in x"]
    assert undeclared(found, {"pillow"}, "x") == []
