"""Full images of any size in bounded memory: the network evaluated on overlapping tiles.

The sampler runs on the whole image (its state is only [B, 3, H, W]); every network call is
split into overlapping tiles of `tile` x `tile` pixels whose outputs are blended with a smooth
window and normalised by the summed weights:

    out(p) = sum_i w_i(p) f(x_i)(p) / sum_i w_i(p),   w_i(p) = w(p - o_i) > 0

(the weighted overlap-add of MultiDiffusion, Bar-Tal et al. 2023, and Mixture of Diffusers,
Jiménez 2023). Because the blend happens at every denoising step, neighbouring tiles agree on the
sample they produce: no seams, and no stochastic disagreement between tiles. The weights form a
partition of unity, so a network that acts pixel by pixel gives exactly its untiled output, and an
image no larger than one tile goes through in one call. The window is a raised cosine with a floor
(Hann, 0.5 - 0.5 cos(2 pi (k + 1/2) / T), plus `floor`) so that every pixel keeps a positive
weight, also at the image border where only one tile covers it. Peak memory is that of
`batch_tiles` tiles, whatever the image size.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def tile_starts(size: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of tiles of length `tile` covering [0, size) with at least `overlap` shared
    pixels between neighbours; the last tile ends at `size`. One tile when size <= tile.
    Every start but the last is a multiple of `align` (the last too when size - tile is), so a
    network that works on an s x s pixel grid (pixel-unshuffle) sees the image's own grid."""
    if tile <= overlap + align - 1:
        raise ValueError(f"tile ({tile}) must be larger than its overlap ({overlap}) + align - 1")
    if size <= tile:
        return [0]
    n = math.ceil((size - overlap - align + 1) / (tile - overlap - align + 1))
    stride = (size - tile) / (n - 1)
    return [align * (int(round(i * stride)) // align) for i in range(n - 1)] + [size - tile]


def window(tile_h: int, tile_w: int, floor: float = 1e-2, device=None, dtype=None) -> Tensor:
    """[tile_h, tile_w] separable raised-cosine blending weights in (0, 1 + floor]."""
    def hann(n: int) -> Tensor:
        k = torch.arange(n, dtype=torch.float64)
        return 0.5 - 0.5 * torch.cos(2.0 * math.pi * (k + 0.5) / n) + floor

    return (hann(tile_h)[:, None] * hann(tile_w)[None, :]).to(device=device, dtype=dtype)


class TiledNetwork(nn.Module):
    """net(x_in, c_noise, **images) evaluated tile by tile and blended (see the module docstring).

    network:  the raw network net(x_in [B, C, H, W], c_noise [B], **cond) -> [B, C', H, W];
              every conditioning tensor with x_in's height and width is tiled with it.
    tile:     tile side in pixels (None or 0: no tiling); overlap: pixels shared by neighbours.
    batch_tiles: tiles per network call (bounds the memory).
    align:    tile offsets are multiples of this (the SR scale: see `tile_starts`).
    """

    def __init__(self, network: nn.Module, tile: int | None, overlap: int = 16,
                 batch_tiles: int = 4, floor: float = 1e-2, align: int = 1) -> None:
        super().__init__()
        self.network, self.tile, self.overlap = network, tile, overlap
        self.batch_tiles, self.floor, self.align = max(1, batch_tiles), floor, align

    def forward(self, x_in: Tensor, c_noise: Tensor, **cond: Tensor) -> Tensor:
        b, _, h, w = x_in.shape
        if not self.tile or (h <= self.tile and w <= self.tile):
            return self.network(x_in, c_noise, **cond)
        th, tw = min(self.tile, h), min(self.tile, w)
        boxes = [(i, j) for i in tile_starts(h, th, self.overlap, self.align)
                 for j in tile_starts(w, tw, self.overlap, self.align)]
        weight = window(th, tw, self.floor, x_in.device, x_in.dtype)
        c_noise = c_noise.reshape(-1).expand(b) if c_noise.numel() == 1 else c_noise
        spatial = {k: v for k, v in cond.items()
                   if isinstance(v, Tensor) and v.dim() == 4 and v.shape[-2:] == (h, w)}
        out, total = None, torch.zeros(h, w, device=x_in.device, dtype=x_in.dtype)
        for start in range(0, len(boxes), self.batch_tiles):
            chunk = boxes[start:start + self.batch_tiles]
            crop = lambda t: torch.cat([t[..., i:i + th, j:j + tw] for i, j in chunk])  # noqa: E731
            tiles_cond = {k: crop(v) if k in spatial else v for k, v in cond.items()}
            y = self.network(crop(x_in), c_noise.repeat(len(chunk)), **tiles_cond)
            if out is None:
                out = torch.zeros(b, y.shape[1], h, w, device=y.device, dtype=y.dtype)
            for n, (i, j) in enumerate(chunk):  # weighted overlap-add
                out[..., i:i + th, j:j + tw] += weight * y[n * b:(n + 1) * b]
                total[i:i + th, j:j + tw] += weight
        return out / total
