"""Recordings from Debian packages: recorded noise joins the mixtures, real speech the real test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from omegaconf import OmegaConf

from diffusekit.core.app import debian_packages
from diffusekit.core.errors import DataError
from diffusekit.domains.audio import recordings
from diffusekit.domains.audio.data import AudioDataModule


def fake_alsa_utils(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """alsa-utils as `unpack_package` leaves it (its marker written), with a 48 kHz noise clip
    and a 48 kHz 'speech' clip; returns both waves."""
    unpacked = debian_packages.unpacked_root("alsa-utils", root)
    folder = unpacked / "usr/share/sounds/alsa"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(4800)).astype(np.float32)
    speech = (0.3 * np.sin(2 * np.pi * 220 * np.arange(9600) / 48000)).astype(np.float32)
    sf.write(str(folder / "Noise.wav"), noise, 48000)
    sf.write(str(folder / "Front_Left.wav"), speech, 48000)
    (unpacked / debian_packages.MARKER).write_text("alsa-utils\n")
    return noise, speech


def _cfg(packages):
    return OmegaConf.create({"data": {"packages": packages}})


def test_noise_and_speech_are_told_apart_and_resampled(tmp_path):
    noise, speech = fake_alsa_utils(tmp_path)
    got = recordings.load_recordings(_cfg(["alsa-utils"]), tmp_path, 16000)
    assert len(got.noise) == 1 and len(got.speech) == 1
    assert got.noise[0].shape == (1600,) and got.speech[0].shape == (3200,)  # 48 kHz -> 16 kHz
    assert got.noise[0].dtype == np.float32
    # resampling keeps the band below 8 kHz: a third of white noise's power at 48 kHz
    assert np.isclose(got.noise[0].std(), noise.std() / np.sqrt(3.0), rtol=0.1)
    assert np.isclose(got.speech[0].std(), speech.std(), rtol=0.05)  # a 220 Hz tone is kept


def test_a_package_not_unpacked_gives_nothing_and_an_unknown_one_is_an_error(tmp_path):
    assert recordings.load_recordings(_cfg(["alsa-utils"]), tmp_path, 16000).noise == []
    assert recordings.load_recordings(_cfg([]), tmp_path, 16000).speech == []
    with pytest.raises(Exception, match="no-such-package"):
        recordings.load_recordings(_cfg(["no-such-package"]), tmp_path, 16000)


def test_an_offline_fetch_says_so_and_goes_on(tmp_path, monkeypatch, capsys):
    def offline(package, folder):
        raise DataError(f"apt-get download {package} failed: network unreachable")

    monkeypatch.setattr(debian_packages, "apt_download", offline)
    assert recordings.fetch_recordings(_cfg(["alsa-utils"]), tmp_path) == []
    out = capsys.readouterr().out
    assert "alsa-utils" in out and "network unreachable" in out and "going on" in out


def test_the_data_module_mixes_recorded_noise_and_tests_on_the_real_speech(tiny_cfg, tmp_path):
    """With alsa-utils unpacked in the data root, the `recorded` kind draws the recorded clip and
    its speech joins the real clips."""
    fake_alsa_utils(Path(str(tiny_cfg.data.cache_dir)))
    try:
        cfg = OmegaConf.merge(tiny_cfg, {"data": {"packages": ["alsa-utils"],
                                                  "noise_kinds": ["recorded"]}})
        dm = AudioDataModule.from_config(cfg)
        dm.setup()
        pool = dm.splits["train"].pool
        assert len(pool.recorded) == 1 and len(dm.real) == 1
        item = dm.splits["test"][0]
        assert item["noisy_wave"].shape == item["clean_wave"].shape
        assert not np.allclose(item["noisy_wave"], item["clean_wave"])
    finally:
        import shutil

        shutil.rmtree(debian_packages.unpacked_root("alsa-utils", tiny_cfg.data.cache_dir))
