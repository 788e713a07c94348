"""The example domain's shapes: 2-D toy distributions, one class label per shape.

Every shape is a small generator `shape(n, generator) -> [n, 2]` of exact samples (before the
jitter), spanning roughly [-2, 2]^2. They are registered by name in `SHAPES`, so a config picks
them by name and a typo gets a "did you mean" answer. `ShapeLayout` scales the shapes down and
gives each its own cell of the plane; the data set is synthetic and deterministic: a split is
`layout.sample(n_per_shape, seed)`. This module needs torch only (evaluation redraws from it
too); the data module is in `data.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diffusekit.core.registry import Registry

ShapeFn = Callable[[int, torch.Generator], Tensor]
SHAPES: Registry[ShapeFn] = Registry("shape")


@SHAPES.register("moons")
def moons(n: int, generator: torch.Generator) -> Tensor:
    """Two interleaving half circles (the scikit-learn "two moons"), centred and scaled by 1.6."""
    angle = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, angle.cos(), 1.0 - angle.cos())
    y = torch.where(upper, angle.sin(), 0.5 - angle.sin())
    return 1.6 * (torch.stack([x, y], dim=1) - torch.tensor([0.5, 0.25], dtype=torch.float64))


@SHAPES.register("spiral")
def spiral(n: int, generator: torch.Generator) -> Tensor:
    """One arm of an Archimedean spiral, r = 2 theta / (3 pi), theta = 3 pi sqrt(u), u ~ U(0, 1):
    the density in theta grows like theta, as the arc length does, so points are near uniform
    along the curve."""
    theta = 3.0 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64).sqrt()
    radius = 2.0 * theta / (3.0 * math.pi)
    return torch.stack([radius * theta.cos(), radius * theta.sin()], dim=1)


@SHAPES.register("rings")
def rings(n: int, generator: torch.Generator) -> Tensor:
    """Two concentric circles of radius 2 and 1, points uniform in arc length (2 : 1)."""
    outer = torch.rand(n, generator=generator) < 2.0 / 3.0
    radius = torch.where(outer, 2.0, 1.0).to(torch.float64)
    angle = 2.0 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    return torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)


@SHAPES.register("gaussians")
def gaussians(n: int, generator: torch.Generator) -> Tensor:
    """Eight small Gaussian blobs (std 0.1) evenly spaced on a circle of radius 1.8."""
    k = torch.randint(0, 8, (n,), generator=generator).to(torch.float64)
    angle = k * (2.0 * math.pi / 8.0)
    centres = 1.8 * torch.stack([angle.cos(), angle.sin()], dim=1)
    return centres + 0.1 * torch.randn(n, 2, generator=generator, dtype=torch.float64)


@SHAPES.register("checkerboard")
def checkerboard(n: int, generator: torch.Generator) -> Tensor:
    """Uniform on the 8 dark squares of a 4 x 4 checkerboard over [-2, 2]^2."""
    x = 4.0 * torch.rand(n, generator=generator, dtype=torch.float64) - 2.0
    row = 2.0 * torch.randint(0, 2, (n,), generator=generator).to(torch.float64)  # 0 or 2
    y = torch.rand(n, generator=generator, dtype=torch.float64) - row + torch.floor(x).remainder(2.0)
    return torch.stack([x, y], dim=1)


@dataclass(frozen=True)
class ShapeLayout:
    """Where the shapes sit: shape i, scaled by `scale`, is centred on cell i of a square grid
    with `spacing` between cell centres (row by row, top left first), so every shape has its
    own region of the plane; a point's region tells its shape, and one scatter plot shows all.

    shapes:  names in `SHAPES`; label i is shapes[i].
    noise:   std of the Gaussian jitter added to every point (in data units).
    scale:   factor applied to the shapes (which span about [-2, 2]^2 at scale 1).
    spacing: distance between the centres of neighbouring cells.
    """

    shapes: tuple[str, ...]
    noise: float = 0.04
    scale: float = 0.5
    spacing: float = 2.8

    def __post_init__(self) -> None:
        for name in self.shapes:
            SHAPES.get(name)  # fail now, naming the known shapes, not in the middle of a run
        if not self.shapes:
            raise ValueError("the example domain needs at least one shape")

    @classmethod
    def from_config(cls, data: Any) -> "ShapeLayout":
        """From the `data` section of the domain config."""
        return cls(tuple(data.shapes), float(data.noise), float(data.scale), float(data.spacing))

    @property
    def centres(self) -> Tensor:
        """[S, 2] float64 centre of each shape's cell; the grid is centred on the origin."""
        cols = math.ceil(math.sqrt(len(self.shapes)))
        rows = math.ceil(len(self.shapes) / cols)
        index = torch.arange(len(self.shapes))
        col, row = (index % cols).double(), (index // cols).double()
        return self.spacing * torch.stack([col - (cols - 1) / 2, (rows - 1) / 2 - row], dim=1)

    @property
    def extent(self) -> float:
        """Half-width of a square around the origin that holds every shape, with a margin."""
        return float(self.centres.abs().max()) + 2.3 * self.scale + 3 * self.noise

    def nearest_label(self, points: Tensor) -> Tensor:
        """[N] the label of the cell centre nearest to each point [N, 2]."""
        return torch.cdist(points.double(), self.centres).argmin(dim=1)

    def sample(self, n_per_shape: int, seed: int, labels: Tensor | None = None,
               ) -> tuple[Tensor, Tensor]:
        """Points with jitter: (x0 [N, 2] float32, label [N] int64).

        By default every shape gets `n_per_shape` points (N = S * n_per_shape), in shuffled
        order so that any slice of a split (a batch) mixes the shapes; with `labels` ([N]
        int64), one point per entry of `labels`, in that order (a fresh draw "of the same
        classes"). The same seed gives the same points.
        """
        generator = torch.Generator().manual_seed(int(seed))
        if labels is None:
            labels = torch.arange(len(self.shapes)).repeat_interleave(n_per_shape)
            labels = labels[torch.randperm(labels.shape[0], generator=generator)]
        x0 = torch.empty(labels.shape[0], 2, dtype=torch.float64)
        for i, name in enumerate(self.shapes):
            where = labels == i
            count = int(where.sum())
            if count:
                x0[where] = self.centres[i] + self.scale * SHAPES.get(name)(count, generator)
        x0 = x0 + self.noise * torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        return x0.float(), labels.long()
