"""Repairing photos: `toolkit inpaint --run R photo.png --mask hole.png` (or `--box X0,Y0,X1,Y1`,
pixels), with either kind of image model (degradation.py).

A model of the image domain draws x given a conditioning y made by its degradation, and y may only
come from what is left of the photo. `read_damaged` therefore

1. fills the hole smoothly from its surroundings by pull-push (`degradation.smooth_fill`: a
   neutral fill that knows nothing but the known pixels);
2. makes y from that fill with the model's degradation (`damaged_condition`): a super-resolution
   model gets y = down_s(filled) (noise-free: y is not a measurement), a hole model
   (`degradation.kind: holes`) gets the fill and the known mask, exactly what it was trained on;
3. keeps the photo's own pixels outside the hole as the known part (the process turns them into
   the known part of its residual over up_s(y) or over the fill, `ResidualDiffusion.inpaint`).

With a super-resolution model the hole's coarse content is the smooth fill, and the diffusion
draws the detail at the model's scale that fits the fill and the known pixels around it; a hole
model draws the hole's content itself (`repair_benchmark.py` measures both kinds on held-out
photos). The known pixels are written exactly as read (they also come out of the sampler unchanged
up to float rounding). Inputs whose sides are not multiples of the scale are padded by
replication for the model and cropped back.
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
from diffusekit.domains.image.degradation import degradation_of, smooth_fill
from diffusekit.domains.image.figures import to_uint8
from diffusekit.plugins.domain import Damaged, Region


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
    try:
        filled = smooth_fill(to_float(image)[None], ~fill[None, None])
    except ValueError as exc:
        raise DataError(str(exc)) from None
    pad = (0, (-width) % s, 0, (-height) % s)
    filled = F.pad(filled, pad, mode="replicate")
    known = F.pad((~fill)[None, None].float(), pad, value=1.0) > 0
    low_res = degradation.damaged_condition(filled, known)
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
