"""Fixtures of the plugin tests (the example plugin's install, `example_site`, is in
tests/conftest.py): fake distributions (a plugin that cannot be imported, one whose hook raises), and a runner that
discovers plugins in a fresh interpreter (so new dist-info directories are seen)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest



def write_fake_dist(site: Path, dist: str, entry_points: dict[str, str],
                    modules: dict[str, str]) -> None:
    """A minimal installed distribution in `site`: `<dist>-0.1.dist-info` with METADATA and
    entry_points.txt (group "diffusekit"), plus top-level modules {name: source}."""
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text("[diffusekit]\n" + lines)
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture(scope="session")
def fake_site(tmp_path_factory) -> Path:
    """Three fake plugins: `broken` cannot be imported, `raising` raises in register_domains,
    `typo` implements a hook that does not exist."""
    site = tmp_path_factory.mktemp("fake-site")
    write_fake_dist(site, "broken-plugin", {"broken": "broken_plugin"}, {
        "broken_plugin": """
            raise ImportError("broken_plugin needs the package 'frobnicate'\\nsecond line")
        """})
    write_fake_dist(site, "raising-plugin", {"raising": "raising_plugin"}, {
        "raising_plugin": """
            from diffusekit.plugins import hookimpl

            @hookimpl
            def register_domains(register):
                raise RuntimeError("no licence for the weather data")
        """})
    write_fake_dist(site, "typo-plugin", {"typo": "typo_plugin"}, {
        "typo_plugin": """
            from diffusekit.plugins import hookimpl

            @hookimpl
            def register_sampler(register):
                pass
        """})
    return site


DISCOVER = """
import json
from diffusekit.core import samplers, schedules
import diffusekit.plugins as plugins

out = {"samplers": samplers.names()}  # first look-up: the registry's lazy loader discovers
out["schedules"] = schedules.names()
out["domains"] = plugins.domain_names()
out["report"] = [r.as_dict() for r in plugins.plugin_report()]
try:
    plugins.get_domain("exampel")
except Exception as exc:
    out["unknown"] = [type(exc).__name__, str(exc)]
print(json.dumps(out))
"""


def _discover(*sites: Path, plugins_env: str | None = None, cwd: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DIFFUSEKIT_PLUGINS", "PYTHONPATH")}
    env["PYTHONPATH"] = os.pathsep.join(str(s) for s in sites)
    if plugins_env is not None:
        env["DIFFUSEKIT_PLUGINS"] = plugins_env
    out = subprocess.run([sys.executable, "-c", DISCOVER], capture_output=True, text=True,
                         env=env, cwd=cwd, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def discover():
    """discover(*sites, plugins_env=None, cwd=dir) -> dict: run discovery in a fresh interpreter
    with `sites` on PYTHONPATH and report what it saw (samplers, schedules, domains, report, the
    error of an unknown domain). `cwd` must not be the repository root: a stale in-tree
    diffusekit.egg-info there would shadow the installed metadata."""
    return _discover


@pytest.fixture(scope="session")
def example_module(example_site):
    """The installed `diffusekit_example` package, imported in this process (the copy in
    `example_site` unless another test imported the venv's copy first)."""
    sys.path.insert(0, str(example_site))
    try:
        import diffusekit_example

        yield diffusekit_example
    finally:
        sys.path.remove(str(example_site))
