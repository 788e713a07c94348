"""Real recordings that Debian packages ship: recorded noise for the mixtures, real speech to test on.

    fetch_recordings(cfg)         `toolkit prepare`: unpack each package of `data.packages` into
                                  the data root (apt-get download + dpkg -x, no root needed; see
                                  core/app/debian_packages.py); offline, it says so and goes on
    load_recordings(cfg, sr)      the unpacked packages' clips at `sr`: Recordings(noise, speech)

The only package known today is Debian's `alsa-utils`: its
/usr/share/sounds/alsa/ holds `Noise.wav` (1.4 s of coloured noise recorded at 48 kHz) and eight
spoken channel names by one speaker ("Front Left", ... at 48 kHz). The noise joins the `recorded`
noise kind (audio/noise.py; without it that kind falls back to pink noise); the speech joins the
real CMU ARCTIC clips as the extra real-speech test of the benchmark. A package that is not
unpacked contributes nothing, so a machine without network access still trains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from diffusekit.core.app import debian_packages
from diffusekit.core.errors import DataError
from diffusekit.core.registry import Registry
from diffusekit.domains.audio.corpus import load_wav

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackageLayout:
    """Where a package keeps its sound files, and which of them are noise (the rest: speech)."""

    folder: str
    noise: tuple[str, ...]


# data.packages entry -> where its recordings are
PACKAGES: Registry[PackageLayout] = Registry("audio recordings package")
PACKAGES.register("alsa-utils", PackageLayout("usr/share/sounds/alsa", ("Noise.wav",)))


@dataclass
class Recordings:
    """Mono float32 clips: `noise` (recorded noise) and `speech` (real utterances)."""

    noise: list[np.ndarray] = field(default_factory=list)
    speech: list[np.ndarray] = field(default_factory=list)


def _packages(cfg: DictConfig) -> list[str]:
    names = [str(p) for p in (cfg.data.get("packages") or [])]
    for name in names:
        PACKAGES.get(name)  # an unknown package is a clear error before anything is fetched
    return names


def fetch_recordings(cfg: DictConfig, root: Path) -> list[Path]:
    """Unpack every package of `data.packages` under `root` (once); the unpacked roots. A failed
    download (offline, no apt-get) is reported in one line and skipped."""
    out = []
    for name in _packages(cfg):
        try:
            out.append(debian_packages.unpack_package(name, root))
        except DataError as exc:
            print(f"audio: recordings of {name} not available ({exc}); going on without them")
    return out


def load_recordings(cfg: DictConfig, root: Path, sample_rate: int) -> Recordings:
    """The clips of every unpacked package of `data.packages` under `root`, at `sample_rate`
    (sorted by file name); packages not unpacked are skipped."""
    out = Recordings()
    for name in _packages(cfg):
        if not debian_packages.is_unpacked(name, root):
            log.info("audio data: %s is not unpacked under %s; its recordings are not used",
                     name, root)
            continue
        layout = PACKAGES.get(name)
        folder = debian_packages.unpacked_root(name, root) / layout.folder
        for path in sorted(folder.glob("*.wav")):
            clip = load_wav(path, sample_rate)
            (out.noise if path.name in layout.noise else out.speech).append(clip)
    return out
