"""Noise for the audio domain and mixing at a chosen SNR.

Kinds (registry `NOISES`, each `make(n_samples, sample_rate, rng, pool) -> [n] float32`):

    white   flat spectrum
    pink    power ~ 1/f   (spectral shaping of white noise in the FFT domain)
    brown   power ~ 1/f^2
    hum     mains hum: 50 or 60 Hz and its harmonics with decaying random amplitudes, plus a
            little broadband hiss (electrical interference)
    babble  3-6 other speakers from `pool` (clean training utterances) summed at random offsets
    recorded  a random stretch of a recorded noise clip of `pool` (when the pool holds any)
    siren   an emergency siren: a square-ish tone whose pitch sweeps up and down (wail or yelp);
            not in the default `data.noise_kinds`: the customisation benchmark's shifted target

`mix(clean, noise, snr_db)` scales the noise so that 10 log10(P_clean / P_noise) = snr_db.

Packet loss (`PacketLoss`, `data.packet_loss`) is the other degradation: stretches of the signal
lost and zero-filled, as a receiver without concealment plays them (`drop_packets`). A share of the
training mixtures get it (off by default; the repair benchmark's base trains with it, so that the
model has seen gaps in its condition; docs/repair.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from diffusekit.core.registry import Registry


@dataclass
class NoisePool:
    """Waveforms noise kinds draw from: `speech` (babble) and `recorded` noise clips."""

    speech: list[np.ndarray] = field(default_factory=list)
    recorded: list[np.ndarray] = field(default_factory=list)


NoiseFn = Callable[[int, int, np.random.Generator, NoisePool], np.ndarray]
NOISES: Registry[NoiseFn] = Registry("noise kind")


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / max(1e-8, float(np.sqrt(np.mean(x ** 2))))).astype(np.float32)


def coloured(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with power spectral density ~ 1/f^exponent (0 white, 1 pink, 2 brown), unit RMS:
    white Gaussian noise whose rfft is scaled by f^(-exponent/2)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    return _unit(np.fft.irfft(spectrum * f ** (-exponent / 2.0), n))


@NOISES.register("white")
def white(n: int, sr: int, rng: np.random.Generator, pool: NoisePool) -> np.ndarray:
    """Flat-spectrum Gaussian noise."""
    return _unit(rng.standard_normal(n))


@NOISES.register("pink")
def pink(n: int, sr: int, rng: np.random.Generator, pool: NoisePool) -> np.ndarray:
    """1/f noise."""
    return coloured(n, 1.0, rng)


@NOISES.register("brown")
def brown(n: int, sr: int, rng: np.random.Generator, pool: NoisePool) -> np.ndarray:
    """1/f^2 (Brownian) noise."""
    return coloured(n, 2.0, rng)


@NOISES.register("hum")
def hum(n: int, sr: int, rng: np.random.Generator, pool: NoisePool) -> np.ndarray:
    """Mains hum: sum_k a_k sin(2 pi k f0 t + phi_k), f0 in {50, 60} Hz, k < 8000 / f0 up to 12,
    a_k ~ U(0.2, 1) / k^0.7, plus hiss 20 dB below."""
    f0 = float(rng.choice([50.0, 60.0])) * float(rng.uniform(0.99, 1.01))
    t = np.arange(n) / sr
    x = np.zeros(n)
    for k in range(1, min(12, int(sr / 2 / f0)) + 1):
        x += rng.uniform(0.2, 1.0) / k ** 0.7 * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3))
    return _unit(_unit(x) + 0.1 * rng.standard_normal(n))


def _stretch(source: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of `source` from a random start, looped when it is shorter."""
    reps = -(-n // len(source)) + 1
    long = np.tile(source, reps)
    start = int(rng.integers(0, len(source)))
    return long[start:start + n]


@NOISES.register("babble")
def babble(n: int, sr: int, rng: np.random.Generator, pool: NoisePool) -> np.ndarray:
    """3-6 other speakers of `pool.speech`, each at a random offset and gain (white noise when
    the pool is empty)."""
    if not pool.speech:
        return white(n, sr, rng, pool)
    x = np.zeros(n, dtype=np.float32)
    for _ in range(int(rng.integers(3, 7))):
        clip = pool.speech[int(rng.integers(len(pool.speech)))]
        x += rng.uniform(0.5, 1.0) * _unit(_stretch(clip, n, rng))
    return _unit(x)


@NOISES.register("recorded")
def recorded(n: int, sr: int, rng: np.random.Generator, pool: NoisePool) -> np.ndarray:
    """A random stretch of a recorded noise clip (pink noise when none is available)."""
    if not pool.recorded:
        return pink(n, sr, rng, pool)
    return _unit(_stretch(pool.recorded[int(rng.integers(len(pool.recorded)))], n, rng))


# Electronic sirens drive a horn with a square wave whose pitch is swept; bands seen in practice:
# fundamental ~500-1800 Hz, wail ~2-6 s a cycle, yelp ~3-6 cycles a second.
SIREN_LOW = (500.0, 800.0)      # Hz: range of the sweep's lowest pitch
SIREN_HIGH = (1200.0, 1700.0)   # Hz: range of its highest pitch
SIREN_WAIL = (3.0, 6.0)         # s: period of a slow wail
SIREN_YELP = (0.15, 0.35)       # s: period of a fast yelp


@NOISES.register("siren")
def siren(n: int, sr: int, rng: np.random.Generator, pool: NoisePool) -> np.ndarray:
    """Siren: f(t) = lo + (hi - lo) (1 - cos(2 pi t / P + phi)) / 2, lo ~ U(SIREN_LOW),
    hi ~ U(SIREN_HIGH), P a wail's or a yelp's period (even odds); the odd harmonics k = 1, 3, 5,
    7 of that pitch at 1 / k (a square wave's), each faded out as k f(t) nears 0.45 sr (no
    aliasing); plus hiss 26 dB below. Unlike every default kind it is narrow-band and its pitch
    moves through the speech band like a voice's, only faster and wider."""
    lo, hi = rng.uniform(*SIREN_LOW), rng.uniform(*SIREN_HIGH)
    period = rng.uniform(*(SIREN_WAIL if rng.random() < 0.5 else SIREN_YELP))
    t = np.arange(n) / sr
    f = lo + (hi - lo) * 0.5 * (1.0 - np.cos(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(f) / sr + rng.uniform(0, 2 * np.pi)
    x = np.zeros(n)
    for k in (1, 3, 5, 7):
        fade = np.clip((0.45 * sr - k * f) / (0.05 * sr), 0.0, 1.0)
        x += fade / k * np.sin(k * phase)
    return _unit(_unit(x) + 0.05 * rng.standard_normal(n))


def mix(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """clean + g * noise with g chosen so that 10 log10(sum clean^2 / sum (g noise)^2) = snr_db."""
    p_clean = float(np.mean(clean.astype(np.float64) ** 2))
    p_noise = max(1e-12, float(np.mean(noise.astype(np.float64) ** 2)))
    gain = np.sqrt(p_clean / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (clean + gain * noise).astype(np.float32)


@dataclass(frozen=True)
class PacketLoss:
    """Lost stretches of a training mixture: with probability `share` a mixture loses 1 to
    `max_gaps` stretches of `min_ms` to `max_ms` milliseconds each (zeroed); of those, a share
    `clean_share` is the clean signal with gaps and no noise (what a concealer receives).
    `fill` names how the condition shows the lost frames (`concealment.GAP_FILLS`): "floor"
    (the gapped signal's log-mel as it is, at the floor there) or "linear" (each lost frame
    interpolated between the received ones, so that the model starts from the classic
    concealment and learns what to change; the Palette / SD-inpainting recipe for images)."""

    share: float = 0.0
    clean_share: float = 0.5
    min_ms: float = 20.0
    max_ms: float = 200.0
    max_gaps: int = 3
    fill: str = "floor"

    @classmethod
    def from_config(cls, section: Any) -> "PacketLoss":
        """From `data.packet_loss` (absent: none)."""
        if not section:
            return cls()
        return cls(float(section.share), float(section.clean_share), float(section.min_ms),
                   float(section.max_ms), int(section.max_gaps), str(section.get("fill", "floor")))


def gap_spans(n: int, sr: int, rng: np.random.Generator, count: int, min_ms: float,
              max_ms: float) -> list[tuple[int, int]]:
    """`count` sample ranges [start, end) of min_ms..max_ms in a signal of n samples, drawn one
    after another (they may touch or overlap), sorted."""
    spans = []
    for _ in range(count):
        length = int(round(rng.uniform(min_ms, max_ms) * sr / 1000))
        length = max(1, min(length, n))
        start = int(rng.integers(0, n - length + 1))
        spans.append((start, start + length))
    return sorted(spans)


def drop_packets(clean: np.ndarray, noisy: np.ndarray, sr: int, rng: np.random.Generator,
                 loss: PacketLoss) -> tuple[np.ndarray, np.ndarray | None]:
    """(the noisy waveform after packet loss (see `PacketLoss`), the lost samples [n] bool or
    None when none were lost); no draw at all when the share is 0, so the default data stay as
    they were."""
    if loss.share <= 0 or rng.random() >= loss.share:
        return noisy, None
    out = clean.copy() if rng.random() < loss.clean_share else noisy.copy()
    lost = np.zeros(len(out), dtype=bool)
    for start, end in gap_spans(len(out), sr, rng, int(rng.integers(1, loss.max_gaps + 1)),
                                loss.min_ms, loss.max_ms):
        out[start:end] = 0.0
        lost[start:end] = True
    return out, lost


def noisy_version(clean: np.ndarray, sr: int, rng: np.random.Generator, pool: NoisePool,
                  kinds: list[str], snr_range: tuple[float, float]) -> tuple[np.ndarray, str, float]:
    """(noisy waveform, noise kind, SNR in dB): a kind drawn from `kinds`, an SNR uniform in
    `snr_range` (the caller rescales clean and noisy together if the mixture would clip)."""
    kind = kinds[int(rng.integers(len(kinds)))]
    snr = float(rng.uniform(*snr_range))
    noisy = mix(clean, NOISES.get(kind)(len(clean), sr, rng, pool), snr)
    return noisy, kind, snr
