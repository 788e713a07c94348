"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "plugins" / "example"


@pytest.fixture(scope="session")
def example_site(tmp_path_factory) -> Path:
    """A directory holding a regular (non-editable) install of plugins/example: its package,
    config.yaml as package data, and the dist-info with the "diffusekit" entry point. Put it on
    PYTHONPATH (or sys.path) to install the plugin; nothing in the shared venv changes. Built
    from a copy outside the tree, so no stale build/ or egg-info is reused or left behind."""
    site = tmp_path_factory.mktemp("example-site")
    source = tmp_path_factory.mktemp("example-src") / "example"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-compile", "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=300, cwd=source.parent,
        env={**os.environ, "PIP_NO_INPUT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    if out.returncode != 0:
        pytest.fail(f"installing plugins/example failed:\n{out.stderr[-3000:]}")
    assert (site / "diffusekit_example" / "config.yaml").is_file(), "config.yaml not shipped"
    return site


class _CurrentStderr:
    """A stream that writes to whatever `sys.stderr` is at the moment: each test's capture."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture(autouse=True)
def _lightning_logs_follow_stderr():
    """Lightning's loggers get a stderr handler at import, bound to the stderr of that moment:
    inside a test, a capture that is closed when the test ends, so every later test's Lightning
    log line would be a 'Logging error'. Once Lightning is imported, its own handlers write to
    the current stderr instead, so output lands in the running test's capture in any order."""
    if "lightning" in sys.modules:
        import logging

        for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
            for handler in logging.getLogger(name).handlers:
                if type(handler) is logging.StreamHandler:  # Lightning's own, never pytest's
                    handler.stream = _CurrentStderr()  # not setStream: it flushes the old one
    yield


@pytest.fixture
def toolkit(monkeypatch, capsys, tmp_path):
    """toolkit(*args) -> (exit status, stdout, stderr lines): the command line's `main` in this
    process, in tmp_path, with the data cache of every domain in tmp_path/cache (never a real
    cache). Test folders may wrap it (tests/cli adds the toy domain)."""
    from diffusekit.core import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIFFUSEKIT_DATA", str(tmp_path / "cache"))

    def run(*args: str):
        capsys.readouterr()
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, [line for line in err.splitlines() if line.strip()]

    return run
