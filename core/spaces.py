"""Noise spaces: where the Gaussian noise of a process lives.

A space draws unit noise (`randn_like`) and projects a state back onto itself (`project`).
Samplers call both; losses draw their noise from it. Three spaces:

* `Euclidean`: all of R^shape (images, spectrograms).
* `Masked(mask)`: padded sets or sequences; padding entries are held at zero.
* `ZeroCoM(mask, n_dims=3)`: molecules (Hoogeboom et al. 2022, "Equivariant Diffusion for
  Molecule Generation", Sec. 3.2): the first `n_dims` channels are positions, kept in the linear
  subspace sum_i x_i = 0 (zero centre of mass over each molecule's real atoms), which makes the
  Gaussian translation invariant; the other channels are free features. Padding is zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def _randn(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


@dataclass(frozen=True)
class Euclidean:
    """Unconstrained R^n: plain unit Gaussian noise; `project` is the identity."""

    def randn_like(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Unit Gaussian noise with x's shape, dtype and device."""
        return _randn(x, generator)

    def project(self, x: Tensor) -> Tensor:
        """The identity."""
        return x

    def n_dof(self, x: Tensor) -> Tensor:
        """[B] degrees of freedom per example (the number of free entries)."""
        return torch.full((x.shape[0],), x[0].numel(), device=x.device, dtype=x.dtype)


def _expand_mask(mask: Tensor, x: Tensor) -> Tensor:
    """[B, N] mask -> broadcastable to x [B, N, ...]."""
    if mask.shape != x.shape[: mask.dim()]:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not lead x of shape {tuple(x.shape)}")
    return mask.to(x.dtype).reshape(*mask.shape, *([1] * (x.dim() - mask.dim())))


@dataclass(frozen=True, eq=False)
class Masked:
    """Entries where `mask` is 0 (padding) are always zero. mask: [B, N, ...] leading x's shape."""

    mask: Tensor

    def randn_like(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return _randn(x, generator) * _expand_mask(self.mask, x)

    def project(self, x: Tensor) -> Tensor:
        return x * _expand_mask(self.mask, x)

    def n_dof(self, x: Tensor) -> Tensor:
        per_entry = x[0].numel() // self.mask[0].numel()
        return self.mask.flatten(1).to(x.dtype).sum(1) * per_entry


@dataclass(frozen=True, eq=False)
class ZeroCoM:
    """Molecule states x: [B, N, n_dims + F] with node_mask `mask`: [B, N] (1 = real atom).

    Positions x[..., :n_dims] are centred per molecule over real atoms; features are free;
    padding atoms are zero everywhere. The noise is a unit Gaussian in that subspace (EDM,
    Sec. 3.2: sample in R^{N x 3}, then subtract the mean over the molecule's atoms).
    """

    mask: Tensor
    n_dims: int = 3

    def _centre(self, x: Tensor) -> Tensor:
        m = _expand_mask(self.mask, x)  # [B, N, 1]
        x = x * m
        pos = x[..., : self.n_dims]
        n_atoms = m.sum(dim=1, keepdim=True).clamp(min=1.0)  # [B, 1, 1]
        mean = pos.sum(dim=1, keepdim=True) / n_atoms  # [B, 1, n_dims]
        pos = (pos - mean) * m
        return torch.cat([pos, x[..., self.n_dims :]], dim=-1)

    def randn_like(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self._centre(_randn(x, generator))

    def project(self, x: Tensor) -> Tensor:
        return self._centre(x)

    def n_dof(self, x: Tensor) -> Tensor:
        """(N_atoms - 1) * n_dims position dimensions plus N_atoms * F feature dimensions."""
        n = self.mask.to(x.dtype).sum(1)
        return (n - 1) * self.n_dims + n * (x.shape[-1] - self.n_dims)

    def centre_of_mass(self, x: Tensor) -> Tensor:
        """[B, n_dims]: the mean position over each molecule's real atoms (0 in this space)."""
        m = _expand_mask(self.mask, x)
        return (x[..., : self.n_dims] * m).sum(1) / m.sum(1).clamp(min=1.0)
