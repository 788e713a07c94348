"""Log-mel features and the way back to waveforms.

    feats = MelFeatures(sample_rate=16000, n_fft=512, hop=128, n_mels=64)
    x = feats.encode(wave)                 # [..., L] -> normalised log-mel [..., M, T]
    y = feats.mask_reconstruct(x_hat, noisy_wave)   # mel-derived mask on the noisy STFT
    y = feats.griffin_lim(x_hat, length)   # phase from Griffin-Lim instead
    x_hat = enhance_in_chunks(fn, x_noisy, chunk=256, overlap=64)   # long recordings
    x = encode_in_segments(feats, wave)    # the same as encode, a long [L] a segment at a time
    y = reconstruct_in_segments(feats.mask_reconstruct, x_hat, wave, hop, n_fft)   # likewise
    y = reconstruct(cfg, x_hat, noisy_wave)   # by the config's reconstruct.method (RECONSTRUCTIONS)

Features (all frames centred, periodic Hann window):
    S = STFT(y)                            [F = n_fft/2 + 1, T]
    M = Fb^T |S|^2                         power mel spectrogram, Fb = melscale_fbanks (HTK)
    x = (log(M + eps) - log_mean) / log_std   the network's input and target (roughly unit scale)

Back to waveform by a mask (the default; the noisy phase is kept), a Wiener-style gain computed in
the mel domain and spread over the STFT bins by the filter bank (cf. the mel-domain Wiener filter
of the ETSI advanced front-end, ES 202 050, and mask-based enhancement, Wang & Chen 2018):
    G_mel = clip(M_hat / M_noisy, 0, 1) ^ mask_exponent          [M, T]
    G_lin[f] = sum_m Fb[f, m] G_mel[m] / sum_m Fb[f, m]           [F, T]
    y_hat = ISTFT(G_lin * S_noisy)
Griffin-Lim (Griffin & Lim 1984) inverts the mel with torchaudio's InverseMelScale (least
squares) and iterates for a phase.
"""

from __future__ import annotations

from typing import Callable

import torch
from omegaconf import DictConfig
from torch import Tensor

from diffusekit.core.registry import Registry
from diffusekit.domains.audio.torchaudio_cpu import torchaudio


class MelFeatures:
    """Normalised log-mel features of one configuration (see the module docstring)."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, hop: int = 128,
                 n_mels: int = 64, f_min: float = 0.0, f_max: float | None = None,
                 eps: float = 1e-5, log_mean: float = -4.0, log_std: float = 4.0,
                 mask_exponent: float = 0.5) -> None:
        self.sample_rate, self.n_fft, self.hop, self.n_mels = sample_rate, n_fft, hop, n_mels
        self.eps, self.log_mean, self.log_std = eps, log_mean, log_std
        self.mask_exponent = mask_exponent
        self.window = torch.hann_window(n_fft)
        # [F, M] triangular filters
        self.fbank = torchaudio.functional.melscale_fbanks(
            n_fft // 2 + 1, f_min, f_max or sample_rate / 2, n_mels, sample_rate, norm=None,
            mel_scale="htk")
        weight = self.fbank.sum(dim=1, keepdim=True)  # [F, 1]
        # rows of zero weight (below the first filter's slope) take the nearest filter's gain
        nearest = torch.nn.functional.one_hot(self.fbank.argmax(dim=1), n_mels).float()
        self.spread = torch.where(weight > 1e-6, self.fbank / weight.clamp_min(1e-6), nearest)

    @classmethod
    def from_config(cls, f) -> "MelFeatures":
        """From the `features` section of the domain config."""
        return cls(sample_rate=int(f.sample_rate), n_fft=int(f.n_fft), hop=int(f.hop),
                   n_mels=int(f.n_mels), f_min=float(f.f_min),
                   f_max=None if f.f_max is None else float(f.f_max), eps=float(f.eps),
                   log_mean=float(f.log_mean), log_std=float(f.log_std),
                   mask_exponent=float(f.mask_exponent))

    # ------------------------------------------------------------------ analysis
    def frames(self, n_samples: int) -> int:
        """Frames of a centred STFT of `n_samples` samples: n // hop + 1."""
        return n_samples // self.hop + 1

    def samples_for(self, n_frames: int) -> int:
        """Samples whose centred STFT has exactly `n_frames` frames: hop * (n_frames - 1)."""
        return self.hop * (n_frames - 1)

    def stft(self, wave: Tensor) -> Tensor:
        """Complex STFT [..., F, T] of waveforms [..., L]."""
        shape = wave.shape
        spec = torch.stft(wave.reshape(-1, shape[-1]), self.n_fft, self.hop,
                          window=self.window.to(wave.device), center=True, return_complex=True)
        return spec.reshape(*shape[:-1], *spec.shape[-2:])

    def istft(self, spec: Tensor, length: int) -> Tensor:
        """Waveforms [..., length] of complex STFTs [..., F, T]."""
        shape = spec.shape
        wave = torch.istft(spec.reshape(-1, *shape[-2:]), self.n_fft, self.hop,
                           window=self.window.to(spec.device), center=True, length=length)
        return wave.reshape(*shape[:-2], length)

    def mel_power(self, spec: Tensor) -> Tensor:
        """M = Fb^T |S|^2: [..., F, T] complex -> [..., M, T]."""
        return torch.einsum("fm,...ft->...mt", self.fbank.to(spec.device), spec.abs() ** 2)

    def normalise(self, mel_power: Tensor) -> Tensor:
        """x = (log(M + eps) - log_mean) / log_std."""
        return (torch.log(mel_power + self.eps) - self.log_mean) / self.log_std

    def denormalise(self, x: Tensor) -> Tensor:
        """M = exp(x log_std + log_mean) - eps, floored at 0 (inverse of `normalise`)."""
        return (torch.exp(x * self.log_std + self.log_mean) - self.eps).clamp_min(0.0)

    def encode(self, wave: Tensor) -> Tensor:
        """Normalised log-mel [..., M, T] of waveforms [..., L]."""
        return self.normalise(self.mel_power(self.stft(wave)))

    # ------------------------------------------------------------------ synthesis
    def mel_gain(self, x_hat: Tensor, noisy_spec: Tensor) -> Tensor:
        """G_lin [..., F, T]: the mel-domain Wiener-style gain of the estimate `x_hat`
        (normalised log-mel [..., M, T]) over the noisy mel, spread over the STFT bins."""
        m_noisy = self.mel_power(noisy_spec)
        ratio = (self.denormalise(x_hat) / (m_noisy + self.eps * 1e-3)).clamp(0.0, 1.0)
        g_mel = ratio ** self.mask_exponent
        return torch.einsum("fm,...mt->...ft", self.spread.to(x_hat.device), g_mel)

    def mask_reconstruct(self, x_hat: Tensor, noisy_wave: Tensor) -> Tensor:
        """Enhanced waveforms [..., L]: the gain of `x_hat` applied to the noisy STFT, noisy
        phase kept. x_hat: [..., M, T] with T = frames(L); noisy_wave: [..., L]."""
        spec = self.stft(noisy_wave)
        if spec.shape[-1] != x_hat.shape[-1]:
            raise ValueError(f"estimate has {x_hat.shape[-1]} frames, audio {spec.shape[-1]}")
        return self.istft(self.mel_gain(x_hat, spec) * spec, noisy_wave.shape[-1])

    def griffin_lim(self, x_hat: Tensor, length: int, n_iter: int = 32, seed: int = 0) -> Tensor:
        """Waveforms [..., length] from normalised log-mel [..., M, T]: least-squares inverse of
        the mel filter bank, then Griffin-Lim phase retrieval (n_iter iterations) from a random
        phase drawn with `seed` on a forked RNG: the same log-mel gives the same audio whatever
        ran before, and the caller's random state is left as it was."""
        inverse = torchaudio.transforms.InverseMelScale(
            self.n_fft // 2 + 1, self.n_mels, self.sample_rate, f_min=0.0, f_max=None,
            mel_scale="htk")
        inverse.fb = self.fbank.clone()
        power = inverse(self.denormalise(x_hat))  # [..., F, T] power spectrum
        gl = torchaudio.transforms.GriffinLim(self.n_fft, n_iter=n_iter, hop_length=self.hop,
                                              power=1.0, length=length)
        devices = [power.device] if power.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return gl(power.clamp_min(0.0).sqrt())


def enhance_in_chunks(fn: Callable[[Tensor], Tensor], x_noisy: Tensor, chunk: int = 256,
                      overlap: int = 64) -> Tensor:
    """Apply `fn` ([B, 1, M, chunk] -> same) to a long log-mel [1, M, T] in chunks of `chunk`
    frames that overlap by `overlap`, cross-fading the overlaps with linear ramps (weights sum to
    one); the last chunk is padded by edge replication. Returns [1, M, T]."""
    t = x_noisy.shape[-1]
    if t <= chunk:
        pad = chunk - t
        padded = torch.nn.functional.pad(x_noisy, (0, pad), mode="replicate")
        return fn(padded.unsqueeze(0))[0, ..., :t]
    stride = chunk - overlap
    starts = list(range(0, t - overlap, stride))
    total = starts[-1] + chunk
    padded = torch.nn.functional.pad(x_noisy, (0, total - t), mode="replicate")
    pieces = torch.stack([padded[..., s:s + chunk] for s in starts])  # [N, 1, M, chunk]
    outs = fn(pieces)
    ramp = torch.ones(chunk)
    if overlap > 0:
        edge = torch.linspace(0.0, 1.0, overlap + 2)[1:-1]
        ramp[:overlap], ramp[-overlap:] = edge, edge.flip(0)
    acc = torch.zeros_like(padded)
    weight = torch.zeros(total)
    for i, s in enumerate(starts):
        w = ramp.clone()
        if i == 0:
            w[:overlap] = 1.0
        if i == len(starts) - 1:
            w[-overlap:] = 1.0
        acc[..., s:s + chunk] += outs[i] * w
        weight[s:s + chunk] += w
    return (acc / weight.clamp_min(1e-8))[..., :t]


def encode_in_segments(f: MelFeatures, wave: Tensor, segment: int = 4096) -> Tensor:
    """`f.encode(wave)` [M, T] of one long waveform [L], computed `segment` frames at a time:
    each frame depends only on the samples under its window, so every segment is the encoding
    of its own stretch of samples plus one window (n_fft) of context on each side, and the STFT
    of the whole file (about 15 MB per minute at 16 kHz) is never held at once. Equal to
    `f.encode(wave)`."""
    n, hop = wave.shape[-1], f.hop
    total, context = f.frames(n), _context(hop, f.n_fft)
    pieces = []
    for a in range(0, total, segment):
        b = min(total, a + segment)
        o, e = max(0, a * hop - context), min(n, (b - 1) * hop + context)
        pieces.append(f.encode(wave[o:e])[..., a - o // hop:b - o // hop])
    return torch.cat(pieces, dim=-1)


def reconstruct_in_segments(fn: Callable[[Tensor, Tensor], Tensor], x_hat: Tensor, wave: Tensor,
                            hop: int, n_fft: int, segment: int = 4096) -> Tensor:
    """`fn(x_hat, wave)` [L] for a frame-local reconstruction `fn` (the mask: the gain of each
    frame from that frame alone, then the ISTFT's overlap-add) of a long waveform [L] and its
    estimate x_hat [..., M, T], computed `segment` frames' worth of samples at a time with one
    window of context on each side (discarded). Equal to `fn(x_hat, wave)`."""
    n, context = wave.shape[-1], _context(hop, n_fft)
    pieces = []
    for start in range(0, n, segment * hop):
        stop = min(n, start + segment * hop)
        o, e = max(0, start - context), min(n, stop + context)
        first = o // hop
        sub = fn(x_hat[..., first:first + (e - o) // hop + 1], wave[o:e])
        pieces.append(sub[..., start - o:stop - o])
    return torch.cat(pieces, dim=-1)


def _context(hop: int, n_fft: int) -> int:
    """One window of context rounded up to whole hops: segment starts stay on the frame grid."""
    return -(-n_fft // hop) * hop


# reconstruct.method -> fn(features, x_hat [B,1,M,T], noisy_wave [B,L], cfg) -> [B, L]
RECONSTRUCTIONS: Registry[Callable[..., Tensor]] = Registry("waveform reconstruction")
RECONSTRUCTIONS.register(
    "mask", lambda f, x_hat, noisy, cfg: f.mask_reconstruct(x_hat[:, 0], noisy))
RECONSTRUCTIONS.register(
    "griffin_lim", lambda f, x_hat, noisy, cfg: f.griffin_lim(
        x_hat[:, 0], noisy.shape[-1], int(cfg.reconstruct.griffin_lim_iters)))


def reconstruct(cfg: DictConfig, x_hat: Tensor, noisy_wave: Tensor) -> Tensor:
    """Waveforms [B, L] from log-mel estimates [B, 1, M, T] (method `reconstruct.method`)."""
    f = MelFeatures.from_config(cfg.features)
    with torch.no_grad():
        return RECONSTRUCTIONS.get(cfg.reconstruct.method)(f, x_hat.float().cpu(),
                                                           noisy_wave.float().cpu(), cfg)
