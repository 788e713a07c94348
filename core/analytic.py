"""An analytic test bed: a Gaussian mixture whose exact denoiser E[x0 | x_t] is known in closed form.

With x0 ~ sum_k w_k N(mu_k, s_k^2 I) in R^D and x_t = alpha x0 + sigma eps, each component stays
Gaussian: x_t | k ~ N(alpha mu_k, v_k I), v_k = alpha^2 s_k^2 + sigma^2, so (Bishop 2006, 2.116)

    E[x0 | x_t] = sum_k r_k(x_t) (mu_k + alpha s_k^2 / v_k (x_t - alpha mu_k)),
    r_k(x_t) = softmax_k( log w_k - D/2 log v_k - |x_t - alpha mu_k|^2 / (2 v_k) ).

A sampler driven by this denoiser has no learning error, so its distance to true samples
measures the sampler's own discretisation error. `sliced_wasserstein` is that distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from diffusekit.core.parameterization import DenoiserFn, expand_time
from diffusekit.core.schedules import Schedule


@dataclass(frozen=True, eq=False)
class GaussianMixture:
    """Isotropic Gaussian mixture. means: [K, D], stds: [K], weights: [K] (sum to 1)."""

    means: Tensor
    stds: Tensor
    weights: Tensor

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @classmethod
    def ring_2d(cls, n_modes: int = 8, radius: float = 2.0, std: float = 0.15) -> "GaussianMixture":
        """K equal modes on a circle: the classic 2-D multi-modal test."""
        angle = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
        means = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
        return cls(means, torch.full((n_modes,), std, dtype=torch.float64),
                   torch.full((n_modes,), 1.0 / n_modes, dtype=torch.float64))

    @classmethod
    def random(cls, dim: int = 16, n_modes: int = 6, seed: int = 0) -> "GaussianMixture":
        """A fixed random mixture in R^dim: unequal weights and widths, separated means."""
        g = torch.Generator().manual_seed(seed)
        means = 1.5 * torch.randn(n_modes, dim, generator=g, dtype=torch.float64)
        stds = 0.2 + 0.4 * torch.rand(n_modes, generator=g, dtype=torch.float64)
        weights = torch.rand(n_modes, generator=g, dtype=torch.float64) + 0.5
        return cls(means, stds, weights / weights.sum())

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """[n, D] float64 exact samples."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k, None] * eps

    def conditional(self, known: Tensor, mask: Tensor) -> "GaussianMixture":
        """The exact law of the unknown coordinates given the known ones: known, mask: [D]
        (mask True = known). Each isotropic component factorises over coordinates, so
        (Bayes' rule on the components, Bishop 2006, Sec. 2.3.9)

            p(x_u | x_k) = sum_k w_k' N(mu_k,u, s_k^2 I),   w_k' ∝ w_k N(x_k; mu_k,k, s_k^2 I),

        a mixture on the D_u = D - D_k unknown coordinates (in their order) with the same widths."""
        mask = torch.as_tensor(mask, dtype=torch.bool)
        if mask.shape != (self.dim,) or known.shape != (self.dim,):
            raise ValueError(f"conditional needs known and mask of shape ({self.dim},)")
        if bool(mask.all()):
            raise ValueError("conditional needs at least one unknown coordinate")
        x_k, mu_k, s2 = known.double()[mask], self.means[:, mask], self.stds**2
        log_w = (self.weights.log() - 0.5 * ((x_k - mu_k) ** 2).sum(1) / s2
                 - 0.5 * x_k.shape[0] * torch.log(2 * math.pi * s2))  # log w_k N(x_k; mu_k,k, s_k^2 I)
        return GaussianMixture(self.means[:, ~mask], self.stds, torch.softmax(log_w, dim=0))

    def posterior_mean(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """E[x0 | x_t = x]. x: [B, D]; alpha, sigma: [B]. Computed in float64."""
        dtype = x.dtype
        x, alpha, sigma = x.double(), alpha.double()[:, None, None], sigma.double()[:, None, None]
        mu, s2 = self.means[None].to(x.device), (self.stds**2)[None, :, None].to(x.device)
        var = alpha**2 * s2 + sigma**2  # [B, K, 1]
        diff = x[:, None, :] - alpha * mu  # [B, K, D]
        logits = (self.weights.log().to(x.device)[None] - 0.5 * self.dim * var[..., 0].log()
                  - 0.5 * (diff**2).sum(-1) / var[..., 0])
        r = torch.softmax(logits, dim=1)[..., None]  # [B, K, 1]
        return ((mu + alpha * s2 / var * diff) * r).sum(1).to(dtype)

    def denoiser(self, schedule: Schedule) -> DenoiserFn:
        """The exact D(x, t) -> E[x0 | x_t] under `schedule`; x: [B, D] or [B, ..., D-flattened]."""

        def exact_denoiser(x: Tensor, t: Tensor, **cond) -> Tensor:
            t = expand_time(t, x)
            alpha, sigma = schedule.alpha_sigma(t)
            flat = x.reshape(x.shape[0], -1)
            return self.posterior_mean(flat, alpha, sigma).reshape(x.shape)

        return exact_denoiser

    def log_prob(self, x: Tensor) -> Tensor:
        """[B] log density of x: [B, D] under the mixture."""
        x = x.double()
        var = (self.stds**2)[None]  # [1, K]
        d2 = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)
        comp = -0.5 * d2 / var - 0.5 * self.dim * torch.log(2 * math.pi * var)
        return torch.logsumexp(comp + self.weights.log()[None], dim=1)


def sliced_wasserstein(
    a: Tensor, b: Tensor, n_projections: int = 256, generator: torch.Generator | None = None
) -> Tensor:
    """Sliced 2-Wasserstein distance between point clouds a, b: [n, D] (equal n).

    SW_2(a, b)^2 = E_theta W_2^2(theta.a, theta.b) over random unit directions theta (Rabin et
    al. 2011); each 1-D W_2 is exact by sorting. Returns the square root of the average.
    """
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs equal shapes, got {tuple(a.shape)}, {tuple(b.shape)}")
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    theta = torch.randn(a.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    pa, _ = torch.sort(a @ theta, dim=0)
    pb, _ = torch.sort(b @ theta, dim=0)
    return ((pa - pb) ** 2).mean().sqrt()
