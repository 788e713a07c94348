"""Packet-loss concealment on the log-mel: `toolkit inpaint --run R call.wav --span 1.20-1.35
--span 2.00-2.08` (seconds), and the pieces the repair benchmark (repair.py) shares.

The audio model is conditional: it denoises a log-mel given the noisy log-mel (process.py). For
concealment the condition may only show what was received, so:

- the lost stretches of the waveform are zero-filled (whatever the file holds there is dropped),
  and the condition is the log-mel of that gapped signal: the gaps sit at the log-mel's floor
  (`features.eps`), partly so in the frames at their edges;
- the known part is every frame whose STFT window touches no gap (`unknown_frames`): there the
  received log-mel is the clean one. Frames whose window overlaps a gap are generated;
- a model trained with `data.packet_loss.fill=linear` sees its lost frames linearly
  interpolated between the received ones instead of at the floor (`GAP_FILLS`): the condition
  is built the same way here as in its training batches (data.Collate);
- the model fills them by inpainting (replacement or RePaint through the engine; for StoRM the
  predictor's estimate first, then the diffusion around it);
- back to audio: Griffin-Lim of the repaired log-mel over the clip (the mel has no phase), whose
  samples replace the gaps only, faded in and out over `RAMP_MS` inside each gap; every received
  sample is written as it was read (at the model's sample rate).

A denoiser trained only on additive noise has never seen a gap in its condition (it would keep
the floor there); the repair benchmark's base trains with packet loss in a share of its mixtures
(`data.packet_loss`), and so should a model meant for concealment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from diffusekit.core.app.repair import output_name
from diffusekit.core.errors import DataError
from diffusekit.core.registry import Registry
from diffusekit.domains.audio.features import MelFeatures
from diffusekit.domains.audio.noise import PacketLoss
from diffusekit.plugins.domain import Damaged, Region

RAMP_MS = 5.0      # fade of the synthesised samples at each gap's edges, inside the gap
FRAME_MULTIPLE = 8  # the UNet halves the frames per level: clips are padded to a multiple of this


def sample_spans(spans: Any, n_samples: int, sample_rate: int) -> list[tuple[int, int]]:
    """Seconds (start, end) -> sample ranges [a, b), sorted; `DataError` for a range outside the
    clip of n_samples."""
    duration = n_samples / sample_rate
    out = []
    for start, end in spans:
        if start < 0 or end > duration + 1e-9:
            raise DataError(f"--span {start:g}-{end:g} lies outside the clip (0-{duration:.3f} s)")
        out.append((int(round(start * sample_rate)), int(round(end * sample_rate))))
    return sorted(out)


def unknown_frames(spans: list[tuple[int, int]], n_frames: int, hop: int, n_fft: int) -> Tensor:
    """[T] bool: the frames whose centred STFT window [t hop - n_fft/2, t hop + n_fft/2) overlaps a
    sample range [a, b) of `spans`."""
    centre = torch.arange(n_frames) * hop
    lo, hi = centre - n_fft // 2, centre + n_fft // 2
    out = torch.zeros(n_frames, dtype=torch.bool)
    for a, b in spans:
        if b > a:
            out |= (lo < b) & (hi > a)
    return out


def gapped(wave: Tensor, spans: list[tuple[int, int]]) -> Tensor:
    """wave [..., L] with the samples of every range zeroed."""
    out = wave.clone()
    for a, b in spans:
        out[..., a:b] = 0.0
    return out


def interpolate_frames(mel: Tensor, unknown: Tensor) -> Tensor:
    """The classic fill: each unknown frame of mel [..., M, T] (unknown [T] bool) linearly
    interpolated per band between the nearest known frames before and after it (held constant
    beyond the first / last known frame)."""
    known_at = torch.nonzero(~unknown).flatten()
    if len(known_at) == 0:
        return mel.clone()
    t = torch.arange(mel.shape[-1])
    right = torch.searchsorted(known_at, t)  # the first known frame >= t (len: none)
    left = right - 1                         # the last known frame < t (-1: none)
    right = torch.where(right >= len(known_at), left, right)
    left = torch.where(left < 0, right, left)
    t0, t1 = known_at[left], known_at[right]
    w = torch.where(t1 > t0, (t - t0).double() / (t1 - t0).clamp(min=1).double(),
                    torch.zeros_like(t, dtype=torch.float64)).to(mel.dtype)
    filled = mel[..., t0] * (1 - w) + mel[..., t1] * w
    return torch.where(unknown, filled, mel)


def frame_runs(unknown: Tensor) -> list[tuple[int, int]]:
    """The runs of consecutive True frames of unknown [T] bool as [start, end) pairs."""
    edges = torch.diff(unknown.to(torch.int8), prepend=unknown.new_zeros(1, dtype=torch.int8),
                       append=unknown.new_zeros(1, dtype=torch.int8))
    starts = torch.nonzero(edges == 1).flatten().tolist()
    ends = torch.nonzero(edges == -1).flatten().tolist()
    return list(zip(starts, ends))


def truth_fitted_fill(clean: Tensor, unknown: Tensor, degree: int) -> Tensor:
    """A bound, not a concealer: each run of unknown frames of clean [..., M, T] (unknown [T]
    bool) replaced per band by the best fit to the truth itself, degree 0: the run's median (the
    constant with the least L1), degree 1: its least-squares straight line over the frames.

    No concealer sees the truth, so it tells how close a fill of that shape can get at best: a
    concealer that scores below the degree-0 bound has found more in the gap than one level per
    band, and one near the degree-1 bound has found each band's slope across the gap too."""
    if degree not in (0, 1):
        raise ValueError(f"degree must be 0 (constant) or 1 (line), not {degree}")
    out = clean.clone()
    for s, e in frame_runs(unknown):
        run = clean[..., s:e].double()
        if degree == 0:
            fit = run.median(dim=-1, keepdim=True).values.expand_as(run)
        else:
            # least squares per band: y ~ a + b (t - mean t), b = cov(t, y) / var(t)
            t = torch.arange(e - s, dtype=torch.float64, device=run.device)
            t = t - t.mean()
            mean = run.mean(dim=-1, keepdim=True)
            slope = (run * t).sum(-1, keepdim=True) / (t * t).sum().clamp_min(1e-12)
            fit = mean + slope * t
        out[..., s:e] = fit.to(clean.dtype)
    return out


def lost_frames(lost: Tensor, hop: int, n_fft: int) -> Tensor:
    """[B, T] bool: the frames of a centred STFT whose window touches a lost sample of
    lost [B, L] (bool or 0 / 1), T = L // hop + 1; `unknown_frames` from a mask of samples."""
    padded = torch.nn.functional.pad(lost.float()[:, None], (n_fft // 2, n_fft // 2))
    # window t covers padded samples [t hop, t hop + n_fft) = [t hop - n_fft/2, t hop + n_fft/2)
    return torch.nn.functional.max_pool1d(padded, n_fft, hop)[:, 0] > 0


GAP_FILLS: Registry[Callable[[Tensor, Tensor], Tensor]] = Registry("gap fill")
GAP_FILLS.register("floor", lambda mel, unknown: mel)  # the gapped signal's log-mel as it is
GAP_FILLS.register("linear", interpolate_frames)       # the classic concealment


def fill_gaps(mel: Tensor, unknown: Tensor, fill: str) -> Tensor:
    """mel [B, 1, M, T] with each clip's unknown frames (unknown [B, T] bool) shown as the
    named fill (`GAP_FILLS`; `data.packet_loss.fill`): the condition of a concealer."""
    make = GAP_FILLS.get(fill)
    return torch.stack([make(m, u) if bool(u.any()) else m for m, u in zip(mel, unknown)])


def splice(received: Tensor, synthesised: Tensor, spans: list[tuple[int, int]],
           sample_rate: int) -> Tensor:
    """received [L] with each gap [a, b) taken from synthesised [L], faded in and out over
    RAMP_MS (at most a quarter of the gap) inside the gap; every other sample as received."""
    out = received.clone()
    for a, b in spans:
        n = b - a
        if n <= 0:
            continue
        ramp = max(1, min(int(RAMP_MS * sample_rate / 1000), n // 4))
        window = torch.ones(n, dtype=out.dtype)
        rise = 0.5 - 0.5 * torch.cos(torch.pi * (torch.arange(ramp, dtype=out.dtype) + 0.5) / ramp)
        window[:ramp], window[n - ramp:] = rise, rise.flip(0)
        out[a:b] = synthesised[a:b] * window
    return out


def to_audio(features: MelFeatures, mel: Tensor, received: Tensor, spans: list[tuple[int, int]],
             iterations: int) -> Tensor:
    """The concealed waveform [L] of a repaired log-mel [M, T']: Griffin-Lim of the whole mel
    (`iterations`), spliced into the gaps of `received` [L] (T' may exceed the frames of L:
    padding)."""
    length = received.shape[-1]
    frames = features.frames(length)
    with torch.no_grad():
        synth = features.griffin_lim(mel[None, :, :frames].float().cpu(), length, iterations)[0]
    return splice(received, synth, spans, features.sample_rate)


def padded_length(features: MelFeatures, n_samples: int) -> int:
    """Samples whose centred STFT has a multiple of FRAME_MULTIPLE frames, at least n_samples."""
    frames = -(-features.frames(n_samples) // FRAME_MULTIPLE) * FRAME_MULTIPLE
    return max(n_samples, features.samples_for(frames))


# ---------------------------------------------------------------------------------- the command
def read_damaged(path: Path, region: Region, cfg: DictConfig) -> Damaged:
    """A WAV (any format soundfile reads; mixed to mono and resampled to the model's rate) and
    the time ranges lost (--span START-END in seconds, repeatable); see the module docstring."""
    from diffusekit.domains.audio.corpus import load_wav

    if not region.spans:
        raise DataError("say which stretches were lost: --span START-END (seconds), repeatable")
    features = MelFeatures.from_config(cfg.features)
    wave = torch.from_numpy(load_wav(Path(path), features.sample_rate))
    if wave.shape[-1] < features.n_fft:
        raise DataError(f"{str(path)!r} is shorter than one STFT window "
                        f"({1000 * features.n_fft / features.sample_rate:.0f} ms)")
    spans = sample_spans(region.spans, wave.shape[-1], features.sample_rate)
    received = gapped(wave, spans)
    length = padded_length(features, wave.shape[-1])
    padded = torch.nn.functional.pad(received, (0, length - wave.shape[-1]))
    mel = features.encode(padded)[None, None]  # [1, 1, M, T]
    unknown = unknown_frames(spans, mel.shape[-1], features.hop, features.n_fft)
    known = ~unknown[None, None, None, :]
    fill = PacketLoss.from_config(cfg.data.get("packet_loss")).fill  # as the model was trained
    batch = {"x0": mel, "cond": {"noisy": fill_gaps(mel, unknown[None], fill)}}
    return Damaged(batch, known, source={"received": received, "spans": spans, "mel": mel},
                   name=output_name(Path(path)))


def write_repaired(samples: Any, damaged: Damaged, out_dir: Path, cfg: DictConfig) -> list[Path]:
    """<name>-repaired.wav (or -repaired-<k>.wav for each of -n repairs) at the model's rate,
    and <name>-spectrograms.png: the received log-mel (gaps shaded) | each repair."""
    import soundfile as sf

    from diffusekit.domains.audio.process import mel_of

    features = MelFeatures.from_config(cfg.features)
    mel = mel_of(samples).detach().cpu()
    received, spans = damaged.source["received"], damaged.source["spans"]
    iterations = int(cfg.reconstruct.griffin_lim_iters)
    paths = []
    for k in range(mel.shape[0]):
        wave = to_audio(features, mel[k, 0], received, spans, iterations)
        suffix = "" if mel.shape[0] == 1 else f"-{k}"
        path = Path(out_dir) / f"{damaged.name}-repaired{suffix}.wav"
        sf.write(str(path), wave.numpy().astype(np.float32), features.sample_rate,
                 subtype="FLOAT")
        paths.append(path)
    frames = features.frames(received.shape[-1])
    shown = [("received", damaged.source["mel"][0, 0, :, :frames])]
    shown += [(f"repaired {k}" if mel.shape[0] > 1 else "repaired", mel[k, 0, :, :frames])
              for k in range(min(mel.shape[0], 3))]
    png = Path(out_dir) / f"{damaged.name}-spectrograms.png"
    gap_figure(shown, spans, features, png)
    return [*paths, png]


def gap_figure(shown: list[tuple[str, Tensor]], spans: list[tuple[int, int]],
               features: MelFeatures, png: Path, title: str | None = None) -> Path:
    """Log-mel images [M, T] side by side with the lost ranges outlined."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.6 * len(shown), 2.8), dpi=100)
    FigureCanvasAgg(fig)
    hop_s = features.hop / features.sample_rate
    for i, (label, mel) in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), i + 1)
        img = mel.float().numpy()
        ax.imshow(img, origin="lower", aspect="auto", vmin=-2.0, vmax=3.0, cmap="magma",
                  extent=(0, img.shape[1] * hop_s, 0, img.shape[0]))
        for a, b in spans:
            ax.axvspan(a / features.sample_rate, b / features.sample_rate, fill=False,
                       edgecolor="cyan", lw=0.8)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("s")
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png)
    return png
