"""Ancestral and implicit samplers: DDPM (Ho et al. 2020) and DDIM (Song et al. 2021).

Both step from t to s < t with the x0 estimate D = D(x_t, t) in place of x0 in a Gaussian
q(x_s | x_t, x0). In the notation of `grid_coefficients` (h = lambda_s - lambda_t, lambda =
log(alpha / sigma)) the recurring factor is

    alpha_t sigma_s / (alpha_s sigma_t) = exp(-h),

which is finite for every step, including the last one (s = 0: sigma_s = 0, h = +inf) and a
zero-SNR start (alpha_t = 0, h = +inf). Both samplers are one loop (`run_first_order`) with
per-step coefficients x_s = c_x x_t + c_d D + c_z z computed before it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from diffusekit.core.samplers.grid_coefficients import (
    Callback,
    Grid,
    finite_or_zero,
    run_first_order,
)
from diffusekit.core.schedules import Schedule
from diffusekit.core.spaces import Euclidean


def posterior_coefficients(grid: Grid) -> tuple[Tensor, Tensor, Tensor]:
    """[n] coefficients (c_x, c_d, c_z) of the DDPM posterior q(x_s | x_t, x0) on each step t -> s.

    Ho et al. 2020, eq. 6/7 generalised to any pair of times (Kingma et al. 2021, VDM, eq. 22):
    with alpha_{t|s} = alpha_t / alpha_s and sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2,

        mean = alpha_{t|s} sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_{t|s}^2 / sigma_t^2 x0,
        var  = sigma_{t|s}^2 sigma_s^2 / sigma_t^2,

    and sigma_{t|s}^2 / sigma_t^2 = 1 - exp(-2h), alpha_{t|s} sigma_s^2 / sigma_t^2 =
    (sigma_s / sigma_t) exp(-h): the stable forms used here.
    """
    h = grid.h
    one_minus = -torch.expm1(-2.0 * h)  # 1 - exp(-2h) = sigma_{t|s}^2 / sigma_t^2
    c_x = grid.sigma_ratio * torch.exp(-h)  # alpha_{t|s} sigma_s^2 / sigma_t^2
    c_d = grid.alpha[1:] * one_minus  # alpha_s sigma_{t|s}^2 / sigma_t^2
    c_z = grid.sigma[1:] * one_minus.sqrt()  # sqrt(var) = sigma_s sigma_{t|s} / sigma_t
    return finite_or_zero(c_x), finite_or_zero(c_d), finite_or_zero(c_z)


def ddim_coefficients(grid: Grid, eta: float) -> tuple[Tensor, Tensor, Tensor]:
    """[n] coefficients (c_x, c_d, c_z) of DDIM (Song et al. 2021, eq. 12) with parameter eta:

        x_s = alpha_s D + sqrt(sigma_s^2 - c^2) eps_hat + c z,   eps_hat = (x_t - alpha_t D) / sigma_t,
        c = eta * sigma_s sqrt(1 - exp(-2h))   (eq. 16: eta = 1 is the DDPM posterior std),

    so c_x = sqrt(sigma_s^2 - c^2) / sigma_t and c_d = alpha_s - alpha_t c_x.
    """
    h = grid.h
    c_z = eta * grid.sigma[1:] * (-torch.expm1(-2.0 * h)).sqrt()  # Song et al. 2021, eq. 16
    keep = (grid.sigma[1:] ** 2 - c_z**2).clamp(min=0.0).sqrt()  # sqrt(sigma_s^2 - c^2)
    c_x = keep / grid.sigma[:-1]
    c_d = grid.alpha[1:] - grid.alpha[:-1] * c_x
    return finite_or_zero(c_x), finite_or_zero(c_d), finite_or_zero(c_z)


def sample_ddpm(
    denoiser: Callable[..., Tensor],
    noise: Tensor,
    ts: Tensor,
    schedule: Schedule,
    *,
    space: Any = Euclidean(),
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    cond: Mapping[str, Any] | None = None,
) -> Tensor:
    """Ancestral sampling (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Alg. 2):
    each step draws x_s ~ q(x_s | x_t, x0 = D(x_t, t)), the forward posterior of eq. 6/7
    generalised to any pair of grid times, with the posterior variance (beta-tilde).

    noise: [B, ...] unit Gaussian; ts: [n + 1] descending, ts[-1] = 0. Returns x0: [B, ...].
    One denoiser evaluation per step; the last step (to t = 0) is noise free and returns D.
    """
    grid = Grid.build(schedule, ts)
    c_x, c_d, c_z = posterior_coefficients(grid)
    x = grid.start_state(noise, space)
    # x_s = c_x x_t + c_d D + c_z z   (Ho et al. 2020, eq. 7: mean mu~_t, std sqrt(beta~_t))
    return run_first_order(denoiser, x, grid, c_x, c_d, c_z, space=space, generator=generator,
                           callback=callback, cond=cond)


def sample_ddim(
    denoiser: Callable[..., Tensor],
    noise: Tensor,
    ts: Tensor,
    schedule: Schedule,
    *,
    space: Any = Euclidean(),
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    cond: Mapping[str, Any] | None = None,
    eta: float = 0.0,
) -> Tensor:
    """DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12).

    eta = 0 (default) is the deterministic implicit sampler, i.e. the first-order solver of the
    probability-flow ODE in data prediction (= Euler in VE coordinates, = DPM-Solver++ order 1);
    eta = 1 draws the DDPM posterior (the same law as `ddpm`); 0 <= eta <= 1 interpolates.

    noise: [B, ...] unit Gaussian; ts: [n + 1] descending, ts[-1] = 0. Returns x0: [B, ...].
    One denoiser evaluation per step.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"ddim needs 0 <= eta <= 1, got eta={eta}")
    grid = Grid.build(schedule, ts)
    c_x, c_d, c_z = ddim_coefficients(grid, eta)
    x = grid.start_state(noise, space)
    # x_s = alpha_s D + sqrt(sigma_s^2 - c^2) (x_t - alpha_t D) / sigma_t + c z   (eq. 12)
    return run_first_order(denoiser, x, grid, c_x, c_d, c_z, space=space, generator=generator,
                           callback=callback, cond=cond)


__all__ = ["sample_ddpm", "sample_ddim", "posterior_coefficients", "ddim_coefficients"]
