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

`Holes` (`degradation.kind: holes`) is the other degradation the domain learns to invert: pixels
lost in holes (random boxes and brush strokes), the photo inpainting of Palette (Saharia et al.
2022) and of the inpainting variants of latent diffusion (Rombach et al. 2022). Its "low
resolution" is the photo at full size with the holes filled smoothly from the known pixels
(`smooth_fill`) and the known mask as a fourth channel,

    y = concat[fill(x, m), m],   m = 1 where known,

so the same residual process learns x - fill(x, m) (zero on the known pixels) and the network
sees where the holes are; sampling it draws the holes only (`known`: replacement keeps the
known pixels). Both kinds answer the same questions (`scale`, `cond_channels`, `upsample`,
`seen`, `known`, `explained`, `project`, `damaged_condition`), so the process, the data and the
repair command use either without asking which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from diffusekit.core.registry import Registry

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


def smooth_fill(x: Tensor, known: Tensor) -> Tensor:
    """x [B, C, H, W] with its unknown pixels (known [B, 1, H, W] bool False) replaced by a
    smooth interpolation of the known ones: pull (known-weighted 2 x 2 averages, level by level,
    until every coarse pixel has a known one under it) and push (bilinear upsampling of the coarse
    level into the unknown pixels); Gortler et al. 1996, "The Lumigraph", Sec. 3.3. A neutral
    fill that knows nothing but the known pixels. Raises ValueError when an image has no known
    pixel."""
    weight = known.to(x.dtype)
    if bool(weight.all()) or min(x.shape[-2:]) <= 1:
        return x
    if not bool(weight.flatten(1).any(1).all()):
        raise ValueError("the region covers the whole input: nothing is left to repair from")
    total = F.avg_pool2d(x * weight, 2, ceil_mode=True)
    count = F.avg_pool2d(weight, 2, ceil_mode=True)
    coarse = smooth_fill(total / count.clamp(min=1e-12), count > 0)
    up = F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return torch.where(known, x, up)


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
    base_name: ClassVar[str] = "bicubic"  # what `upsample` gives, in figures and metric names
    cond_channels: ClassVar[int] = 3  # channels of `seen`, the network's conditioning

    def __post_init__(self) -> None:
        if self.scale < 1 or self.blur_sigma < 0 or self.noise_std < 0:
            raise ValueError(f"invalid degradation {self}")

    @property
    def trunk_scale(self) -> int:
        """The space-to-depth factor of the LR network (`network.unshuffle` null): s."""
        return self.scale

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """[B, C, H, W] high resolution -> [B, C, H/s, W/s] low resolution, both in [-1, 1]."""
        y = self.downsample(x)
        if self.noise_std > 0:
            noise = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
            y = y + 2.0 * self.noise_std * noise  # std on [0, 1] is half that on [-1, 1]
        return y.clamp(-1.0, 1.0)

    def upsample(self, y: Tensor) -> Tensor:
        """The image the residual is taken over: bicubic upsampling of y to the high resolution."""
        return bicubic_up(y, self.scale)

    def seen(self, y: Tensor) -> Tensor:
        """What the network is conditioned on: up_s(y) [B, 3, H, W]."""
        return self.upsample(y)

    def downsample(self, x: Tensor) -> Tensor:
        """The noise-free degradation down_s(blur(x)) (the consistency metric compares it with y)."""
        return bicubic_down(gaussian_blur(x, self.blur_sigma), self.scale)

    def explained(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(down_s(blur(x)), y): the pair the consistency metric compares."""
        return self.downsample(x), y

    def project(self, x: Tensor, y: Tensor, iterations: int) -> Tensor:
        """Back-projection (Irani & Peleg 1991): x <- x + up_s(y - down_s(blur(x))), `iterations`
        times, so that x explains y up to the blur."""
        for _ in range(iterations):
            x = x + self.upsample(y - self.downsample(x))
        return x

    def known(self, y: Tensor) -> Tensor | None:
        """The pixels every sample must keep as given: none (every pixel is drawn)."""
        return None

    def damaged_condition(self, filled: Tensor, known: Tensor) -> Tensor:
        """y of a photo whose holes (known [B, 1, H, W] False) were filled smoothly: down_s(filled)
        (noise-free: y is not a measurement here)."""
        return self.downsample(filled).clamp(-1.0, 1.0)

    def view(self, y: Tensor) -> Tensor:
        """y as an RGB picture [B, 3, h, w]."""
        return y


@dataclass(frozen=True)
class Holes:
    """Pixels lost in random holes, y = concat[fill(x, m), m] (see the module docstring).

    box_share:  the share of training images whose hole is a box (the others get brush strokes).
    box_min, box_max: a box's height and width, each a uniform share of the side in this range,
                at a uniform position.
    strokes:    brush strokes of a stroke hole: 1..strokes, each a polyline through 4 random
                points (`core.app.repair.stroke_mask`) ...
    stroke_width: ... with a round brush of a radius uniform in [1, stroke_width] pixels.
    unshuffle:  the LR network's space-to-depth factor (the trunk's resolution; the holes
                themselves are full-size).
    """

    box_share: float = 0.5
    box_min: float = 0.2
    box_max: float = 0.5
    strokes: int = 4
    stroke_width: float = 4.0
    unshuffle: int = 4
    scale: ClassVar[int] = 1
    base_name: ClassVar[str] = "smooth fill"
    cond_channels: ClassVar[int] = 4

    def __post_init__(self) -> None:
        if not (0.0 <= self.box_share <= 1.0 and 0.0 < self.box_min <= self.box_max <= 1.0
                and self.strokes >= 1 and self.stroke_width >= 1.0 and self.unshuffle >= 1):
            raise ValueError(f"invalid hole degradation {self}")

    @property
    def trunk_scale(self) -> int:
        return self.unshuffle

    def mask(self, height: int, width: int, generator: torch.Generator | None = None) -> Tensor:
        """One random hole [H, W] bool, True = lost: a box or brush strokes."""
        from diffusekit.core.app.repair import stroke_mask

        u = lambda: float(torch.rand((), generator=generator))  # noqa: E731
        if u() < self.box_share:
            h = max(1, round(height * (self.box_min + (self.box_max - self.box_min) * u())))
            w = max(1, round(width * (self.box_min + (self.box_max - self.box_min) * u())))
            top, left = int(u() * (height - h + 1)), int(u() * (width - w + 1))
            fill = torch.zeros(height, width, dtype=torch.bool)
            fill[top:top + h, left:left + w] = True
            return fill
        strokes = 1 + int(u() * self.strokes)
        return stroke_mask(height, width, generator, strokes=strokes,
                           width_px=1.0 + (self.stroke_width - 1.0) * u())

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """[B, 3, H, W] photos -> y [B, 4, H, W]: each with a fresh random hole."""
        known = ~torch.stack([self.mask(*x.shape[-2:], generator) for _ in range(len(x))])
        known = known[:, None].to(x.device)
        return self.damaged_condition(smooth_fill(x, known), known)

    def upsample(self, y: Tensor) -> Tensor:
        """The image the residual is taken over: the smooth fill [B, 3, H, W]."""
        return y[:, :3]

    def seen(self, y: Tensor) -> Tensor:
        """What the network is conditioned on: the fill and the known mask [B, 4, H, W]."""
        return y

    def known(self, y: Tensor) -> Tensor:
        """The pixels every sample keeps as given: the known mask [B, 1, H, W] bool (sampling
        a hole model is inpainting its holes)."""
        return y[:, 3:] > 0

    def explained(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(x, the fill) on the known pixels, zero elsewhere: the consistency metric then measures
        how exactly the known pixels are kept."""
        known = y[:, 3:] > 0
        return x * known, y[:, :3] * known

    def project(self, x: Tensor, y: Tensor, iterations: int) -> Tensor:
        """The known pixels put back (one iteration is exact)."""
        return torch.where(y[:, 3:] > 0, y[:, :3], x) if iterations > 0 else x

    def damaged_condition(self, filled: Tensor, known: Tensor) -> Tensor:
        """y = concat[fill(x, known), known] of a photo whose holes (known [B, 1, H, W] False)
        were filled smoothly (`smooth_fill`) [B, 3, H, W], and its known mask."""
        return torch.cat([filled, known.to(filled.dtype)], dim=1)

    def view(self, y: Tensor) -> Tensor:
        """y as an RGB picture: the known pixels, the holes black."""
        return torch.where(y[:, 3:] > 0, y[:, :3], torch.full_like(y[:, :3], -1.0))


# degradation.kind -> builder from the `degradation` section
DEGRADATIONS: Registry = Registry("image degradation")
DEGRADATIONS.register("bicubic", lambda g: Degradation(int(g.scale), float(g.blur_sigma),
                                                       float(g.noise_std)))
DEGRADATIONS.register("holes", lambda g: Holes(**{k: v for k, v in g.holes.items()}))


def degradation_of(cfg: DictConfig) -> Degradation | Holes:
    """The degradation of the config's `degradation` section (`kind`: bicubic | holes)."""
    g = cfg.degradation
    return DEGRADATIONS.get(str(g.get("kind", "bicubic")))(g)
