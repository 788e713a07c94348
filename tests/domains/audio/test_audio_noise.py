"""Noise kinds and mixing at a given SNR."""

from __future__ import annotations

import numpy as np
import pytest

from diffusekit.domains.audio.noise import NOISES, NoisePool, coloured, mix, noisy_version


@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.5, 15.0])
def test_mix_hits_the_snr(snr):
    rng = np.random.default_rng(1)
    clean = rng.standard_normal(8000).astype(np.float32)
    noise = rng.standard_normal(8000).astype(np.float32) * 3
    noisy = mix(clean, noise, snr)
    residual = noisy - clean
    measured = 10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum(residual ** 2))
    assert abs(measured - snr) < 1e-3


def test_coloured_noise_slopes():
    rng = np.random.default_rng(0)
    for exponent in (0.0, 1.0, 2.0):
        x = coloured(2 ** 16, exponent, rng)
        power = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(len(x))
        low = power[(f > 0.01) & (f < 0.02)].mean()
        high = power[(f > 0.2) & (f < 0.4)].mean()
        # a decade-ish apart (x ~20): ratio ~ 20^exponent
        assert 0.3 * 20 ** exponent < low / high < 3 * 20 ** exponent
        assert abs(np.sqrt(np.mean(x ** 2)) - 1.0) < 1e-4


def test_every_kind_gives_unit_rms_noise_of_the_right_length():
    rng = np.random.default_rng(0)
    pool = NoisePool(speech=[rng.standard_normal(5000).astype(np.float32)],
                     recorded=[rng.standard_normal(3000).astype(np.float32)])
    for kind in NOISES.names():
        x = NOISES.get(kind)(12345, 16000, rng, pool)
        assert x.shape == (12345,) and np.isfinite(x).all()
        assert abs(np.sqrt(np.mean(x.astype(np.float64) ** 2)) - 1.0) < 1e-3, kind
    hum = NOISES.get("hum")(16000, 16000, np.random.default_rng(3), pool)
    spectrum = np.abs(np.fft.rfft(hum))
    assert np.argmax(spectrum) in range(45, 66) or np.argmax(spectrum) in range(95, 125)


def test_noisy_version_draws_kind_and_snr_in_range():
    rng = np.random.default_rng(0)
    clean = rng.standard_normal(4000).astype(np.float32)
    for _ in range(10):
        noisy, kind, snr = noisy_version(clean, 16000, rng, NoisePool(), ["white", "pink"],
                                         (-5.0, 15.0))
        assert kind in ("white", "pink") and -5.0 <= snr <= 15.0 and noisy.shape == clean.shape
