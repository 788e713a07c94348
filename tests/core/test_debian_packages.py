"""core.debian_packages: unpacking a .deb without root, offline (a tiny package built here)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from diffusekit.core.app import debian_packages
from diffusekit.core.app.debian_packages import MARKER, is_unpacked, unpack_package
from diffusekit.core.errors import DataError

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")


def build_deb(tmp_path: Path, package: str = "diffusekit-toy") -> Path:
    """A minimal package holding usr/share/doc/<package>/data/hello.txt, built by dpkg-deb."""
    src = tmp_path / "src"
    (src / "DEBIAN").mkdir(parents=True)
    (src / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: diffusekit tests <tests@example.org>\nDescription: a test package\n")
    data = src / "usr" / "share" / "doc" / package / "data"
    data.mkdir(parents=True)
    (data / "hello.txt").write_text("hello\n")
    deb = tmp_path / f"{package}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(src), str(deb)],
                   check=True, capture_output=True)
    return deb


@needs_dpkg
def test_unpacks_a_downloaded_deb_once(tmp_path: Path) -> None:
    deb = build_deb(tmp_path)
    calls: list[str] = []

    def download(package: str, folder: Path) -> Path:
        calls.append(package)
        return Path(shutil.copy(deb, folder))

    cache = tmp_path / "cache"
    root = unpack_package("diffusekit-toy", cache, download=download)
    assert root == cache / "diffusekit-toy"
    assert (root / "usr/share/doc/diffusekit-toy/data/hello.txt").read_text() == "hello\n"
    assert is_unpacked("diffusekit-toy", cache) and (root / MARKER).is_file()
    # a second call reuses the unpacked folder and downloads nothing
    assert unpack_package("diffusekit-toy", cache, download=download) == root
    assert calls == ["diffusekit-toy"]
    # no temporary folders are left beside it
    assert [p.name for p in cache.iterdir()] == ["diffusekit-toy"]


@needs_dpkg
def test_a_given_deb_replaces_an_interrupted_unpack(tmp_path: Path) -> None:
    deb = build_deb(tmp_path)
    stale = tmp_path / "cache" / "diffusekit-toy"
    (stale / "half").mkdir(parents=True)  # no marker: an interrupted earlier unpack

    def no_download(package: str, folder: Path) -> Path:
        raise AssertionError("must not download when a .deb is given")

    root = unpack_package("diffusekit-toy", tmp_path / "cache", deb=deb, download=no_download)
    assert not (root / "half").exists()
    assert (root / "usr/share/doc/diffusekit-toy/data/hello.txt").is_file()


@needs_dpkg
def test_a_corrupt_deb_is_one_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken_1.0_all.deb"
    bad.write_bytes(b"not an ar archive")
    with pytest.raises(DataError, match="dpkg -x broken_1.0_all.deb failed") as info:
        unpack_package("broken", tmp_path / "cache", deb=bad)
    assert "\n" not in str(info.value)
    assert not is_unpacked("broken", tmp_path / "cache")
    assert not (tmp_path / "cache" / "broken").exists()


def test_missing_tools_are_one_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debian_packages.shutil, "which", lambda tool: None)
    with pytest.raises(DataError, match="dpkg is not installed"):
        unpack_package("anything", tmp_path)
    with pytest.raises(DataError, match="apt-get is not installed"):
        debian_packages.apt_download("anything", tmp_path)


def test_a_failed_download_names_the_package(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "apt-get"
    fake.write_text("#!/bin/sh\necho 'E: Unable to locate package nope-pkg' >&2\nexit 100\n")
    fake.chmod(0o755)
    monkeypatch.setattr(debian_packages.shutil, "which", lambda tool: str(fake))
    with pytest.raises(DataError, match="apt-get download nope-pkg failed: E: Unable to locate"):
        debian_packages.apt_download("nope-pkg", tmp_path)
