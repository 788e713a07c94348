"""The image domain's denoisers (`NETWORKS`, chosen by `network.kind`): an SR3-style conditional
UNet at the high resolution (`unet`, Saharia et al. 2021) and a cheaper trunk at the low
resolution (`lr`, `LRSRNet`, the default). Both take the same inputs and predict the same target.

SR3 conditions a DDPM UNet (Ho et al. 2020) on the low-resolution image by upsampling it to the
output size (bicubic) and concatenating it to the noisy input along the channels:

    out = UNet(concat[x_t, up_s(y)], c_noise)

Blocks are residual (GroupNorm, SiLU, 3x3 conv) with the noise level added as a FiLM scale and
shift, (1 + scale) h + shift, after the second normalisation ("adaptive group norm", Dhariwal &
Nichol 2021). The noise level c_noise (the process's time t in [0, 1] by default) enters through
sinusoidal features (Vaswani et al. 2017) and an MLP. No attention: the network is meant to be
fully convolutional, so tiles of any size see the same operator (see `tiling.py`). The same
network, fed zeros for x_t and a fixed c_noise, is the domain's one-step regression baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffusekit.core.layers import ResBlock, group_count, sinusoidal_features
from diffusekit.core.registry import Registry


class SRUNet(nn.Module):
    """SR3 conditional UNet: net(x_in [B, C, H, W], c_noise [B], upsampled [B, C, H, W]) -> [B, C, H, W].

    channels:   width of the first level; level i has channels * mults[i].
    mults:      width multipliers per level; the image is halved between levels, so H and W are
                padded (reflect) to a multiple of 2^(len(mults) - 1) and cropped back.
    blocks:     residual blocks per level (the decoder has blocks + 1, as in DDPM).
    image_channels: C (3 for RGB).
    cond_channels: channels of `upsampled` (C; a hole model adds the known mask: C + 1).
    """

    def __init__(self, channels: int = 32, mults: tuple[int, ...] = (1, 2, 2), blocks: int = 1,
                 image_channels: int = 3, dropout: float = 0.0,
                 cond_channels: int | None = None) -> None:
        super().__init__()
        self.channels, self.levels = channels, len(mults)
        emb_dim = 4 * channels
        self.emb = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        cond_channels = image_channels if cond_channels is None else cond_channels
        self.stem = nn.Conv2d(image_channels + cond_channels, channels, 3, padding=1)
        widths = [channels * m for m in mults]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, c = [channels], channels
        for i, w in enumerate(widths):
            for _ in range(blocks):
                self.down.append(ResBlock(c, w, emb_dim, dropout))
                c = w
                skips.append(c)
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.middle = nn.ModuleList([ResBlock(c, c, emb_dim, dropout), ResBlock(c, c, emb_dim, dropout)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            for _ in range(blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), w, emb_dim, dropout))
                c = w
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.head = nn.Sequential(nn.GroupNorm(group_count(c), c), nn.SiLU(),
                                  nn.Conv2d(c, image_channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)  # predicts zero (the bicubic image) at the start
        nn.init.zeros_(self.head[-1].bias)
        self.blocks = blocks

    def forward(self, x_in: Tensor, c_noise: Tensor, upsampled: Tensor) -> Tensor:
        """Predict (eps, v, x0 or the residual, as the process says) for x_in given `upsampled`."""
        h0, w0 = x_in.shape[-2:]
        m = 2 ** (self.levels - 1)
        pad = (0, (-w0) % m, 0, (-h0) % m)
        x = torch.cat([x_in, upsampled.to(x_in.dtype)], dim=1)
        if any(pad):
            x = F.pad(x, pad, mode="reflect" if min(h0, w0) > max(pad) else "replicate")
        c_noise = c_noise.reshape(-1).expand(x.shape[0]) if c_noise.numel() == 1 else c_noise
        emb = self.emb(sinusoidal_features(c_noise, self.channels).to(x.dtype))
        h = self.stem(x)
        hs = [h]
        blocks = iter(self.down)
        for i in range(self.levels):
            for _ in range(self.blocks):
                h = next(blocks)(h, emb)
                hs.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
                hs.append(h)
        for block in self.middle:
            h = block(h, emb)
        blocks = iter(self.up)
        for i in range(self.levels):
            for _ in range(self.blocks + 1):
                h = next(blocks)(torch.cat([h, hs.pop()], dim=1), emb)
            if i < self.levels - 1:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = self.upsample[i](h)
        return self.head(h)[..., :h0, :w0]


class LRBlock(nn.Module):
    """EDSR-style block without normalisation (Lim et al. 2017), with a FiLM of the noise level:
    h = x + conv2(SiLU((1 + scale) conv1(x) + shift)): [B, C, h, w] -> [B, C, h, w]."""

    def __init__(self, channels: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.conv1(x) * (1.0 + scale) + shift)
        return x + self.conv2(self.dropout(h))


class LRSRNet(nn.Module):
    """A denoiser whose trunk works at the low resolution: net(x_in [B, C, H, W], c_noise [B],
    upsampled [B, cond_channels, H, W]) -> [B, C, H, W], H and W padded (replicate) to multiples
    of `scale` (the trunk's space-to-depth factor; the SR scale, or 4 for a hole model).

    The noisy HR input and the bicubic image are brought to LR space losslessly by pixel-unshuffle
    (space-to-depth, [B, C s^2, H/s, W/s]), a trunk of `blocks` EDSR-style residual blocks of
    `channels` channels runs there, and a sub-pixel convolution (pixel shuffle, Shi et al. 2016,
    ESPCN) maps back to HR. Every HR pixel is still a function of the whole noisy input around it,
    so this is a valid SR3 denoiser, at about 1/s^2 of the cost of a full-resolution trunk.
    """

    def __init__(self, channels: int = 64, blocks: int = 8, scale: int = 4, image_channels: int = 3,
                 dropout: float = 0.0, cond_channels: int | None = None) -> None:
        super().__init__()
        self.channels, self.scale = channels, scale
        emb_dim = 4 * channels
        self.emb = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        cond_channels = image_channels if cond_channels is None else cond_channels
        self.stem = nn.Conv2d((image_channels + cond_channels) * scale ** 2, channels, 3, padding=1)
        self.body = nn.ModuleList([LRBlock(channels, emb_dim, dropout) for _ in range(blocks)])
        self.tail = nn.Conv2d(channels, channels, 3, padding=1)
        self.head = nn.Conv2d(channels, image_channels * scale ** 2, 3, padding=1)
        nn.init.zeros_(self.head.weight)  # predicts zero (the bicubic image) at the start
        nn.init.zeros_(self.head.bias)

    def forward(self, x_in: Tensor, c_noise: Tensor, upsampled: Tensor) -> Tensor:
        """Predict (eps, v, x0 or the residual, as the process says) for x_in given `upsampled`."""
        h0, w0 = x_in.shape[-2:]
        s = self.scale
        x = torch.cat([x_in, upsampled.to(x_in.dtype)], dim=1)
        if h0 % s or w0 % s:
            x = F.pad(x, (0, (-w0) % s, 0, (-h0) % s), mode="replicate")
        c_noise = c_noise.reshape(-1).expand(x.shape[0]) if c_noise.numel() == 1 else c_noise
        emb = self.emb(sinusoidal_features(c_noise, self.channels).to(x.dtype))
        h = self.stem(F.pixel_unshuffle(x, s))
        r = h
        for block in self.body:
            r = block(r, emb)
        h = h + self.tail(r)  # the long skip of EDSR
        return F.pixel_shuffle(self.head(h), s)[..., :h0, :w0]


# network.kind -> a builder of the denoiser from the `network` config section and the
# degradation (its conditioning channels; the LR trunk's scale: `network.unshuffle`, or null for
# the degradation's `trunk_scale`)
NETWORKS: Registry = Registry("image network")
NETWORKS.register("unet", lambda n, degradation: SRUNet(
    channels=int(n.channels), mults=tuple(int(m) for m in n.mults), blocks=int(n.blocks),
    dropout=float(n.dropout), cond_channels=degradation.cond_channels))
NETWORKS.register("lr", lambda n, degradation: LRSRNet(
    channels=int(n.channels), blocks=int(n.blocks),
    scale=int(n.get("unshuffle") or degradation.trunk_scale), dropout=float(n.dropout),
    cond_channels=degradation.cond_channels))
