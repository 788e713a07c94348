"""The prepared corpus, noisy pairs, user folders (bad files skipped and counted)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from omegaconf import OmegaConf

from diffusekit.core.errors import ConfigError, DataError
from diffusekit.domains.audio.corpus import split_sentences
from diffusekit.domains.audio.data import (AudioDataModule, Collate, NoisyPairs, PairedFolder,
                                           change_speed, corpus_dir, speed_range)
from diffusekit.domains.audio.features import MelFeatures


def test_corpus_holds_out_sentences_and_voices(tiny_cfg):
    manifest = json.loads((corpus_dir(tiny_cfg) / "manifest.json").read_text())
    rows = manifest["utterances"]
    by_split = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    assert [len(by_split[s]) for s in ("train", "val", "test")] == [4, 2, 2]
    train_voices = {r["voice"] for r in by_split["train"]}
    assert {r["voice"] for r in by_split["test"]} == {"flite:slt"}
    assert "flite:slt" not in train_voices
    texts = {s: {r["text"] for r in by_split[s]} for s in by_split}
    assert not texts["train"] & texts["test"] and not texts["train"] & texts["val"]


def test_batches_have_the_documented_shapes(tiny_cfg):
    dm = AudioDataModule.from_config(tiny_cfg)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x0"].shape == (2, 1, 64, 32)
    assert batch["cond"]["noisy"].shape == (2, 1, 64, 32)
    assert batch["clean_wave"].shape == (2, 128 * 31)
    test = dm.full_batch("test")
    assert test["x0"].shape == (2, 1, 64, 64)
    # the test split is fixed: the same mixture twice, at data.test_snr dB
    again = dm.full_batch("test")
    assert torch.equal(test["noisy_wave"], again["noisy_wave"])
    n = int(test["length"][0])
    clean, noisy = test["clean_wave"][0, :n].double(), test["noisy_wave"][0, :n].double()
    snr = 10 * torch.log10(clean.pow(2).sum() / (noisy - clean).pow(2).sum())
    assert abs(float(snr) - 5.0) < 0.1


def _peak_hz(wave, sr=16000):
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.argmax(spectrum)) * sr / len(wave)


def test_change_speed_scales_every_frequency_and_the_length_by_the_factor():
    sr = 16000
    wave = np.sin(2 * np.pi * 440 * np.arange(2 * sr) / sr).astype(np.float32)
    for factor in (0.9, 1.13, 1.25):
        out = change_speed(wave, factor)
        assert out.dtype == np.float32
        assert abs(len(out) - len(wave) / factor) <= 1
        assert abs(_peak_hz(out) - 440 * factor) < 2.0  # bins of 0.5-0.6 Hz
    assert change_speed(wave, 1.0) is wave
    # band-limited: a tone that a factor of 1.25 would carry past Nyquist is filtered out, not
    # folded back into the band (where naive interpolation would put it, at 16000 - 9375 Hz)
    high = np.sin(2 * np.pi * 7500 * np.arange(sr) / sr).astype(np.float32)
    assert np.abs(change_speed(high, 1.25)[200:-200]).max() < 0.01


def test_speed_range_reads_and_checks_data_speed_perturb():
    assert speed_range(OmegaConf.create({"speed_perturb": None})) is None
    assert speed_range(OmegaConf.create({})) is None
    assert speed_range(OmegaConf.create({"speed_perturb": [0.9, 1.2]})) == (0.9, 1.2)
    for bad in ([0.0, 1.2], [1.2, 0.9], [1.1], 1.1, ["fast", "slow"]):
        with pytest.raises(ConfigError, match="data.speed_perturb must be"):
            speed_range(OmegaConf.create({"speed_perturb": bad}))


def test_speed_perturbation_moves_the_training_pitch_but_not_the_held_out_one():
    sr, features = 16000, MelFeatures()
    wave = np.sin(2 * np.pi * 300 * np.arange(3 * sr) / sr).astype(np.float32)
    kwargs = dict(kinds=["white"], snr_range=(30.0, 30.0), speeds=(1.5, 1.5))
    train = NoisyPairs([wave], features, 100, train=True, **kwargs)
    held_out = NoisyPairs([wave], features, 100, train=False, **kwargs)
    for data, hz in ((train, 450.0), (held_out, 300.0)):
        item = data[0]
        assert item["clean_wave"].shape == (features.samples_for(100),)
        assert abs(_peak_hz(item["clean_wave"].numpy()) - hz) < 2 * sr / len(item["clean_wave"])


def test_sentence_filter_keeps_plain_sentences():
    text = ("HAMLET. To be, or not to be, that is the question. Exit.\n"
            "Whether it is nobler in the mind to suffer the slings and arrows. "
            "THE END OF THE PLAY. Ay. "
            "See www.gutenberg.org for the licence of this etext now.")
    got = split_sentences(text)
    assert got == ["To be, or not to be, that is the question.",
                   "Whether it is nobler in the mind to suffer the slings and arrows."]


def _write(path, wave, sr=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sr)


def test_paired_folder_skips_and_counts_bad_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(16000).astype(np.float32) * 0.1
    _write(tmp_path / "clean" / "a.wav", wave)
    _write(tmp_path / "noisy" / "a.wav", wave + 0.01)
    _write(tmp_path / "clean" / "b.wav", wave)                # no partner
    _write(tmp_path / "clean" / "c.wav", wave)                # lengths differ
    _write(tmp_path / "noisy" / "c.wav", wave[:8000])
    (tmp_path / "clean" / "d.wav").write_bytes(b"not audio")  # unreadable
    (tmp_path / "noisy" / "d.wav").write_bytes(b"not audio")
    _write(tmp_path / "clean" / "e.wav", wave, sr=8000)       # resampled, still a pair
    _write(tmp_path / "noisy" / "e.wav", wave, sr=8000)
    folder = PairedFolder(tmp_path, MelFeatures(), 64)
    assert len(folder) == 2 and folder.skipped == 3
    assert "skipped 3 file(s)" in capsys.readouterr().out
    batch = Collate(MelFeatures())([folder[0], folder[1]])
    assert batch["x0"].shape == (2, 1, 64, 64) and int(batch["length"][0]) == 128 * 63
    assert batch["cond"]["noisy"].shape == (2, 1, 64, 64)


def test_paired_folder_errors(tmp_path):
    with pytest.raises(DataError, match="clean/ and noisy/"):
        PairedFolder(tmp_path, MelFeatures(), 64)
    (tmp_path / "clean").mkdir()
    (tmp_path / "noisy").mkdir()
    (tmp_path / "clean" / "x.wav").write_bytes(b"junk")
    (tmp_path / "noisy" / "x.wav").write_bytes(b"junk")
    with pytest.raises(DataError, match="no readable"):
        PairedFolder(tmp_path, MelFeatures(), 64)
