"""Packet-loss concealment in the audio domain on a tiny synthesised corpus, on CPU: `toolkit
inpaint` end to end on a 2-step model (received samples kept exactly, the known frames of the
log-mel exact, files only inside --out), its bad inputs, packet loss in the training data, the
concealment pieces, and the repair benchmark's code path at tiny sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from diffusekit.core.app import cli
from diffusekit.core.app.repair import inpaint_model, parse_region
from diffusekit.core.app.training.models import load_model
from diffusekit.core.registry import UnknownNameError
from diffusekit.domains.audio.concealment import (frame_runs, interpolate_frames, lost_frames,
                                                  read_damaged, splice, truth_fitted_fill,
                                                  unknown_frames)
from diffusekit.domains.audio.data import Collate, corpus_dir, make_item
from diffusekit.domains.audio.features import MelFeatures
from diffusekit.domains.audio.noise import PacketLoss, drop_packets

from audio_settings import tiny_overrides
from command_line import run_toolkit as _run


@pytest.fixture(scope="module")
def run(tiny_cfg, tmp_path_factory):
    """A StoRM run of 2 steps on the tiny corpus, with packet loss in its training mixtures
    (shown to it linearly interpolated)."""
    root = tmp_path_factory.mktemp("runs")
    cache = corpus_dir(tiny_cfg).parent
    args = [a for a in tiny_overrides(cache) if not a.startswith(("trainer.max_steps",
                                                                  "sample.val_n"))]
    assert cli.main(["train", "--domain", "audio", *args, "trainer.max_steps=2",
                     "sample.val_n=0", f"run_dir={root}", "data.packet_loss.share=1.0",
                     "data.packet_loss.fill=linear"]) == 0
    (path,) = (root / "audio").iterdir()
    return path


@pytest.fixture
def call(speech, tmp_path):
    """A 1.2 s speech clip at 16 kHz."""
    path = tmp_path / "call.wav"
    sf.write(str(path), speech[:19200], 16000)
    return path


@pytest.mark.parametrize("weight", [0, 2], ids=["replace", "reconstruction-guided"])
def test_conceal_keeps_received_samples_and_known_frames(run, call, tmp_path, capsys,
                                                         monkeypatch, weight):
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(capsys, "inpaint", "--run", str(run), str(call), "--span", "0.30-0.42",
                        "--span", "0.8-0.85", "--steps", "2", "-n", "2", "--out", "out",
                        f"inpaint.reconstruction={weight}")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "call-repaired-0.wav", "call-repaired-1.wav", "call-spectrograms.png"]
    received, rate = sf.read(str(call), dtype="float32")
    for k in range(2):
        out, out_rate = sf.read(str(tmp_path / "out" / f"call-repaired-{k}.wav"), dtype="float32")
        assert out_rate == rate == 16000 and out.shape == received.shape
        keep = np.ones(len(out), dtype=bool)
        keep[4800:6720] = keep[12800:13600] = False
        np.testing.assert_array_equal(out[keep], received[keep])
        assert np.abs(out[~keep]).max() > 0  # the gaps are filled with something
    model = load_model(run)
    damaged = read_damaged(call, parse_region(spans=["0.30-0.42", "0.8-0.85"]), model.cfg)
    lost = ~damaged.known[0, 0, 0]  # the model was trained on linearly filled gaps: so is this
    assert torch.equal(damaged.batch["cond"]["noisy"][0, 0],
                       interpolate_frames(damaged.batch["x0"][0, 0], lost))
    mel = inpaint_model(model, damaged, steps=2, method="repaint", progress=False).mel
    known = damaged.known.expand_as(mel)
    torch.testing.assert_close(mel[known], damaged.batch["x0"][known], atol=1e-5, rtol=0)
    assert mel.shape[-1] % 8 == 0 and not bool(known.all())


def test_average_conceals_with_the_mean_of_repairs(run, call, tmp_path, capsys):
    """--average K: the mean of K repaired log-mels, turned into audio once."""
    code, _, err = _run(capsys, "inpaint", "--run", str(run), str(call), "--span", "0.30-0.42",
                        "--steps", "2", "--average", "3", "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "call-repaired.wav", "call-spectrograms.png"]
    model = load_model(run)
    damaged = read_damaged(call, parse_region(spans=["0.30-0.42"]), model.cfg)
    mean = inpaint_model(model, damaged, steps=2, average=3, progress=False).mel
    draws = [inpaint_model(model, damaged, steps=2, seed=int(model.cfg.seed) + k,
                           progress=False).mel for k in range(3)]
    torch.testing.assert_close(mean, torch.stack(draws).mean(0))


@pytest.mark.parametrize("args, words", [
    (["--span", "1.0-1.5"], "outside the clip"),
    (["--box", "0,0,3,3"], "does not take --box"),
    ([], "--span START-END"),
    (["--span", "0.5-0.2"], "empty"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(run, call, tmp_path, capsys, args, words):
    code, _, err = _run(capsys, "inpaint", "--run", str(run), str(call), *args, "--out",
                        str(tmp_path / "o"))
    assert code != 0 and len(err) == 1 and err[0].startswith("error:"), err
    assert words in err[0]


def test_an_unreadable_wav_is_one_line(run, tmp_path, capsys):
    (tmp_path / "broken.wav").write_bytes(b"RIFF nonsense")
    code, _, err = _run(capsys, "inpaint", "--run", str(run), str(tmp_path / "broken.wav"),
                        "--span", "0-0.1", "--out", str(tmp_path / "o"))
    assert code != 0 and len(err) == 1 and "cannot read audio file" in err[0], err


def test_lost_frames_interpolation_and_splice():
    assert unknown_frames([(1000, 1320)], 20, 128, 512).nonzero().flatten().tolist() == list(
        range(6, 13))  # every window touching samples 1000..1319
    mel = torch.arange(10.0).repeat(2, 1)
    lost = torch.tensor([1, 0, 0, 1, 1, 1, 0, 0, 1, 1], dtype=torch.bool)
    filled = interpolate_frames(mel * mel, lost)
    # linear between the known frames 2 and 6, held beyond the first / last known frame
    assert filled[0].tolist() == [1, 1, 4, 12, 20, 28, 36, 49, 49, 49]
    received, synth = torch.ones(100), torch.full((100,), 2.0)
    out = splice(received, synth, [(20, 60)], 1000)
    assert torch.equal(out[:20], received[:20]) and torch.equal(out[60:], received[60:])
    assert float(out[40]) == 2.0 and float(out[20]) < 2.0  # faded in inside the gap


def test_truth_fitted_bounds_fit_each_gap_and_band_and_keep_the_rest():
    """The bounds of the repair benchmark: each run of unknown frames gets, per band, the fit to
    the truth itself. A band that is a straight line across a gap is matched exactly by the line
    and the constant is its median; no other constant has a smaller L1; known frames are kept."""
    unknown = torch.tensor([0, 1, 1, 1, 1, 0, 0, 1, 1, 0], dtype=torch.bool)
    assert frame_runs(unknown) == [(1, 5), (7, 9)]
    assert frame_runs(torch.ones(3, dtype=torch.bool)) == [(0, 3)]
    assert frame_runs(torch.zeros(3, dtype=torch.bool)) == []
    t = torch.arange(10.0)
    clean = torch.stack([3.0 * t - 2.0, (t - 4.0) ** 2])[None]  # [1, M=2, T]
    line, const = truth_fitted_fill(clean, unknown, 1), truth_fitted_fill(clean, unknown, 0)
    for fill in (line, const):
        assert torch.equal(fill[..., ~unknown], clean[..., ~unknown])
    assert torch.allclose(line[0, 0], clean[0, 0], atol=1e-5)  # a line is fitted exactly
    assert not torch.allclose(line[0, 1], clean[0, 1])         # a parabola is not
    assert const[0, 0, 1:5].unique().numel() == 1 and float(const[0, 0, 7]) in (19.0, 22.0)
    band = clean[0, 1, 1:5]
    best = (const[0, 1, 1:5] - band).abs().sum()
    for c in torch.linspace(-5, 20, 101):
        assert float(best) <= float((c - band).abs().sum()) + 1e-5
    # on a curved band the line fitted to the truth beats the constant and linear interpolation
    l1 = {name: float((fill - clean)[..., unknown].abs().mean()) for name, fill in
          (("line", line), ("constant", const), ("linear", interpolate_frames(clean, unknown)))}
    assert l1["line"] < l1["constant"] and l1["line"] < l1["linear"], l1
    with pytest.raises(ValueError, match="degree"):
        truth_fitted_fill(clean, unknown, 2)


def test_packet_loss_zeroes_stretches_and_costs_no_draw_when_off():
    rng = np.random.default_rng(0)
    clean, noisy = np.ones(16000, dtype=np.float32), np.full(16000, 2.0, dtype=np.float32)
    same, lost = drop_packets(clean, noisy, 16000, rng, PacketLoss())
    assert same is noisy and lost is None
    assert rng.random() == np.random.default_rng(0).random()  # no draw was taken
    out, lost = drop_packets(clean, noisy, 16000, np.random.default_rng(1),
                             PacketLoss(share=1.0, clean_share=1.0, min_ms=50, max_ms=50,
                                        max_gaps=1))
    zeros = np.flatnonzero(out == 0)
    assert len(zeros) == 800 and zeros[-1] - zeros[0] == 799 and set(out[out != 0]) == {1.0}
    assert np.array_equal(np.flatnonzero(lost), zeros)


def test_a_linear_fill_concealer_sees_its_lost_frames_interpolated():
    """Collate with fill "linear": the frames touching a lost sample (the same frames as
    `unknown_frames` of the spans) are interpolated between the received ones; every other frame
    is the received log-mel as it was, and the clean target is untouched."""
    features = MelFeatures()
    rng = np.random.default_rng(0)
    n = features.samples_for(64)
    clean = (0.1 * rng.standard_normal(n)).astype(np.float32)
    spans = [(2000, 3000), (5000, 5400)]
    received = clean.copy()
    lost = np.zeros(n, dtype=bool)
    for a, b in spans:
        received[a:b], lost[a:b] = 0.0, True
    items = [make_item(clean, received, n, features, lost), make_item(clean, clean, n, features)]
    unknown = unknown_frames(spans, 64, features.hop, features.n_fft)
    assert torch.equal(lost_frames(torch.from_numpy(lost)[None], features.hop, features.n_fft)[0],
                       unknown)
    floor, linear = Collate(features)(items), Collate(features, "linear")(items)
    assert torch.equal(floor["x0"], linear["x0"])
    assert torch.equal(linear["cond"]["noisy"][1], floor["cond"]["noisy"][1])  # nothing lost
    got, gapped_mel = linear["cond"]["noisy"][0, 0], floor["cond"]["noisy"][0, 0]
    assert torch.equal(got[:, ~unknown], gapped_mel[:, ~unknown])
    assert torch.allclose(got, interpolate_frames(gapped_mel, unknown))
    assert float(got[:, unknown].mean()) > float(gapped_mel[:, unknown].mean()) + 1.0  # off the floor
    with pytest.raises(UnknownNameError, match="gap fill 'cubic'"):
        Collate(features, "cubic")


def test_the_repair_benchmark_writes_its_record(tiny_cfg, tmp_path, capsys):
    cache = corpus_dir(tiny_cfg).parent
    results = tmp_path / "results"
    args = [a for a in tiny_overrides(cache) if not a.startswith("trainer.max_steps")]
    code, out, err = _run(capsys, "benchmark", "--domain", "audio", "--repair", "--quick", *args,
                          "repair.quick_train_steps=2", "repair.quick_n_test=2",
                          "repair.steps=[1,2]", "repair.repaint_steps=[2]",
                          "repair.samplers=[ddpm]",
                          "repair.resamplings=[2]", "repair.jump_length=1",
                          "repair.reconstruction=[2]", "repair.reconstruction_steps=[1]",
                          "repair.averaged=[2]", "repair.averaged_steps=[1]",
                          "reconstruct.griffin_lim_iters=2", f"repair.results_dir={results}")
    assert code == 0, err
    record = json.loads((results / "audio_repair_quick.json").read_text())
    systems = [row["system"] for row in record["metrics"]["rows"]]
    assert systems == ["predictor", "replace-1 (ddpm)", "replace-2 (ddpm)",
                       "repaint-2x2-j1 (ddpm)", "replace-1 +rg2 (ddpm)",
                       "mean of 2 x replace-1 (ddpm)"]
    # the predictor's call + the steps (a guided call counts 3; a mean of 2 repairs: 2 x (1 + 1))
    assert [row["nfe"] for row in record["metrics"]["rows"]] == [1, 2, 3, 4, 4, 4]
    assert set(record["baselines"]) == {"zeros", "linear"}
    assert record["baselines"]["zeros"]["gap_si_sdr"] is None
    assert record["metrics"]["train_overrides"] == ["data.packet_loss.share=1.0",
                                                     "data.packet_loss.clean_share=1.0"]
    assert isinstance(record["metrics"]["target_met"], bool)
    bounds = record["metrics"]["truth_fitted_gap_logmel_l1"]
    assert set(bounds) == {"constant", "line"} and all(v >= 0 for v in bounds.values()), bounds
    assert "fitted to the truth" in (results / "audio_repair_quick.md").read_text()
    assert (results / "audio_repair_quick.png").is_file()
