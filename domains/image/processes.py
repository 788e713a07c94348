"""How the image domain trains and samples: residual diffusion (SR3) and its regression baseline.

Both processes speak the toolkit's process seam (`training_loss(network, batch)`,
`generate(network, batch, ...)`) over batches {"x0": HR [B, 3, H, W], "cond": {"low_res": LR}}
and hand the same network up_s(y) as its `upsampled` conditioning.

`ResidualDiffusion` (SR3, Saharia et al. 2021, with the residual target of SRDiff, Li et al. 2022
and of Whang et al. 2022): the diffusion variable is the scaled residual over bicubic,

    r0 = (x - up_s(y)) / residual_scale,      x_hat = up_s(y) + residual_scale * r0_hat,

which is near zero in flat regions, so fewer steps suffice than for the image itself
(`residual: false` diffuses x itself, as SR3 does). Any engine sampler draws r0 through
`core.process.GaussianDiffusion`; every network call goes through `TiledNetwork`, so whole images
of any size are sampled in bounded memory without seams.

`Regression`: the same network, fed zeros for x_t and c_noise = 0, trained with the MSE of the
scaled residual: x_hat = up_s(y) + residual_scale * net(0, 0, up_s(y)), one network call. It
estimates the conditional mean E[x | y], the PSNR-optimal answer diffusion is compared with.

Optional back-projection (Irani & Peleg 1991) makes any output explain its input exactly up to
the blur: x <- x + up_s(y - down_s(blur(x))), `back_projection` times. Off by default; the
benchmark reports outputs with and without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from diffusekit.core.process import GaussianDiffusion
from diffusekit.core.registry import Registry
from diffusekit.domains.image.degradation import Degradation
from diffusekit.domains.image.tiling import TiledNetwork


@dataclass
class SRSamples:
    """What a super-resolution process generates for a batch (all [B, 3, H, W] in [-1, 1], the
    low resolution [B, 3, H/s, W/s]); `reference` is the batch's high resolution, if it had one."""

    image: Tensor
    bicubic: Tensor
    low_res: Tensor
    reference: Tensor | None = None

    def __len__(self) -> int:
        return self.image.shape[0]


def back_project(x: Tensor, low_res: Tensor, degradation: Degradation, iterations: int) -> Tensor:
    """Iterative back-projection: x <- x + up_s(y - down_s(blur(x))), `iterations` times."""
    for _ in range(iterations):
        x = x + degradation.upsample(low_res - degradation.downsample(x))
    return x


@dataclass(frozen=True, eq=False)
class _SRBase:
    degradation: Degradation
    residual: bool = True
    residual_scale: float = 0.1
    tile: int | None = None
    tile_overlap: int = 32
    batch_tiles: int = 4
    back_projection: int = 0

    def conditioning(self, batch: dict) -> tuple[Tensor, Tensor]:
        """(low_res [B, 3, h, w], up_s(low_res) [B, 3, H, W]) of a batch."""
        low_res = batch["cond"]["low_res"]
        return low_res, self.degradation.upsample(low_res)

    def target(self, x0: Tensor, upsampled: Tensor) -> Tensor:
        """What the network learns: (x - up_s(y)) / residual_scale, or x itself."""
        return (x0 - upsampled) / self.residual_scale if self.residual else x0

    def image(self, out: Tensor, upsampled: Tensor) -> Tensor:
        """The inverse of `target`, clamped to [-1, 1]."""
        x = upsampled + self.residual_scale * out if self.residual else out
        return x.clamp(-1.0, 1.0)

    def tiled(self, network: Callable[..., Tensor]) -> TiledNetwork:
        return TiledNetwork(network, self.tile, self.tile_overlap, self.batch_tiles,
                            align=self.degradation.scale)

    def finish(self, out: Tensor, batch: dict, low_res: Tensor, upsampled: Tensor,
               back_projection: int | None = None) -> SRSamples:
        x = self.image(out, upsampled)
        n = self.back_projection if back_projection is None else back_projection
        if n:
            x = back_project(x, low_res, self.degradation, n).clamp(-1.0, 1.0)
        return SRSamples(x, upsampled.clamp(-1.0, 1.0), low_res, batch.get("x0"))


@dataclass(frozen=True, eq=False)
class ResidualDiffusion(_SRBase):
    """SR3 residual diffusion around a `GaussianDiffusion` (see the module docstring)."""

    diffusion: GaussianDiffusion | None = None  # required; no default built at import time,
    # which would look up schedules and so load the plugins while this module is half imported

    def __post_init__(self) -> None:
        if not isinstance(self.diffusion, GaussianDiffusion):
            raise TypeError("ResidualDiffusion needs diffusion=GaussianDiffusion(...)")

    @property
    def sampler(self) -> str:
        """The default sampler's name (the toolkit reads it for run folders)."""
        return self.diffusion.sampler

    def training_loss(self, network: Callable[..., Tensor], batch: dict,
                      generator: torch.Generator | None = None) -> Tensor:
        """[B] denoising loss of the network on the (scaled residual) target."""
        _, upsampled = self.conditioning(batch)
        inner = {"x0": self.target(batch["x0"], upsampled), "cond": {"upsampled": upsampled}}
        return self.diffusion.training_loss(network, inner, generator=generator)

    def generate(self, network: Callable[..., Tensor], batch: dict, *, sampler: str | None = None,
                 steps: int | None = None, grid: str | None = None,
                 generator: torch.Generator | None = None,
                 callback: Callable[[dict], None] | None = None,
                 back_projection: int | None = None, **sampler_options: Any) -> SRSamples:
        """Super-resolve batch["cond"]["low_res"] with any engine sampler, tile by tile."""
        low_res, upsampled = self.conditioning(batch)
        inner = {"x0": upsampled, "cond": {"upsampled": upsampled}}
        out = self.diffusion.generate(self.tiled(network), inner, sampler=sampler, steps=steps,
                                      grid=grid, generator=generator, callback=callback,
                                      **sampler_options)
        return self.finish(out, batch, low_res, upsampled, back_projection)


@dataclass(frozen=True, eq=False)
class Regression(_SRBase):
    """The one-step regression baseline with the same network (see the module docstring)."""

    sampler: str | None = None

    def predict(self, network: Callable[..., Tensor], upsampled: Tensor) -> Tensor:
        """net(0, 0, up_s(y)): [B, 3, H, W]."""
        zeros_t = torch.zeros(upsampled.shape[0], device=upsampled.device, dtype=upsampled.dtype)
        return network(torch.zeros_like(upsampled), zeros_t, upsampled=upsampled)

    def training_loss(self, network: Callable[..., Tensor], batch: dict,
                      generator: torch.Generator | None = None) -> Tensor:
        """[B] mean squared error of the prediction against the target."""
        _, upsampled = self.conditioning(batch)
        error = F.mse_loss(self.predict(network, upsampled), self.target(batch["x0"], upsampled),
                           reduction="none")
        return error.flatten(1).mean(dim=1)

    def generate(self, network: Callable[..., Tensor], batch: dict, *,
                 callback: Callable[[dict], None] | None = None,
                 back_projection: int | None = None, **ignored: Any) -> SRSamples:
        """One (tiled) network call; sampler, steps and generator are ignored."""
        low_res, upsampled = self.conditioning(batch)
        out = self.predict(self.tiled(network), upsampled)
        if callback is not None:
            callback({"i": 0})
        return self.finish(out, batch, low_res, upsampled, back_projection)


# process.kind -> the class built by `ImageDomain.process`
PROCESSES: Registry[type] = Registry("image process")
PROCESSES.register("diffusion", ResidualDiffusion)
PROCESSES.register("regression", Regression)
