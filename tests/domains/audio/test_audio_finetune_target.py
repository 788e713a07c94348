"""The audio domain's customisation target: siren noise, which the base never hears, on a tenth
of the base's training utterances of the same corpus; and the driver end to end at a tiny size."""

from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from diffusekit.core.app import config
from diffusekit.core.errors import ConfigError
from diffusekit.domains.audio.data import AudioDataModule, corpus_dir, prepare_corpus
from diffusekit.domains.audio.domain import TARGET_NOISE, AudioDomain
from diffusekit.domains.audio.noise import NOISES, SIREN_HIGH, SIREN_LOW, NoisePool

from audio_settings import TINY, tiny_overrides

SR = 16000
# 10 training utterances: the smallest base whose tenth is one utterance
N_TRAIN = 10
WORDS = ["apple", "river", "candle", "garden", "window", "morning", "letter", "silver",
         "thunder", "meadow", "harbour", "lantern", "pencil", "orchard"]
SENTENCES = [f"The {w} was easy to see from the road." for w in WORDS]


def audio_config(*overrides: str):
    return config.compose(AudioDomain().default_config(), domain="audio", overrides=overrides)


@pytest.fixture(scope="module")
def base_cfg(tmp_path_factory):
    """TINY with 10 training utterances, synthesised (flite) into a temporary cache."""
    cache = tmp_path_factory.mktemp("audio-finetune-cache")
    cfg = OmegaConf.merge(AudioDomain().default_config(), TINY,
                          {"data": {"cache_dir": str(cache), "n_train": N_TRAIN}})
    prepare_corpus(cfg, sentences=SENTENCES, progress=False)
    return cfg


def frames_of(x: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """Power spectra [frames, n_fft // 2 + 1] of `x` (Hann window)."""
    windows = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    return np.abs(np.fft.rfft(windows, axis=1)) ** 2


def peak_track(x: np.ndarray) -> np.ndarray:
    """The frequency (Hz) of the strongest bin of every frame."""
    return np.argmax(frames_of(x), axis=1) * SR / 512


def flatness(x: np.ndarray) -> float:
    """Median over frames of the spectral flatness (geometric / arithmetic mean of the power):
    about 0.56 for white noise, near 0 for a tone."""
    power = frames_of(x) + 1e-12
    return float(np.median(np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1)))


def test_the_default_target_is_siren_noise_on_a_tenth_of_the_training_speech():
    cfg = audio_config()
    target = AudioDomain().finetune_target(cfg)
    assert target == {"overrides": ["data.noise_kinds=[siren]", "data.train_limit=120"],
                      "metric": "si_sdr", "higher_is_better": True}
    assert TARGET_NOISE == "siren" and TARGET_NOISE in NOISES.names()
    assert TARGET_NOISE not in cfg.data.noise_kinds  # the base never hears it
    on_target = config.override(cfg, overrides=target["overrides"])
    assert list(on_target.data.noise_kinds) == ["siren"]
    assert on_target.data.train_limit <= 0.1 * cfg.data.n_train
    # the same corpus folder: nothing is synthesised for the target, nothing overwritten
    assert corpus_dir(on_target) == corpus_dir(cfg)
    # a base that already trains on part of its corpus gets a tenth of that part
    small = audio_config("data.train_limit=500")
    assert "data.train_limit=50" in AudioDomain().finetune_target(small)["overrides"]


@pytest.mark.parametrize("overrides, key", [
    (["data.noise_kinds=[white,siren]"], "data.noise_kinds"),
    (["data.n_train=9"], "data.n_train"),
    (["data.folder=/somewhere/pairs"], "data.folder"),
    (["data.train_limit=0"], "data.train_limit"),
])
def test_a_base_the_target_cannot_shift_is_refused(overrides, key):
    with pytest.raises(ConfigError, match=key):
        AudioDomain().finetune_target(audio_config(*overrides))


@pytest.mark.parametrize("seed", range(6))
def test_siren_is_a_tone_whose_pitch_sweeps_through_the_speech_band(seed):
    x = NOISES.get("siren")(4 * SR, SR, np.random.default_rng(seed), NoisePool())
    assert x.shape == (4 * SR,) and x.dtype == np.float32
    assert abs(float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) - 1.0) < 1e-3
    assert flatness(x) < 0.05  # tonal: nearly all power in a few bins
    peaks = peak_track(x)
    # the strongest bin (the fundamental) stays in the siren's band and moves within it
    assert peaks.min() >= 0.95 * SIREN_LOW[0] and peaks.max() <= 1.05 * SIREN_HIGH[1]
    assert peaks.max() - peaks.min() >= 300
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    assert power[f < 400].sum() < 0.01 * power.sum()  # nothing of hum's mains band


def test_siren_differs_from_every_default_kind():
    rng = np.random.default_rng(0)
    speech = [rng.standard_normal(SR).astype(np.float32)]
    pool = NoisePool(speech=speech, recorded=speech)
    for kind in AudioDomain().default_config().data.noise_kinds:
        x = NOISES.get(kind)(4 * SR, SR, np.random.default_rng(1), pool)
        # broadband (white, babble, recorded, pink), or its strongest bin stands still (hum's
        # mains line, brown's lowest bins); a siren's is tonal and moves (the test above)
        assert flatness(x) > 0.05 or np.ptp(peak_track(x)) < 50, kind


def test_siren_follows_the_seed():
    def draw(seed: int) -> np.ndarray:
        return NOISES.get("siren")(SR, SR, np.random.default_rng(seed), NoisePool())

    assert np.array_equal(draw(3), draw(3)) and not np.allclose(draw(3), draw(4))


def test_the_target_data_reads_the_base_corpus_trains_on_a_tenth_and_tests_on_siren(base_cfg):
    manifest = corpus_dir(base_cfg) / "manifest.json"
    before = (manifest.read_bytes(), manifest.stat().st_mtime_ns)
    target = AudioDomain().finetune_target(base_cfg)
    on_target = config.override(base_cfg, overrides=target["overrides"])
    base, shifted = AudioDataModule(base_cfg), AudioDataModule(on_target)
    base.setup(), shifted.setup()
    assert (manifest.read_bytes(), manifest.stat().st_mtime_ns) == before
    assert len(base.splits["train"]) == N_TRAIN
    assert 0 < len(shifted.splits["train"]) <= 0.1 * len(base.splits["train"])
    # its training speech is the base's first utterance, under siren noise
    assert np.array_equal(shifted.splits["train"].waves[0], base.splits["train"].waves[0])
    assert shifted.splits["train"].kinds == ["siren"]
    # the same held-out test speech (sentences, voices) at the same 5 dB; only the noise differs
    for i in range(len(base.splits["test"])):
        b, s = base.splits["test"][i], shifted.splits["test"][i]
        n = int(s["length"])
        assert int(b["length"]) == n
        clean = s["clean_wave"][:n].numpy().astype(np.float64)
        noise = (s["noisy_wave"] - s["clean_wave"])[:n].numpy().astype(np.float64)
        base_clean = b["clean_wave"][:n].numpy().astype(np.float64)
        # the same speech (each mixture is scaled down on its own when it would clip)
        assert np.allclose(clean / np.linalg.norm(clean),
                           base_clean / np.linalg.norm(base_clean), atol=1e-6)
        snr = 10 * np.log10(np.sum(clean ** 2) / np.sum(noise ** 2))
        assert abs(snr - float(base_cfg.data.test_snr)) < 0.05
        assert flatness(noise) < 0.05
        assert 0.95 * SIREN_LOW[0] <= np.median(peak_track(noise)) <= 1.05 * SIREN_HIGH[1]
    # the test set is fixed: a second data module draws the same siren
    again = AudioDataModule(on_target)
    again.setup()
    assert np.array_equal(again.splits["test"][0]["noisy_wave"],
                          shifted.splits["test"][0]["noisy_wave"])


def test_a_bad_train_limit_is_one_error_line(base_cfg, toolkit):
    cache = corpus_dir(base_cfg).parent
    code, out, err = toolkit("train", "--domain", "audio", *tiny_overrides(cache),
                             f"data.n_train={N_TRAIN}", "data.train_limit=0")
    assert code != 0 and len(err) == 1
    assert err[0].startswith("error: data.train_limit") and "Traceback" not in out


def test_the_customisation_benchmark_runs_end_to_end(base_cfg, toolkit, tmp_path):
    cache = corpus_dir(base_cfg).parent
    results = tmp_path / "results"
    code, out, err = toolkit(
        "benchmark", "--domain", "audio", "--finetune", "--quick", *tiny_overrides(cache),
        f"data.n_train={N_TRAIN}", "finetune.quick_base_steps=3", "finetune.quick_steps=2",
        "finetune.quick_eval_n=2", f"finetune.results_dir={results}")
    assert code == 0, err
    record = json.loads((results / "audio_finetune_quick.json").read_text())
    metrics = record["metrics"]
    assert metrics["metric"] == "si_sdr" and metrics["higher_is_better"] is True
    assert metrics["target"] == ["data.noise_kinds=[siren]", "data.train_limit=1"]
    assert (metrics["base_steps"], metrics["steps"], metrics["eval_n"]) == (3, 2, 2)
    for system in ("base", "lora", "full", "scratch"):
        scores = metrics["scores"][system]
        assert np.isfinite(scores["si_sdr"]) and np.isfinite(scores["test_loss"]), system
        # every system is scored on the same siren mixtures
        assert scores["noisy_si_sdr"] == metrics["scores"]["base"]["noisy_si_sdr"]
    assert (results / "audio_finetune_quick.md").is_file()
    assert (results / "audio_finetune_quick.png").is_file()
