"""`toolkit audio-enhance` and `toolkit sample` on hand-built audio runs: a config and the
untrained weights of a tiny network, no training and no synthesised corpus (seconds each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from diffusekit.core.app import config as configuration
from diffusekit.core.app.cli import get_domain
from diffusekit.core.app.training.inference import load_run
from diffusekit.core.app.training.runs import RunDir, export_weights
from diffusekit.domains.audio.domain import AudioDomain
from diffusekit.domains.audio.enhance import enhance_waveform
from diffusekit.domains.audio.features import (MelFeatures, encode_in_segments,
                                              reconstruct_in_segments)
from diffusekit.domains.audio.torchaudio_cpu import torchaudio

# a tiny network, short chunks (a 2 s file is ~11 chunks of 32 frames), two sampler steps
SMALL = ("network.channels=[8,16]", "network.emb_dim=16", "sample.steps=2",
         "reconstruct.chunk_frames=32", "reconstruct.overlap_frames=8")


def make_run(path: Path, *overrides: str) -> Path:
    """A run folder of the audio domain with `SMALL` + `overrides` and untrained weights."""
    domain = AudioDomain()
    cfg = configuration.compose(domain.default_config(), overrides=[*SMALL, *overrides],
                                domain="audio")
    run = RunDir(path)
    path.mkdir(parents=True)
    run.save_config(cfg)
    torch.manual_seed(0)
    export_weights(domain.build_network(cfg), run.weights, {"domain": "audio"})
    return path


def speechlike(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A voiced-like tone with syllable gaps plus white noise, float32."""
    t = np.arange(int(seconds * rate)) / rate
    voiced = np.sin(2 * np.pi * 180 * t) + 0.5 * np.sin(2 * np.pi * 540 * t)
    gate = (np.sin(2 * np.pi * 3 * t) > 0).astype(np.float64)
    noise = 0.05 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * voiced * gate + noise).astype(np.float32)


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory) -> Path:
    """One untrained tiny audio run shared by the tests of this module (read only)."""
    return make_run(tmp_path_factory.mktemp("runs") / "audio")


def test_a_too_short_file_is_skipped_and_counted(toolkit, audio_run, tmp_path):
    sf.write(tmp_path / "tiny.wav", speechlike(0.01, 16000), 16000)  # 160 samples
    sf.write(tmp_path / "good.wav", speechlike(0.5, 16000), 16000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF nonsense")
    nan = speechlike(0.5, 16000)
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    code, out, err = toolkit("audio-enhance", "--run", str(audio_run), "--out", "enhanced",
                             "tiny.wav", "good.wav", "broken.wav", "nan.wav")
    assert code == 0, err
    assert len(err) == 3 and all(line.startswith("warning: skipped ") for line in err)
    assert "tiny.wav" in err[0] and "shorter than one STFT window" in err[0]
    assert "broken.wav" in err[1]
    assert "nan.wav" in err[2] and "non-finite" in err[2]
    assert "enhanced 1 file(s) into enhanced; skipped 3 of 4" in out
    assert sorted(p.name for p in (tmp_path / "enhanced").iterdir()) == ["good.wav"]


def test_a_single_file_that_fails_is_one_error_line(toolkit, audio_run, tmp_path):
    sf.write(tmp_path / "tiny.wav", speechlike(0.01, 16000), 16000)
    code, out, err = toolkit("audio-enhance", "--run", str(audio_run), "tiny.wav")
    assert code != 0 and len(err) == 1 and "Traceback" not in out
    assert err[0].startswith("error: cannot enhance tiny.wav: 0.010 s is shorter")
    assert not (tmp_path / "enhanced").exists()


def test_an_output_never_overwrites_an_input(toolkit, audio_run, tmp_path):
    original = speechlike(0.5, 16000)
    sf.write(tmp_path / "a.wav", original, 16000, subtype="FLOAT")
    code, out, err = toolkit("audio-enhance", "--run", str(audio_run), "--out", ".", "a.wav")
    assert code != 0 and len(err) == 1 and "would overwrite an input" in err[0]
    assert np.array_equal(sf.read(tmp_path / "a.wav", dtype="float32")[0], original)


@pytest.mark.parametrize("option, value", [("--steps", "-3"), ("--steps", "0"),
                                           ("--batch-size", "0")])
def test_bad_numbers_are_one_error_line(toolkit, audio_run, tmp_path, option, value):
    sf.write(tmp_path / "a.wav", speechlike(0.5, 16000), 16000)
    code, out, err = toolkit("audio-enhance", "--run", str(audio_run), option, value, "a.wav")
    assert code != 0 and len(err) == 1 and option in err[0] and "Traceback" not in out
    assert not (tmp_path / "enhanced").exists()


def test_a_run_of_another_domain_is_one_error_line(toolkit, tmp_path):
    image = get_domain("image")
    cfg = configuration.compose(image.default_config(), domain="image")
    (tmp_path / "image-run").mkdir()
    RunDir(tmp_path / "image-run").save_config(cfg)
    sf.write(tmp_path / "a.wav", speechlike(0.5, 16000), 16000)
    code, out, err = toolkit("audio-enhance", "--run", "image-run", "a.wav")
    assert code != 0 and len(err) == 1 and "Traceback" not in out
    assert "is of domain 'image', not 'audio'" in err[0]

    # the same config claiming to be an audio run: it does not fit, one line too
    cfg.domain = "audio"
    RunDir(tmp_path / "image-run").save_config(cfg)
    code, out, err = toolkit("audio-enhance", "--run", "image-run", "a.wav")
    assert code != 0 and len(err) == 1 and err[0].startswith("error: ") and "image-run" in err[0]


@pytest.mark.parametrize("channels", [1, 2])
def test_the_output_has_the_input_rate_and_length(toolkit, audio_run, tmp_path, channels):
    wave44 = speechlike(1.0, 44100)
    data = wave44 if channels == 1 else np.stack([wave44, 0.5 * wave44], axis=1)
    sf.write(tmp_path / "in44.wav", data, 44100, subtype="FLOAT")
    # the same sound at 16 kHz, as the command itself resamples it (stereo: mono mixdown)
    mono = wave44 if channels == 1 else 0.75 * wave44
    wave16 = torchaudio.functional.resample(torch.from_numpy(mono), 44100, 16000).numpy()
    sf.write(tmp_path / "in16.wav", wave16, 16000, subtype="FLOAT")
    code, out, err = toolkit("audio-enhance", "--run", str(audio_run), "in44.wav", "in16.wav")
    assert code == 0, err
    out44, rate44 = sf.read(tmp_path / "enhanced" / "in44.wav", dtype="float32")
    out16, rate16 = sf.read(tmp_path / "enhanced" / "in16.wav", dtype="float32")
    assert rate44 == 44100 and out44.shape == (len(wave44),)  # mono, the input's length
    assert rate16 == 16000 and out16.shape == (len(wave16),)
    # the 44.1 kHz output is the 16 kHz enhancement resampled up: the same after a round trip
    resample = torchaudio.functional.resample
    up16 = resample(torch.from_numpy(out16), 16000, 44100)[:len(out44)].numpy()
    np.testing.assert_allclose(out44[:-100], up16[:-100], atol=1e-5)  # the end: padding
    assert np.abs(out16).max() > 0.01  # not silence


@pytest.mark.parametrize("overrides", [
    ("model.objective=storm",), ("model.objective=diffusion",),
    # 63 x 33 values a chunk: batches are rounded up to draw the same noise (see enhance.py)
    ("features.n_mels=63", "reconstruct.chunk_frames=33", "network.channels=[8]")])
def test_the_output_does_not_depend_on_the_batch_size(tmp_path, overrides):
    run = RunDir(make_run(tmp_path / "run", *overrides))
    network, process, cfg = load_run(AudioDomain(), run)
    wave = speechlike(6.0, 16000)  # 751 frames: about 30 chunks of 32 frames
    outs = [enhance_waveform(network, process, cfg, wave, steps=2, batch_size=b)
            for b in (1, 3, 4, 64)]
    assert outs[0].shape == wave.shape and np.abs(outs[0]).max() > 0.01
    for other in outs[1:]:
        np.testing.assert_allclose(other, outs[0], atol=1e-5)


@pytest.mark.parametrize("n_fft, hop", [(512, 128), (400, 160)])
def test_segmented_analysis_and_reconstruction_equal_the_whole_file(n_fft, hop):
    f = MelFeatures(n_fft=n_fft, hop=hop, n_mels=40)
    wave = torch.from_numpy(speechlike(3.0, 16000))
    x = f.encode(wave)
    x_hat = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    y = f.mask_reconstruct(x_hat, wave)
    for segment in (5, 37, 4096):  # several segments, and one
        torch.testing.assert_close(encode_in_segments(f, wave, segment), x, atol=1e-4, rtol=0)
        y_seg = reconstruct_in_segments(f.mask_reconstruct, x_hat, wave, hop, n_fft, segment)
        torch.testing.assert_close(y_seg, y, atol=1e-5, rtol=0)


def test_batch_size_option_gives_the_same_file(toolkit, audio_run, tmp_path):
    sf.write(tmp_path / "a.wav", speechlike(1.5, 16000), 16000)
    for b in ("1", "5"):
        code, out, err = toolkit("audio-enhance", "--run", str(audio_run), "--batch-size", b,
                                 "--out", f"b{b}", "a.wav")
        assert code == 0, err
    one, five = (sf.read(tmp_path / f"b{b}" / "a.wav")[0] for b in ("1", "5"))
    np.testing.assert_allclose(one, five, atol=1e-5)


def paired_folder(root: Path, pairs: int) -> Path:
    """clean/ and noisy/ folders of `pairs` short pairs (a tenth of them is the test split)."""
    for sub in ("clean", "noisy"):
        (root / sub).mkdir(parents=True)
    for i in range(pairs):
        clean = speechlike(0.8, 16000, seed=i)
        noise = 0.1 * np.random.default_rng(1000 + i).standard_normal(len(clean))
        sf.write(root / "clean" / f"{i:03d}.wav", clean, 16000)
        sf.write(root / "noisy" / f"{i:03d}.wav", (clean + noise).astype(np.float32), 16000)
    return root


@pytest.mark.parametrize("write_n, written", [("null", 8), ("3", 3)])
def test_sample_writes_the_clips_asked_for(toolkit, tmp_path, write_n, written):
    folder = paired_folder(tmp_path / "pairs", 80)  # 8 test pairs
    run = make_run(tmp_path / "run", f"data.folder={folder}", "data.eval_frames=96",
                   "sample.batch_size=8", f"outputs.write_n={write_n}")
    code, out, err = toolkit("sample", "--run", str(run), "--steps", "1", "-n", "8")
    assert code == 0, err
    step = run / "samples" / "ddim-1"
    assert len(list(step.glob("*-enhanced.wav"))) == written
    assert len(list(step.glob("*-noisy.wav"))) == written
    notes = [line for line in err if line.startswith("note: ")]
    if written == 8:
        assert notes == []
    else:  # a cap set in the run's config is said, in one line
        assert notes == ["note: wrote 3 of the 8 enhanced clips as WAV files "
                         "(outputs.write_n is 3; set it to null in the run's config.yaml to "
                         "write every clip)"]
