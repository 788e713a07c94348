"""Log-mel features: the round trip, mask reconstruction from the true mel, chunking."""

from __future__ import annotations

import numpy as np
import torch

from diffusekit.domains.audio.features import MelFeatures, enhance_in_chunks
from diffusekit.domains.audio.metrics import si_sdr
from diffusekit.domains.audio.noise import NOISES, NoisePool, mix


def test_mel_round_trip(speech):
    f = MelFeatures()
    wave = torch.from_numpy(speech)
    spec = f.stft(wave)
    # the STFT itself inverts exactly
    assert torch.allclose(f.istft(spec, len(wave)), wave, atol=1e-5)
    # M = Fb^T |S|^2, and normalise / denormalise are inverses
    mel = f.mel_power(spec)
    assert mel.shape == (64, f.frames(len(wave)))
    x = f.encode(wave)
    assert torch.allclose(f.denormalise(x), mel, rtol=1e-3, atol=1e-6)
    assert torch.allclose(f.normalise(f.denormalise(x)), x, atol=1e-4)
    # the normalisation gives roughly unit-scale features for speech
    assert -1.0 < float(x.mean()) < 1.0 and 0.5 < float(x.std()) < 2.0
    # samples_for / frames agree
    assert f.frames(f.samples_for(128)) == 128


def test_mask_reconstruction_from_true_mel(speech):
    """The clean mel's mask on the noisy STFT (white noise, 5 dB) gives SI-SDR > 15 dB; with no
    noise at all the mask is 1 and the clean speech comes back (almost) exactly."""
    f = MelFeatures()
    clean = torch.from_numpy(speech)
    rng = np.random.default_rng(0)
    noisy = torch.from_numpy(mix(speech, NOISES.get("white")(len(speech), 16000, rng,
                                                            NoisePool()), 5.0))
    assert abs(float(si_sdr(noisy, clean)) - 5.0) < 0.3
    enhanced = f.mask_reconstruct(f.encode(clean), noisy)
    assert float(si_sdr(enhanced, clean)) > 15.0
    assert float(si_sdr(f.mask_reconstruct(f.encode(clean), clean), clean)) > 40.0


def test_griffin_lim_gives_a_waveform(speech):
    f = MelFeatures()
    x = f.encode(torch.from_numpy(speech[:16000]))
    wave = f.griffin_lim(x, 16000, n_iter=4)
    assert wave.shape == (16000,) and torch.isfinite(wave).all()
    # its log-mel is close to the one it came from (phase is free, magnitudes are not)
    assert float((f.encode(wave) - x).abs().mean()) < 0.5
    # its random start phase is its own: the same audio whatever ran before, the caller's RNG
    # untouched (the repair records' baselines must not depend on the model built before them)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    again = f.griffin_lim(x, 16000, n_iter=4)
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(again, wave)
    assert not torch.equal(f.griffin_lim(x, 16000, n_iter=4, seed=1), wave)


def test_chunks_cross_fade_to_the_identity_and_cover_every_frame():
    x = torch.randn(1, 8, 300)
    calls = []

    def fn(batch):
        calls.append(batch.shape)
        assert batch.shape[1:] == (1, 8, 64)
        return batch

    assert torch.allclose(enhance_in_chunks(fn, x, chunk=64, overlap=16), x, atol=1e-6)
    assert len(calls) == 1 and calls[0][0] == 6  # ceil((300 - 16) / 48) chunks, one batch
    # a per-chunk constant shows the weights sum to one everywhere
    out = enhance_in_chunks(lambda b: torch.ones_like(b) * 2.0, x, chunk=64, overlap=16)
    assert torch.allclose(out, torch.full_like(x, 2.0))
    short = torch.randn(1, 8, 40)
    assert torch.allclose(enhance_in_chunks(lambda b: b, short, chunk=64, overlap=16), short)
