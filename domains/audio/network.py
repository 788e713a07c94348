"""The audio domain's denoiser: a small 2-D UNet over (mel bins x frames).

    net = MelUNet(channels=(32, 64, 96))
    out = net(x_in, c_noise, noisy=x_noisy)     # [B, 1, M, T], [B], [B, 1, M, T] -> [B, 1, M, T]
    net = MelUNet(conditions=("noisy", "mixture"))   # StoRM's denoiser seeing both inputs
    out = net(x_in, c_noise, noisy=estimate, mixture=x_noisy)

The conditioning log-mels (by default the noisy one) enter by channel concatenation with the
noised clean mel (as SR3 does with the low-resolution image, Saharia et al. 2021). The noise
level enters every residual block as a FiLM scale/shift from sinusoidal features of c_noise
(Vaswani et al. 2017 embedding, Dhariwal & Nichol 2021 AdaGN). M and T must be divisible by 2^(levels - 1).

`NETWORKS[model.objective](cfg)` builds the network an objective trains: one MelUNet of the
`network` section, or for StoRM a `core.regeneration.PredictorDenoiser` pair of them.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from diffusekit.core.errors import ConfigError
from diffusekit.core.regeneration import PredictorDenoiser
from diffusekit.core.registry import Registry


def noise_features(c_noise: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features [B, dim] of c_noise [B] (or scalar): cos / sin(c * 1000 * w_k),
    w_k = max_period^(-k / (dim/2)); the factor 1000 spreads c_noise = t in [0, 1]."""
    c = c_noise.reshape(-1).float() * 1000.0
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=c.device) / half)
    args = c[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv twice, with FiLM of the noise embedding after the first norm."""

    def __init__(self, c_in: int, c_out: int, emb: int, groups: int = 8) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb, 2 * c_out)
        self.norm2 = nn.GroupNorm(min(groups, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = nn.functional.silu(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(h)


class TimeContext(nn.Module):
    """Residual convolutions along frames only, at full frequency resolution: layer k is
    h <- h + Conv_(1x3, dilation d_k)(SiLU(h)) (WaveNet's dilated stack, van den Oord et al.
    2016, applied per mel bin; no normalisation, whose statistics would mix every bin), each
    zero-initialised, so that an output frame sees sum(d_k) frames either side in its own bin
    without that bin's detail passing through the UNet's coarser levels (which halve M too).
    [B, C, M, T] -> [B, C, M, T]."""

    def __init__(self, channels: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for d in dilations:
            conv = nn.Conv2d(channels, channels, (1, 3), dilation=(1, d), padding=(0, d))
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
            self.layers.append(nn.Sequential(nn.SiLU(), conv))

    def forward(self, h: Tensor) -> Tensor:
        for layer in self.layers:
            h = h + layer(h)
        return h


class MelUNet(nn.Module):
    """UNet on [B, 1, M, T] log-mels conditioned on log-mels [B, 1, M, T] passed by keyword.

    channels: width per level (each level after the first halves M and T); blocks: residual
    blocks per level; emb_dim: width of the noise embedding; conditions: the keyword names of
    the conditioning log-mels, concatenated in this order after the input; time_context: the
    dilations of a `TimeContext` stack before the output layer (empty: none).
    """

    def __init__(self, channels: tuple[int, ...] = (32, 64, 96), blocks: int = 1,
                 emb_dim: int = 128, conditions: tuple[str, ...] = ("noisy",),
                 time_context: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.conditions = tuple(conditions)
        self.levels = len(channels)
        self.emb_dim = emb_dim
        self.emb = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.stem = nn.Conv2d(1 + len(self.conditions), channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        c_prev = channels[0]
        for i, c in enumerate(channels):
            self.down.append(nn.ModuleList(
                [ResBlock(c_prev if j == 0 else c, c, emb_dim) for j in range(blocks)]))
            c_prev = c
            if i < self.levels - 1:
                self.pool.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.mid = ResBlock(c_prev, c_prev, emb_dim)
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(self.levels)):
            c = channels[i]
            self.up.append(nn.ModuleList(
                [ResBlock((c_prev if j == 0 else c) + c, c, emb_dim) for j in range(blocks)]))
            c_prev = c
            if i > 0:
                self.upsample.append(nn.ConvTranspose2d(c, channels[i - 1], 4, stride=2,
                                                        padding=1))
                c_prev = channels[i - 1]
        self.time_context = TimeContext(channels[0], tuple(time_context))
        self.out = nn.Sequential(nn.GroupNorm(min(8, channels[0]), channels[0]), nn.SiLU(),
                                 nn.Conv2d(channels[0], 1, 3, padding=1))

    def forward(self, x: Tensor, c_noise: Tensor, **cond: Tensor) -> Tensor:
        """x [B, 1, M, T] (the scaled noised input), c_noise [B] or scalar, cond: the
        `conditions` log-mels [B, 1, M, T] by name (others are ignored)."""
        missing = [name for name in self.conditions if name not in cond]
        if missing:
            raise TypeError(f"MelUNet needs the conditioning log-mels {missing}")
        c_noise = c_noise.expand(x.shape[0]) if c_noise.dim() == 0 else c_noise
        emb = self.emb(noise_features(c_noise, self.emb_dim))
        h = self.stem(torch.cat([x, *(cond[name] for name in self.conditions)], dim=1))
        skips = []
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            if i < self.levels - 1:
                h = self.pool[i](h)
        h = self.mid(h, emb)
        for i, blocks in enumerate(self.up):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if i < self.levels - 1:
                h = self.upsample[i](h)
        return self.out(self.time_context(h))


def mel_unet(cfg: DictConfig, conditions: tuple[str, ...] = ("noisy",)) -> MelUNet:
    """The denoiser network of the `network` section, conditioned on the log-mels `conditions`."""
    n = cfg.network
    dilations = tuple(int(d) for d in n.get("time_context") or ())
    if any(d < 1 for d in dilations):
        raise ConfigError(f"network.time_context must list dilations >= 1, got {list(dilations)}")
    return MelUNet(channels=tuple(int(c) for c in n.channels), blocks=int(n.blocks),
                   emb_dim=int(n.emb_dim), conditions=conditions, time_context=dilations)


def regeneration_pair(cfg: DictConfig) -> PredictorDenoiser:
    """StoRM's two UNets: the predictor sees the mixture, the denoiser its estimate (and, with
    `model.see_mixture`, the mixture too)."""
    seen = ("noisy", "mixture") if cfg.model.get("see_mixture", False) else ("noisy",)
    return PredictorDenoiser(mel_unet(cfg), mel_unet(cfg, seen))


# model.objective -> factory(cfg) -> the network that objective's process trains
NETWORKS: Registry[Callable[[DictConfig], torch.nn.Module]] = Registry("audio network layout")
NETWORKS.register("diffusion", mel_unet)
NETWORKS.register("regression", mel_unet)
NETWORKS.register("storm", regeneration_pair)
