"""Network building blocks that several domains' networks share (torch only).

    emb = sinusoidal_features(c_noise, 64)            # [B] -> [B, 64]
    block = ResBlock(32, 64, emb_dim=64)              # [B, 32, H, W], [B, 64] -> [B, 64, H, W]
    device = parameter_device(network)                # where a network's weights are

A domain's network module imports these instead of carrying its own copy (the image domain's
SR3 UNet and the digits domain's class-conditional UNet use both).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sinusoidal_features(c: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """[B] -> [B, dim]: (cos(w_k c'), sin(w_k c')), w_k = max_period^(-k / (dim/2)), c' = 1000 c
    (Vaswani et al. 2017; DDPM's timestep embedding with t in [0, 1] mapped to [0, 1000])."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=c.device) / half)
    args = 1000.0 * c.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def parameter_device(network: object) -> torch.device:
    """The device of `network`'s first parameter; the CPU for a network without any (or a
    plain denoiser function, which is no `nn.Module`)."""
    parameters = network.parameters() if isinstance(network, nn.Module) else ()
    return next((p.device for p in parameters), torch.device("cpu"))


def group_count(channels: int) -> int:
    """GroupNorm's number of groups for `channels`: gcd(channels, 8), so that it always divides."""
    return math.gcd(channels, 8)


class ResBlock(nn.Module):
    """x [B, C_in, H, W], emb [B, E] -> [B, C_out, H, W]:
    skip(x) + conv(SiLU((1 + s) GN(conv(SiLU(GN(x)))) + b)), (s, b) = Linear(emb)
    (the adaptive group norm of Dhariwal & Nichol 2021). The last convolution starts at zero, so
    every block starts as its skip path."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(group_count(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1.0 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


__all__ = ["ResBlock", "group_count", "sinusoidal_features"]
