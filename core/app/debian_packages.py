"""Debian packages as offline data sources, fetched and unpacked without root.

Some data the domains use ship inside Debian packages (DATA.md beside DESIGN.md): opencv-doc's
example photos for the image domain, alsa-utils' recordings for audio. Installing them needs root;
unpacking them does not:

    apt-get download <package>        # the .deb of the configured release, into the current folder
    dpkg -x <package>.deb <dest>      # its files under <dest>/usr/..., no maintainer scripts run

`unpack_package(name, cache_dir)` does both into `cache_dir/<name>/` and writes a marker file
last, so a finished unpack is reused and an interrupted one is redone. The download step is a
callable (`apt_download` by default) so that tests and users can hand in a .deb they already have.
Every failure a user can act on (no apt-get or dpkg, an unknown package, no network, a corrupt
.deb) is a one-line `DataError`.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

from diffusekit.core.errors import DataError

MARKER = ".unpacked"  # written inside the unpacked root once dpkg -x has finished

# downloader(package, folder) -> path of the package's .deb inside `folder`
Downloader = Callable[[str, Path], Path]


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise DataError(f"{tool} is not installed; it is needed to fetch Debian packages "
                        "(a Debian or Ubuntu system), or point the config at an unpacked copy")
    return path


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def apt_download(package: str, folder: Path) -> Path:
    """`apt-get download <package>` into `folder` (no root needed); the .deb's path."""
    apt_get = _require("apt-get")
    done = subprocess.run([apt_get, "download", package], cwd=folder, capture_output=True,
                          text=True)
    debs = sorted(Path(folder).glob(f"{package}_*.deb"))
    if done.returncode != 0 or not debs:
        raise DataError(f"apt-get download {package} failed: {_last_line(done.stderr)}")
    return debs[-1]


def unpacked_root(package: str, cache_dir: Path | str) -> Path:
    """Where `unpack_package` puts `package`: `cache_dir/<package>`."""
    return Path(cache_dir).expanduser() / package


def is_unpacked(package: str, cache_dir: Path | str) -> bool:
    """Whether `package` was fully unpacked under `cache_dir` (its marker file exists)."""
    return (unpacked_root(package, cache_dir) / MARKER).is_file()


def unpack_package(package: str, cache_dir: Path | str, *, deb: Path | str | None = None,
                   download: Downloader | None = None) -> Path:
    """The folder `cache_dir/<package>` holding the package's files (usr/share/...).

    Skips all work when a previous call finished (marker file). Otherwise the .deb is `deb` when
    given, else `download(package, tmp)` (default: `apt-get download`); `dpkg -x` unpacks it into
    a temporary folder beside the destination, which is renamed into place, so a half-finished
    unpack is never taken for a finished one. Raises `DataError` (one line) on any failure."""
    root = unpacked_root(package, cache_dir)
    if is_unpacked(package, cache_dir):
        return root
    dpkg = _require("dpkg")
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{package}-", dir=root.parent) as tmp:
        tmp_path = Path(tmp)
        fetch = download if download is not None else apt_download  # looked up at call time
        deb_path = Path(deb) if deb is not None else fetch(package, tmp_path)
        if not deb_path.is_file():
            raise DataError(f"Debian package file {str(deb_path)!r} does not exist")
        staging = tmp_path / "root"
        done = subprocess.run([dpkg, "-x", str(deb_path), str(staging)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise DataError(f"dpkg -x {deb_path.name} failed: {_last_line(done.stderr)}")
        (staging / MARKER).write_text(f"{package} from {deb_path.name}\n")
        if root.exists():  # an interrupted earlier unpack (no marker): replace it
            shutil.rmtree(root)
        staging.rename(root)
    return root
