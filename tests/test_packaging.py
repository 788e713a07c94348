"""The distribution: every package folder ships, a plain (non-editable) wheel builds, and the
engine imports with torch alone."""

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = {"api": "diffusekit", "core": "diffusekit.core", "domains": "diffusekit.domains",
       "plugins": "diffusekit.plugins"}
SKIP = {"example"}  # plugins/example is a separate distribution with its own pyproject


def _package_folders() -> set[str]:
    found = set()
    for folder, dotted in TOP.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            if SKIP & set(rel.parts) or "__pycache__" in rel.parts:
                continue
            found.add(".".join([dotted, *rel.parts]))
    return found


def _declared() -> set[str]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(cfg["tool"]["setuptools"]["packages"])


def test_every_package_folder_is_declared():
    missing = _package_folders() - _declared()
    assert not missing, f"add to [tool.setuptools].packages in pyproject.toml: {sorted(missing)}"


def test_plain_wheel_contains_every_package(tmp_path):
    """`pip install .` (not editable) must ship the same modules the editable install sees.
    Built from a copy, so setuptools' egg-info never lands in the checkout (where it would
    shadow the installed metadata for anything run from the repo root)."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "example")
    for folder in TOP:
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    if out.returncode != 0:
        pytest.fail(out.stderr[-2000:])
    (wheel,) = tmp_path.glob("diffusekit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for pkg in _package_folders():
        assert pkg.replace(".", "/") + "/__init__.py" in names, pkg
    sources = {"/".join([*dotted.split("."), *p.relative_to(ROOT / f).parts])
               for f, dotted in TOP.items() for p in (ROOT / f).rglob("*.py")
               if not SKIP & set(p.relative_to(ROOT).parts) and "__pycache__" not in p.parts}
    shipped = {n for n in names if n.startswith("diffusekit/") and n.endswith(".py")}
    assert sources == shipped, sources ^ shipped
    for yaml in (ROOT / "core").rglob("*.yaml"):
        assert "diffusekit/" + yaml.relative_to(ROOT).as_posix() in names, yaml
    # and the installed wheel works on its own: sample with the engine from the installed copy
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    code = (
        "import torch, diffusekit.core as c\n"
        f"assert c.__file__.startswith({str(site)!r}), c.__file__\n"
        "from diffusekit.core import samplers, schedules\n"
        "from diffusekit.core.analytic import GaussianMixture\n"
        "s = schedules.get('vp_cosine'); gm = GaussianMixture.ring_2d()\n"
        "x = samplers.get('dpmpp_2m')(gm.denoiser(s), torch.randn(64, 2), schedules.time_grid(s, 10), s)\n"
        "assert x.shape == (64, 2) and torch.isfinite(x).all()\n"
        "from diffusekit.core.app import config\n"
        "assert config.DEFAULTS_FILE.is_file(), config.DEFAULTS_FILE\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env, timeout=120)


def test_engine_imports_with_torch_only():
    code = (
        "import sys\n"
        "from diffusekit.core import schedules, samplers, spaces, losses, analytic\n"
        "from diffusekit.core.parameterization import Denoiser\n"
        "from diffusekit.core.discrete import MaskedDiffusion\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning', "
        "'omegaconf', 'pluggy', 'click') or m.startswith(('diffusekit.plugins', 'diffusekit.domains'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
