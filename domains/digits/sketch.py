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

Metrics of samples against the hints they were drawn for:

    edge_f1(samples, hint_edges, tolerance=1)   how well the samples' edges follow the hint's
    thumbnail_error(samples, hint_thumbnails)   how far the samples' 7 x 7 thumbnails are from
                                                the hint's (mean absolute error)

Samples come in the model's range [-1, 1] (as `toolkit sample` and `Domain.evaluate` get them),
hints as hint files give them, in [0, 1].
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


# --------------------------------------------------------------------------------- metrics
def _hint_for(samples: Tensor, hint: Tensor, what: str) -> Tensor:
    """`hint` [B or 1, 1, h, w] (or one [1, h, w]) as [B, 1, h, w] beside samples [B, ...]."""
    hint = hint[None] if isinstance(hint, Tensor) and hint.dim() == 3 else hint
    _check_images(hint, what)
    if hint.shape[0] not in (1, samples.shape[0]):
        raise DataError(f"{what}: {hint.shape[0]} hints for {samples.shape[0]} samples; give "
                        "one hint or one per sample")
    return hint.float().to(samples.device).expand(samples.shape[0], -1, -1, -1)


def edge_map_f1(edges: Tensor, reference: Tensor, tolerance: int = 1) -> Tensor:
    """F1 of binary edge maps [B, 1, H, W] against reference maps of the same shape -> [B].

    An edge pixel matches when a pixel of the other map lies within `tolerance` pixels of it in
    chessboard distance (max(|dy|, |dx|) <= tolerance: the other map dilated by a
    (2 tolerance + 1)^2 max pool):

        precision P = #{edge pixels within tolerance of a reference pixel} / #{edge pixels}
        recall    R = #{reference pixels within tolerance of an edge pixel} / #{reference pixels}
        F1          = 2 P R / (P + R)      (0 when P + R = 0)

    Two empty maps agree (F1 = 1); one empty map against a non-empty one scores 0."""
    if edges.shape != reference.shape or edges.dim() != 4:
        raise DataError(f"edge maps of shapes {list(edges.shape)} and {list(reference.shape)} "
                        "cannot be compared; give two [B, 1, H, W] maps of the same size")
    if int(tolerance) < 0:
        raise DataError(f"the edge tolerance must be a whole number of pixels >= 0, got "
                        f"{tolerance}")
    t = int(tolerance)
    a, b = (edges > 0.5).float(), (reference > 0.5).float()

    def near(m: Tensor) -> Tensor:  # 1 where a pixel of m lies within t (chessboard)
        return F.max_pool2d(m, 2 * t + 1, stride=1, padding=t) if t else m

    n_a, n_b = a.sum((1, 2, 3)), b.sum((1, 2, 3))
    precision = (a * near(b)).sum((1, 2, 3)) / n_a.clamp(min=1)
    recall = (b * near(a)).sum((1, 2, 3)) / n_b.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    return torch.where((n_a == 0) & (n_b == 0), torch.ones_like(f1), f1)


def edge_f1(samples: Tensor, hint_edges: Tensor, tolerance: int = 1,
            sigma: float = EDGE_SIGMA) -> float:
    """Mean F1 (`edge_map_f1`) of the samples' Canny edges against their hints' edge maps.

    samples [B, 1, H, W] in [-1, 1]; hint_edges [B or 1, 1, H, W] (or [1, H, W]) in [0, 1], an
    edge where > 0.5 (the hint the samples were drawn for: `edge_hint` or a hint file)."""
    _check_images(samples, "edge F1 takes samples that")
    hint = _hint_for(samples, hint_edges, "edge F1's hint edges")
    return float(edge_map_f1(digit_edges(to_unit(samples), sigma), hint, tolerance).mean())


def thumbnail_error(samples: Tensor, hint_thumbnails: Tensor) -> float:
    """Mean absolute error between the samples' 7 x 7 thumbnails and the hints':

        error = mean over samples, cells of | thumbnail(to_unit(sample)) - thumbnail(hint) |

    in [0, 1] intensity units. samples [B, 1, H, W] in [-1, 1]; hint_thumbnails
    [B or 1, 1, 7, 7] in [0, 1] (or full-size images in [0, 1]: they are pooled to 7 x 7 too)."""
    _check_images(samples, "thumbnail error takes samples that")
    hint = thumbnail(_hint_for(samples, hint_thumbnails, "thumbnail error's hints"))
    return float((thumbnail(to_unit(samples)) - hint).abs().mean())
