"""The image domain's degradation model and colour conversion.

Super-resolution learns to invert a known degradation y = D(x) of a high-resolution image x:

    y = down_s(blur_k(x)) + n,   n ~ N(0, noise_std^2)

down_s is antialiased bicubic resampling by the factor s (the "bicubic x4" degradation of the SR
literature, e.g. Lim et al. 2017, EDSR; Saharia et al. 2021, SR3): PyTorch's
`interpolate(mode="bicubic", antialias=True)` widens the Keys cubic kernel (a = -0.5, as PIL and
MATLAB's imresize) by s so that it low-pass filters before sampling. blur_k (an isotropic Gaussian)
and the noise are optional. The model sees the bicubic upsampling up_s(y) (Keys kernel,
a = -0.75 in PyTorch, no antialiasing needed when enlarging) concatenated to its noisy input.

Images are float tensors [B, 3, H, W] in [-1, 1]; metrics use the luma channel Y of ITU-R BT.601
on the 8-bit scale, as the SR literature does (Y in [16, 235]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

# ITU-R BT.601 luma for R, G, B in [0, 1] (studio swing, Y in [16, 235]):
#     Y = 16 + 65.481 R + 128.553 G + 24.966 B
BT601_Y = (65.481, 128.553, 24.966)
BT601_OFFSET = 16.0


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1] (no clamping)."""
    return (x + 1.0) / 2.0


def from_unit(x: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1]."""
    return x * 2.0 - 1.0


def quantize(x: Tensor) -> Tensor:
    """[B, 3, H, W] in [-1, 1] -> the 8-bit image it would be saved as, float in [0, 255]."""
    return torch.round(to_unit(x).clamp(0.0, 1.0) * 255.0)


def rgb_to_y(rgb255: Tensor) -> Tensor:
    """Luma Y of ITU-R BT.601: [B, 3, H, W] RGB in [0, 255] -> [B, 1, H, W] in [16, 235].

    Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 for R, G, B in [0, 255]."""
    if rgb255.shape[-3] != 3:
        raise ValueError(f"rgb_to_y needs 3 channels, got shape {tuple(rgb255.shape)}")
    w = torch.tensor(BT601_Y, dtype=rgb255.dtype, device=rgb255.device).view(3, 1, 1)
    return BT601_OFFSET + (rgb255 * w).sum(dim=-3, keepdim=True) / 255.0


def bicubic_down(x: Tensor, scale: int) -> Tensor:
    """Antialiased bicubic downsampling by an integer `scale`: [B, C, H, W] -> [B, C, H/s, W/s]
    (H and W must be multiples of s)."""
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"image size {h}x{w} is not a multiple of the scale {scale}")
    return F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True,
                         align_corners=False)


def bicubic_up(y: Tensor, scale: int) -> Tensor:
    """Bicubic upsampling by an integer `scale`: [B, C, h, w] -> [B, C, h s, w s]."""
    h, w = y.shape[-2:]
    return F.interpolate(y, size=(h * scale, w * scale), mode="bicubic", align_corners=False)


def gaussian_kernel(sigma: float, radius: int | None = None) -> Tensor:
    """Normalised 1-D Gaussian taps exp(-k^2 / (2 sigma^2)), k = -r..r (r = ceil(3 sigma))."""
    radius = int(math.ceil(3.0 * sigma)) if radius is None else radius
    k = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-(k ** 2) / (2.0 * sigma ** 2))
    return (taps / taps.sum()).float()


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable isotropic Gaussian blur with reflected borders: [B, C, H, W] -> same shape."""
    if sigma <= 0:
        return x
    taps = gaussian_kernel(sigma).to(x)
    r, c = taps.numel() // 2, x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


@dataclass(frozen=True)
class Degradation:
    """y = down_s(blur(x)) + noise on [-1, 1] images (see the module docstring).

    scale:      the downsampling factor s (4: "x4").
    blur_sigma: std of the Gaussian blur in high-resolution pixels (0: none).
    noise_std:  std of the additive Gaussian noise on the [0, 1] scale (0: none).
    """

    scale: int = 4
    blur_sigma: float = 0.0
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        if self.scale < 1 or self.blur_sigma < 0 or self.noise_std < 0:
            raise ValueError(f"invalid degradation {self}")

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """[B, C, H, W] high resolution -> [B, C, H/s, W/s] low resolution, both in [-1, 1]."""
        y = self.downsample(x)
        if self.noise_std > 0:
            noise = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
            y = y + 2.0 * self.noise_std * noise  # std on [0, 1] is half that on [-1, 1]
        return y.clamp(-1.0, 1.0)

    def upsample(self, y: Tensor) -> Tensor:
        """The model's conditioning: bicubic upsampling of y to the high resolution."""
        return bicubic_up(y, self.scale)

    def downsample(self, x: Tensor) -> Tensor:
        """The noise-free degradation down_s(blur(x)) (the consistency metric compares it with y)."""
        return bicubic_down(gaussian_blur(x, self.blur_sigma), self.scale)


def degradation_of(cfg: DictConfig) -> Degradation:
    """The `Degradation` of the config's `degradation` section."""
    g = cfg.degradation
    return Degradation(int(g.scale), float(g.blur_sigma), float(g.noise_std))
