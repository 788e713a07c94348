"""Repairing photos with the super-resolution model: `toolkit inpaint --run R photo.png --mask
hole.png` (or `--box X0,Y0,X1,Y1`, pixels).

The model draws a high resolution x given a low resolution y (SR3; process.py), so a repair needs
a y, and y may only come from what is left of the photo: the y of the undamaged photo would show
the hole's content. `read_damaged` therefore

1. fills the hole smoothly from its surroundings by pull-push (`smooth_fill`: normalised
   averages over a pyramid of scales, Gortler et al. 1996, "The Lumigraph", Sec. 3.3), a
   neutral fill that knows nothing but the known pixels;
2. makes y = down_s(filled) with the domain's degradation (noise-free: y is not a measurement);
3. keeps the photo's own pixels outside the hole as the known part (the process turns them into
   the known part of its residual over up_s(y), `ResidualDiffusion.inpaint`).

So the hole's coarse content is the smooth fill, and the diffusion draws the detail at the
model's scale that fits the fill and the known pixels around it (replacement or RePaint). The
known pixels are written exactly as read (they also come out of the sampler unchanged up to
float rounding). Inputs whose sides are not multiples of the scale are padded by replication
for the model and cropped back. `docs/repair.md` and the digits domain's repair benchmark say
why the repair benchmark of photos is run on digits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from diffusekit.core.app.repair import output_name, pixel_mask
from diffusekit.core.errors import DataError
from diffusekit.domains.image.degradation import degradation_of
from diffusekit.domains.image.figures import to_uint8
from diffusekit.plugins.domain import Damaged, Region


def smooth_fill(x: Tensor, known: Tensor) -> Tensor:
    """x [B, C, H, W] with its unknown pixels (known [B, 1, H, W] bool False) replaced by a
    smooth interpolation of the known ones: pull (known-weighted 2 x 2 averages, level by level,
    until every coarse pixel has a known one under it) and push (bilinear upsampling of the coarse
    level into the unknown pixels)."""
    weight = known.to(x.dtype)
    if bool(weight.all()) or min(x.shape[-2:]) <= 1:
        return x
    if not bool(weight.flatten(1).any(1).all()):
        raise DataError("the region covers the whole input: nothing is left to repair from")
    total = F.avg_pool2d(x * weight, 2, ceil_mode=True)
    count = F.avg_pool2d(weight, 2, ceil_mode=True)
    coarse = smooth_fill(total / count.clamp(min=1e-12), count > 0)
    up = F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return torch.where(known, x, up)


def read_damaged(path: Path, region: Region, cfg: DictConfig) -> Damaged:
    """A user's photo and the pixels to fill (see the module docstring)."""
    from PIL import UnidentifiedImageError

    from diffusekit.domains.image.data import read_image_file, to_float

    try:
        image = read_image_file(Path(path))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"input {str(path)!r} cannot be read as an image: "
                        f"{' '.join(str(exc).split())[:120]}") from None
    height, width = image.shape[-2:]
    fill = pixel_mask(region, height, width)
    degradation = degradation_of(cfg)
    s = degradation.scale
    # the fill first, then the padding (right, bottom: to multiples of the scale) replicates
    # the filled photo, so no padded pixel shows the hole's content
    filled = smooth_fill(to_float(image)[None], ~fill[None, None])
    pad = (0, (-width) % s, 0, (-height) % s)
    filled = F.pad(filled, pad, mode="replicate")
    known = F.pad((~fill)[None, None].float(), pad, value=1.0) > 0
    low_res = degradation.downsample(filled).clamp(-1.0, 1.0)
    batch = {"x0": filled, "cond": {"low_res": low_res}}
    return Damaged(batch, known, source={"image": image, "fill": fill, "filled": filled},
                   name=output_name(Path(path)))


def write_repaired(samples: Any, damaged: Damaged, out_dir: Path, cfg: DictConfig) -> list[Path]:
    """<name>-repaired.png (or -repaired-<k>.png for each of -n repairs) at the input's size, its
    known pixels exactly the input's, and <name>-comparison.png: damaged (the hole black) | the
    smooth fill the low resolution was made from | each repair."""
    from PIL import Image

    image, fill = damaged.source["image"], damaged.source["fill"]
    height, width = image.shape[-2:]
    repaired = [torch.from_numpy(to_uint8(x[:, :height, :width])).permute(2, 0, 1)
                for x in samples.image]
    repaired = [torch.where(fill[None], x, image) for x in repaired]  # known pixels as read
    paths = []
    for k, x in enumerate(repaired):
        suffix = "" if len(repaired) == 1 else f"-{k}"
        path = Path(out_dir) / f"{damaged.name}-repaired{suffix}.png"
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(path)
        paths.append(path)
    damaged_view = torch.where(fill[None], torch.zeros_like(image), image)
    fill_view = torch.from_numpy(to_uint8(damaged.source["filled"][0, :, :height, :width])
                                 ).permute(2, 0, 1)
    row = torch.cat([damaged_view, fill_view, *repaired], dim=-1)
    comparison = Path(out_dir) / f"{damaged.name}-comparison.png"
    Image.fromarray(row.permute(1, 2, 0).numpy()).save(comparison)
    return [*paths, comparison]
