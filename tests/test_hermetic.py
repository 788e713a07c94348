"""The hermetic session of tests/conftest.py: every folder a library would find through the home
directory lies in the session's temporary folder, and a write into a real place is reported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# what a library reads to find a folder in the user's home (all must be moved, not only HOME)
HOME_VARIABLES = ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR", "TORCH_HOME",
                  "HF_HOME", "HF_HUB_CACHE", "PIP_CACHE_DIR", "DIFFUSEKIT_DATA")


@pytest.fixture
def session_root(request) -> Path:
    """The temporary folder tests/conftest.py made for this session."""
    return request.config._diffusekit_hermetic_root


def _inside(path: str | Path, root: Path) -> bool:
    return Path(path).resolve().is_relative_to(root.resolve())


def test_home_variables_and_the_data_cache_point_into_the_session_folder(session_root):
    from diffusekit.core.app.config import data_cache

    for name in HOME_VARIABLES:
        assert _inside(os.environ[name], session_root), (name, os.environ[name])
    assert _inside(Path.home(), session_root) and _inside(data_cache("audio"), session_root)
    assert Path(os.environ["DIFFUSEKIT_DATA"]) != Path(os.environ["HOME"])


def test_libraries_find_their_folders_in_the_session_folder(session_root):
    """matplotlib's config and font cache, torch.hub, the Hugging Face cache, pip's cache: all
    read after the session moved them (conftest's pytest_configure runs before any import)."""
    import matplotlib
    import torch

    folders = {"matplotlib config": matplotlib.get_configdir(),
               "matplotlib cache": matplotlib.get_cachedir(), "torch hub": torch.hub.get_dir()}
    # the Hub's cache, as transformers (the text extra) and diffusers (dev) read it
    constants = pytest.importorskip("huggingface_hub.constants")
    folders["huggingface"] = constants.HF_HUB_CACHE
    assert constants.HF_HUB_OFFLINE
    for what, folder in folders.items():
        assert _inside(folder, session_root), (what, folder)


def test_a_subprocess_inherits_the_moved_home(session_root):
    """The tests that run `toolkit` or pip in a subprocess see the same temporary home."""
    script = ("import json, pathlib, os; from diffusekit.core.app.config import data_cache; "
              "print(json.dumps([str(pathlib.Path.home()), str(data_cache())]))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    home, cache = json.loads(out.stdout)
    assert _inside(home, session_root) and _inside(cache, session_root)
    pip = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True,
                         text=True, timeout=120)
    assert pip.returncode == 0 and _inside(pip.stdout.strip(), session_root), pip.stdout


def test_the_session_guard_reports_writes_into_the_real_places(request, tmp_path):
    """`RealPlaces` (what pytest_sessionfinish checks) lists a new, a changed and a removed file
    of the data cache and a new folder in the home's .cache; a folder already in the home
    that changes is someone else's business (only new entries count there)."""
    real_places = type(request.config._diffusekit_real_places)
    home, cache = tmp_path / "home", tmp_path / "cache"
    (home / ".cache" / "pip").mkdir(parents=True)
    (cache / "audio").mkdir(parents=True)
    (cache / "audio" / "kept.wav").write_bytes(b"1")
    (cache / "audio" / "gone.wav").write_bytes(b"2")
    guard = real_places(home, cache)

    def mine() -> list[str]:  # the checkout is watched too; other writers may touch it meanwhile
        return [line for line in guard.changes() if str(tmp_path) in line]

    assert mine() == []
    (cache / "audio" / "kept.wav").write_bytes(b"changed")
    (cache / "audio" / "gone.wav").unlink()
    (cache / "molecules").mkdir()
    (home / ".cache" / "torch").mkdir()
    (home / ".cache" / "pip" / "http").mkdir()  # inside an existing entry: not reported
    assert mine() == [
        f"the real data cache: removed {cache / 'audio' / 'gone.wav'}",
        f"the real data cache: changed {cache / 'audio' / 'kept.wav'}",
        f"the real data cache: new {cache / 'molecules'}",
        f"the real home folder: new {home / '.cache' / 'torch'}",
    ]


def test_the_checkout_outputs_are_watched(request):
    """runs/ and lightning_logs/ of the checkout (ignored by git, so `git status` in .ci/run
    cannot see them) are among the places the session checks."""
    root = Path(__file__).resolve().parents[1]
    watched = {folder for _, folder, _, _ in request.config._diffusekit_real_places.places}
    assert {root / "runs", root / "lightning_logs", root} <= watched
