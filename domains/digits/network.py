"""The digits domain's denoiser: a small class-conditional UNet (DDPM's, Ho et al. 2020, at the
size of a 28 x 28 digit) with a class embedding and a null class for classifier-free guidance.

    net(x_in [B, 1, H, W], c_noise [B], label=[B] or None) -> [B, 1, H, W]

It predicts whatever the process's `prediction` says; `diffusekit.core.parameterization.Denoiser`
turns that into x0_hat. The conditioning vector is

    emb = MLP(sinusoidal(c_noise)) + E[label]        E: (n_classes + 1) x emb_dim

where index `n_classes` is the null class ("no label"). During training a label is replaced by
the null class with probability `label_dropout`, so the same network is also the unconditional
model that classifier-free guidance (Ho & Salimans 2022) subtracts. `label=None` means the null
class for every example; with `n_classes=0` the network is unconditional and ignores `label`.

Blocks are residual (GroupNorm, SiLU, 3x3 conv) with the embedding as a FiLM scale and shift
after the second normalisation ("adaptive group norm", Dhariwal & Nichol 2021). The blocks are
plain named submodules, so a ControlNet (Zhang et al. 2023) can copy or hook them by name:

    stem        conv 1 -> channels
    down.<i>    level i: `blocks` ResBlocks, then a stride-2 conv (not at the last level)
    mid         ResBlock, self-attention at the lowest resolution, ResBlock
    up.<i>      level i (from the lowest): ResBlocks over [h, skip], then nearest upsampling
    head        GroupNorm, SiLU, conv channels -> 1
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusekit.core.layers import ResBlock, group_count, sinusoidal_features


class SelfAttention(nn.Module):
    """Single-head self-attention over the H x W positions, residual: [B, C, H, W] -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(group_count(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)  # [B, C, HW] each
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.out(a.transpose(1, 2).reshape(b, c, h, w))


class DownLevel(nn.Module):
    """`blocks` ResBlocks at one resolution, then a stride-2 conv (unless last): returns the
    output and the skips (one per block) the matching up level concatenates."""

    def __init__(self, c_in: int, c_out: int, blocks: int, emb_dim: int, dropout: float,
                 downsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(c_in if i == 0 else c_out, c_out, emb_dim, dropout)
                                    for i in range(blocks))
        self.downsample = nn.Conv2d(c_out, c_out, 3, stride=2, padding=1) if downsample else None

    def forward(self, h: Tensor, emb: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips = []
        for block in self.blocks:
            h = block(h, emb)
            skips.append(h)
        if self.downsample is not None:
            h = self.downsample(h)
        return h, skips


class MidBlock(nn.Module):
    """ResBlock, self-attention, ResBlock at the lowest resolution: [B, C, h, w] -> same."""

    def __init__(self, channels: int, emb_dim: int, dropout: float, attention: bool) -> None:
        super().__init__()
        self.block1 = ResBlock(channels, channels, emb_dim, dropout)
        self.attention = SelfAttention(channels) if attention else nn.Identity()
        self.block2 = ResBlock(channels, channels, emb_dim, dropout)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        return self.block2(self.attention(self.block1(h, emb)), emb)


class UpLevel(nn.Module):
    """ResBlocks over [h, skip] (one per skip of the matching down level), then nearest x2
    upsampling to `size` (unless the last, highest level)."""

    def __init__(self, c_in: int, c_skip: int, c_out: int, blocks: int, emb_dim: int,
                 dropout: float, upsample: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock((c_in if i == 0 else c_out) + c_skip, c_out, emb_dim,
                                             dropout) for i in range(blocks))
        self.upsample = nn.Conv2d(c_out, c_out, 3, padding=1) if upsample else None

    def forward(self, h: Tensor, skips: list[Tensor], emb: Tensor,
                size: tuple[int, int] | None = None) -> Tensor:
        for block in self.blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        if self.upsample is not None:
            h = self.upsample(F.interpolate(h, size=size, mode="nearest"))
        return h


class DigitUNet(nn.Module):
    """net(x_in [B, C, H, W], c_noise [B], label=[B] | None) -> [B, C, H, W].

    n_classes:      number of classes (0: unconditional; `label` is ignored).
    channels, mults: width of the first level and each level's multiplier (H is halved between
                    levels: 28 -> 14 -> 7 with three levels).
    blocks:         ResBlocks per level.
    attention:      self-attention in the middle block.
    label_dropout:  training-time probability of replacing a label by the null class
                    (classifier-free guidance; Ho & Salimans 2022 use 0.1 to 0.2).
    in_channels:    image channels (1 for grey digits).
    """

    def __init__(self, n_classes: int = 10, channels: int = 32, mults: tuple[int, ...] = (1, 2, 2),
                 blocks: int = 1, attention: bool = True, dropout: float = 0.0,
                 label_dropout: float = 0.1, in_channels: int = 1) -> None:
        super().__init__()
        self.n_classes, self.label_dropout = int(n_classes), float(label_dropout)
        emb_dim = 4 * channels
        self.embed_dim = channels
        self.embed_noise = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(),
                                         nn.Linear(emb_dim, emb_dim))
        # index n_classes is the null class: unconditional samples and dropped labels use it
        self.embed_label = nn.Embedding(self.n_classes + 1, emb_dim) if self.n_classes else None
        widths = [channels * int(m) for m in mults]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        c = widths[0]
        for i, width in enumerate(widths):
            self.down.append(DownLevel(c, width, blocks, emb_dim, dropout, i < len(widths) - 1))
            c = width
        self.mid = MidBlock(c, emb_dim, dropout, attention)
        self.up = nn.ModuleList()
        for i, width in reversed(list(enumerate(widths))):
            self.up.append(UpLevel(c, width, width, blocks, emb_dim, dropout, i > 0))
            c = width
        self.head = nn.Sequential(nn.GroupNorm(group_count(c), c), nn.SiLU(),
                                  nn.Conv2d(c, in_channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    @property
    def null_label(self) -> int:
        """The label index meaning "no label" (unconditional samples, the guidance branch)."""
        return self.n_classes

    @property
    def conditional(self) -> bool:
        return self.embed_label is not None

    def embedding(self, c_noise: Tensor, label: Tensor | None) -> Tensor:
        """[B] noise levels and [B] labels (or None) -> [B, 4 channels], with label dropout in
        training mode."""
        emb = self.embed_noise(sinusoidal_features(c_noise, self.embed_dim))
        if self.embed_label is None:
            return emb
        if label is None:
            label = torch.full((c_noise.shape[0],), self.null_label, device=c_noise.device)
        label = label.long()
        if self.training and self.label_dropout > 0:
            drop = torch.rand(label.shape, device=label.device) < self.label_dropout
            label = torch.where(drop, torch.full_like(label, self.null_label), label)
        return emb + self.embed_label(label)

    def forward(self, x_in: Tensor, c_noise: Tensor, label: Tensor | None = None) -> Tensor:
        c_noise = c_noise.reshape(-1).expand(x_in.shape[0]) if c_noise.numel() == 1 else c_noise
        emb = self.embedding(c_noise, label)
        h = self.stem(x_in.float())
        skips, sizes = [], []
        for level in self.down:
            sizes.append(tuple(h.shape[-2:]))
            h, level_skips = level(h, emb)
            skips.append(level_skips)
        h = self.mid(h, emb)
        for j, level in enumerate(self.up):
            i = len(self.down) - 1 - j
            h = level(h, skips[i], emb, size=sizes[i - 1] if i > 0 else None)
        return self.head(h).to(x_in.dtype)


def build_network(section) -> DigitUNet:
    """A `DigitUNet` from the config's `network` section."""
    return DigitUNet(n_classes=int(section.n_classes), channels=int(section.channels),
                     mults=tuple(int(m) for m in section.mults), blocks=int(section.blocks),
                     attention=bool(section.attention), dropout=float(section.dropout),
                     label_dropout=float(section.label_dropout),
                     in_channels=int(section.get("in_channels", 1)))
