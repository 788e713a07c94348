"""The audio domain through the command line: a few-step train + sample on CPU, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from diffusekit.domains.audio.corpus import load_wav
from diffusekit.domains.audio.data import corpus_dir

from audio_settings import tiny_overrides
from command_line import run_toolkit as _run


def test_train_then_sample_through_the_cli(tiny_cfg, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = corpus_dir(tiny_cfg).parent
    code, out, err = _run(capsys, "train", "--domain", "audio", *tiny_overrides(cache))
    assert code == 0, err
    (run,) = (tmp_path / "runs" / "audio").iterdir()
    assert (run / "model.safetensors").is_file()
    step = run / "samples" / "step-000004"
    for name in ("00-noisy.wav", "00-enhanced.wav", "00-clean.wav", "spectrograms.png",
                 "metrics.json"):
        assert (step / name).is_file(), name
    metrics = json.loads((step / "metrics.json").read_text())
    for key in ("si_sdr", "pesq", "estoi", "logmel_l1", "noisy_si_sdr", "baseline_si_sdr"):
        assert key in metrics
    code, out, err = _run(capsys, "sample", "--run", str(run), "--sampler", "euler", "--steps",
                          "2", "-n", "2")
    assert code == 0, err
    assert (run / "samples" / "euler-2" / "01-enhanced.wav").is_file()
    code, out, err = _run(capsys, "evaluate", "--run", str(run), "--steps", "1", "-n", "2")
    assert code == 0, err
    assert "si_sdr_gain" in out

    # a recording longer than one chunk, plus an unreadable file: enhanced in chunks, skip counted
    clean = load_wav(corpus_dir(tiny_cfg) / "test" / "test-00000.wav", 16000)
    long = np.concatenate([clean, clean, clean])
    long = long + 0.05 * np.random.default_rng(0).standard_normal(len(long)).astype(np.float32)
    sf.write(str(tmp_path / "long.wav"), long, 16000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF nonsense")
    code, out, err = _run(capsys, "audio-enhance", "--run", str(run), "--steps", "1", "--out",
                          str(tmp_path / "enhanced"), str(tmp_path / "long.wav"),
                          str(tmp_path / "broken.wav"))  # ~1000 frames: 5 chunks of 256
    assert code == 0, err
    assert "enhanced 1 file(s)" in out and "skipped 1 of 2" in out
    assert len(err) == 1 and err[0].startswith("warning: skipped ") and "broken.wav" in err[0]
    enhanced, rate = sf.read(str(tmp_path / "enhanced" / "long.wav"))
    assert rate == 16000 and enhanced.shape == long.shape and np.isfinite(enhanced).all()


def test_bad_user_folder_is_one_error_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, "train", "--domain", "audio", f"data.folder={tmp_path}/nope",
                          "trainer.max_steps=1")
    assert code != 0
    assert len(err) == 1 and err[0].startswith("error: audio folder") and "Traceback" not in out


@pytest.mark.parametrize("override, needle", [
    ("data.noise_kinds=[thunder]", "thunder"),
    ("data.speed_perturb=[1.2,0.9]", "data.speed_perturb must be")])
def test_bad_data_option_is_one_error_line(override, needle, tiny_cfg, tmp_path, capsys,
                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = corpus_dir(tiny_cfg).parent
    code, out, err = _run(capsys, "train", "--domain", "audio", *tiny_overrides(cache), override)
    assert code != 0 and len(err) == 1 and needle in err[0]
    assert "Traceback" not in out


@pytest.mark.slow  # about a minute on 2 shared cores
@pytest.mark.parametrize("objective, extra_calls, regression", [
    ("diffusion", 0, "separate run"), ("storm", 1, "StoRM's own predictor")])
def test_quick_benchmark_at_tiny_size(objective, extra_calls, regression, tiny_cfg, tmp_path,
                                      capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = corpus_dir(tiny_cfg).parent
    code, out, err = _run(capsys, "benchmark", "--domain", "audio", "--quick",
                          *tiny_overrides(cache), f"model.objective={objective}",
                          "benchmark.quick_train_steps=2", "benchmark.steps=[1,2]",
                          "benchmark.n_test=2", f"benchmark.results_dir={tmp_path}/results")
    assert code == 0, err
    record = json.loads((tmp_path / "results" / "audio_quick.json").read_text())
    metrics, baselines = record["metrics"], record["baselines"]
    assert metrics["objective"] == objective and metrics["regression_source"] == regression
    # one trainer for both, one budget: the baseline trains as many steps as the model
    assert metrics["trainer"] == "toolkit (train_for_benchmark)"
    assert metrics["regression_steps"] == metrics["train_steps"] == 2
    # the runs went into a temporary folder: nothing is left in the working directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
    for sampler in ("dpmpp_2m", "ddim"):
        for steps in (1, 2):  # StoRM calls its predictor once before the sampler
            assert metrics[f"nfe_{sampler}_{steps}"] == steps + extra_calls
            assert f"si_sdr_{sampler}_{steps}" in metrics and f"pesq_{sampler}_{steps}" in metrics
    for key in ("noisy_si_sdr", "spectral_subtraction_pesq", "regression_estoi"):
        assert key in baselines
    assert (tmp_path / "results" / "audio_quick.png").stat().st_size > 10_000
    assert "| dpmpp_2m | 1 |" in (tmp_path / "results" / "audio_quick.md").read_text()
