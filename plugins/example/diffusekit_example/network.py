"""The example domain's network: a residual MLP on 2-D points, conditioned on the noise level
and (optionally) on the shape label.

It is the raw network of the engine's denoiser contract, net(x_in [B, 2], c_noise [B], label=[B])
-> [B, 2]: it predicts whatever the process's `prediction` says (eps by default), and
`diffusekit.core.parameterization.Denoiser` turns that into x0_hat. With `label_dropout` > 0 the
label is replaced by the extra "no label" class during training, so the same network is also an
unconditional model (classifier-free guidance: `guided(denoiser, scale, {"label": null})`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class FourierFeatures(nn.Module):
    """c [B] -> [B, 2 n] = [sin(f_k c), cos(f_k c)] with n angular frequencies f_k spaced
    geometrically in [1, max_frequency] (fixed, not learned; c = t in [0, 1] by default)."""

    def __init__(self, n_frequencies: int = 16, max_frequency: float = 100.0) -> None:
        super().__init__()
        freqs = torch.logspace(0.0, math.log10(max_frequency), n_frequencies)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, c: Tensor) -> Tensor:
        angle = c.float()[:, None] * self.freqs[None]
        return torch.cat([angle.sin(), angle.cos()], dim=1)


class ResidualBlock(nn.Module):
    """h + W2 silu(W1 silu(h + emb)): a residual block with additive conditioning. No
    normalisation layers: with 2-D inputs they would discard the scale of the position."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        return h + self.mlp(torch.nn.functional.silu(h + emb))


class PointDenoiser(nn.Module):
    """net(x_in [B, 2], c_noise [B], label=None) -> [B, 2].

    n_labels:      number of shape classes (0 = unconditional; `label` is then ignored).
    hidden, depth: width and number of residual blocks.
    n_frequencies, max_frequency: the Fourier features of c_noise.
    x_frequencies, x_max_frequency: Fourier features of the position x_in (Tancik et al. 2020,
                   "Fourier Features Let Networks Learn High Frequency Functions"): they let a
                   small MLP draw the thin curves a low-noise denoiser has to project onto.
    label_dropout: training-time probability of replacing a label by the null class n_labels.
    """

    def __init__(self, n_labels: int = 0, hidden: int = 128, depth: int = 3,
                 n_frequencies: int = 16, max_frequency: float = 100.0,
                 x_frequencies: int = 8, x_max_frequency: float = 30.0,
                 label_dropout: float = 0.0) -> None:
        super().__init__()
        self.n_labels, self.label_dropout = n_labels, label_dropout
        self.fourier = FourierFeatures(n_frequencies, max_frequency)
        self.embed_noise = nn.Sequential(nn.Linear(2 * n_frequencies, hidden), nn.SiLU(),
                                         nn.Linear(hidden, hidden))
        # index n_labels is "no label": unconditional samples and dropped labels use it
        self.embed_label = nn.Embedding(n_labels + 1, hidden) if n_labels else None
        self.fourier_x = FourierFeatures(x_frequencies, x_max_frequency) if x_frequencies else None
        self.inp = nn.Linear(2 + 4 * x_frequencies, hidden)  # x, then sin / cos of each coordinate
        self.blocks = nn.ModuleList(ResidualBlock(hidden) for _ in range(depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2))

    @property
    def null_label(self) -> int:
        """The label index meaning "no label" (for unconditional sampling and guidance)."""
        return self.n_labels

    def forward(self, x_in: Tensor, c_noise: Tensor, label: Tensor | None = None) -> Tensor:
        emb = self.embed_noise(self.fourier(c_noise))
        if self.embed_label is not None:
            if label is None:
                label = torch.full((x_in.shape[0],), self.null_label, device=x_in.device)
            elif self.training and self.label_dropout > 0:
                drop = torch.rand(label.shape, device=label.device) < self.label_dropout
                label = torch.where(drop, torch.full_like(label, self.null_label), label)
            emb = emb + self.embed_label(label.long())
        x = x_in.float()
        if self.fourier_x is not None:
            x = torch.cat([x, self.fourier_x(x[:, 0]), self.fourier_x(x[:, 1])], dim=1)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h).to(x_in.dtype)
