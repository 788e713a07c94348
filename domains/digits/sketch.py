"""Sketch -> digit (issue 17, part 4): the digits domain's ControlNet hints and their metrics.

Two hint makers (`DigitsDomain.control_hints()`, chosen by `control.hint`), each
`maker(batch) -> hint` from a training batch's digits `batch["x0"]` [B, 1, S, S] in [-1, 1]:

    edges       the digit's edge map: scikit-image's Canny (`feature.canny`, sigma EDGE_SIGMA,
                its default thresholds) on the digit in [0, 1]   -> [B, 1, S, S] of 0.0 / 1.0
    thumbnail   a coarse 'style' reference: the digit in [0, 1] mean-pooled to a 7 x 7 grid
                (4 x 4 pixels a cell at S = 28)                 -> [B, 1, 7, 7] in [0, 1]

A hint file (`toolkit sample --hint FILE`) gives the same: a 28 x 28 grey PNG of white edges on
black for `edges`, a 7 x 7 grey PNG for `thumbnail` (the ControlNet's hint encoder pools its
features to the size of the block it joins, so a 7 x 7 map needs no upsampling).

"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from diffusekit.core.errors import DataError

EDGE_SIGMA = 1.0  # Canny's Gaussian smoothing (pixels): 1 keeps a 28 x 28 digit's strokes apart
THUMBNAIL_SIDE = 7  # the thumbnail's grid: 7 x 7 cells


# ------------------------------------------------------------------------------ conversions
def to_unit(images: Tensor) -> Tensor:
    """Digits in the model's range [-1, 1] (ink high) -> [0, 1], clipped: x -> (x + 1) / 2."""
    return ((images.float().clamp(-1.0, 1.0) + 1.0) / 2.0)


def _check_images(images: Tensor, what: str) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 1:
        raise DataError(f"{what} must be grey images [B, 1, H, W], got "
                        f"{list(getattr(images, 'shape', []))}")


def digit_edges(images: Tensor, sigma: float = EDGE_SIGMA) -> Tensor:
    """Canny edge maps of grey images [B, 1, H, W] in [0, 1] -> [B, 1, H, W] float, 1.0 on an
    edge pixel, 0.0 elsewhere (scikit-image's `feature.canny` with `sigma`, its default
    hysteresis thresholds 0.1 / 0.2 of the float range, one image at a time, on the CPU)."""
    from skimage import feature

    _check_images(images, "edge maps take images that")
    array = images.detach().float().cpu().numpy()
    edges = np.stack([feature.canny(image[0], sigma=sigma) for image in array])[:, None]
    return torch.from_numpy(edges.astype(np.float32)).to(images.device)


def thumbnail(images: Tensor, side: int = THUMBNAIL_SIDE) -> Tensor:
    """Grey images [B, 1, H, W] -> [B, 1, side, side], each cell the mean of the pixels it
    covers (adaptive average pooling: 4 x 4 pixels a cell for 28 -> 7; a side x side input
    comes back unchanged)."""
    _check_images(images, "thumbnails take images that")
    return F.adaptive_avg_pool2d(images.float(), (side, side))


# ----------------------------------------------------------------------------- hint makers
def edge_hint(batch: dict) -> Tensor:
    """Hint maker `edges`: batch["x0"] [B, 1, S, S] in [-1, 1] -> its Canny edges [B, 1, S, S]."""
    x0 = batch["x0"]
    return digit_edges(to_unit(x0)).to(x0.dtype)


def thumbnail_hint(batch: dict) -> Tensor:
    """Hint maker `thumbnail`: batch["x0"] [B, 1, S, S] in [-1, 1] -> its 7 x 7 mean
    intensities [B, 1, 7, 7] in [0, 1]."""
    x0 = batch["x0"]
    return thumbnail(to_unit(x0)).to(x0.dtype)


# the digits domain's hint makers, by name (`control.hint`)
HINTS: dict[str, Callable[[dict], Tensor]] = {"edges": edge_hint, "thumbnail": thumbnail_hint}
