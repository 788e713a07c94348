"""A sampler contributed by a plugin: the exponential midpoint rule (DPM-Solver++(2S), r = 1/2).

It solves the probability-flow ODE of x_t = alpha_t x0 + sigma_t eps in data prediction with the
half-log-SNR lambda = log(alpha / sigma) as time (Lu et al. 2022b, "DPM-Solver++: Fast Solver for
Guided Sampling of Diffusion Probabilistic Models", Alg. 1 with r = 1/2). The exact solution from
t to s, with h = lambda_s - lambda_t, is

    x_s = (sigma_s / sigma_t) x_t + sigma_s int_{lambda_t}^{lambda_s} e^{lambda} D(x_lambda) d lambda,

and one step approximates D by its value at the midpoint lambda_m = lambda_t + h / 2, reached
with a first-order (DDIM) half step:

    u   = (sigma_m / sigma_t) x_t + alpha_m (1 - e^{-h/2}) D(x_t, t)          (half step)
    x_s = (sigma_s / sigma_t) x_t + alpha_s (1 - e^{-h})   D(u, t_m)           (midpoint rule)

Second order, two denoiser calls per step. Steps with h = +inf (the last one, to t = 0, and the
first one of a zero-SNR schedule such as `flow`) have no midpoint and take the first-order step
x_s = (sigma_s / sigma_t) x_t + alpha_s (1 - e^{-h}) D(x_t, t), one call.

It is an ordinary function with the engine's one sampler signature, registered by the plugin's
`register_samplers` hook; the engine's `grid_coefficients` helpers precompute everything before
the loop, so the loop never synchronises with the host.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from diffusekit.core.samplers.grid_coefficients import (
    Callback,
    Grid,
    compute_dtype,
    finite_or_zero,
    host_flags,
    prepare_denoiser,
    start_state,
    step_rows,
)
from diffusekit.core.schedules import Schedule
from diffusekit.core.spaces import Euclidean


def midpoint_coefficients(grid: Grid, schedule: Schedule) -> dict[str, Tensor]:
    """[n] per-step quantities of the midpoint rule (float64; unused entries are 0):

    t_mid:    the midpoint time, lambda(t_mid) = lambda_t + h / 2;
    c_x, c_d: the full step  x_s = c_x x_t + c_d D  (sigma_s / sigma_t, alpha_s (1 - e^{-h}));
    m_x, m_d: the half step  u = m_x x_t + m_d D    (sigma_m / sigma_t, alpha_m (1 - e^{-h/2}));
    has_mid:  whether the step has a midpoint (h finite).
    """
    h = grid.h
    has_mid = torch.isfinite(h)
    lam_mid = torch.where(has_mid, grid.lam[:-1] + 0.5 * h, torch.zeros_like(h))
    t_mid = schedule.t_of_log_snr(2.0 * lam_mid).to(torch.float64)  # log_snr = 2 lambda
    t_mid = torch.where(has_mid, t_mid, torch.zeros_like(t_mid))
    alpha_mid, sigma_mid = (v.to(torch.float64) for v in schedule.alpha_sigma(t_mid))
    return {
        "t_mid": t_mid,
        "c_x": finite_or_zero(grid.sigma_ratio),
        "c_d": finite_or_zero(grid.alpha[1:] * -torch.expm1(-h)),  # alpha_s (1 - e^{-h})
        "m_x": finite_or_zero(torch.where(has_mid, sigma_mid / grid.sigma[:-1], 0.0)),
        "m_d": finite_or_zero(torch.where(has_mid, alpha_mid * -torch.expm1(-0.5 * h), 0.0)),
        "has_mid": has_mid,
    }


def sample_midpoint(
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
    """Exponential midpoint rule: DPM-Solver++(2S) with r = 1/2 (Lu et al. 2022b, Alg. 1).

    Deterministic (the probability-flow ODE); `generator` is accepted for the common signature
    and unused. noise: [B, ...] unit Gaussian; ts: [n + 1] descending, ts[-1] = 0.
    Returns x0: [B, ...]. Two denoiser calls per step, one on steps without a midpoint.
    """
    cond = dict(cond or {})
    grid = Grid.build(schedule, ts)
    coef = midpoint_coefficients(grid, schedule)
    x = start_state(noise, grid, space)
    t_mid = list(coef["t_mid"].to(device=x.device, dtype=compute_dtype(x.dtype)).unbind(0))
    times = grid.times(x)
    # a `Denoiser` evaluates its schedule once for every time this run passes it, and returns
    # the callable to loop with
    denoiser = prepare_denoiser(denoiser, t_mid + times)
    rows = step_rows([coef["c_x"], coef["c_d"], coef["m_x"], coef["m_d"]], x)
    has_mid = host_flags(coef["has_mid"])
    for i, (c_x, c_d, m_x, m_d) in enumerate(rows):
        denoised = denoiser(x, times[i], **cond)
        if has_mid[i]:
            u = space.project(m_x * x + m_d * denoised)  # half step to lambda_t + h / 2
            denoised = denoiser(u, t_mid[i], **cond)  # D at the midpoint
        x = space.project(c_x * x + c_d * denoised)  # x_s = (sigma_s / sigma_t) x_t + alpha_s (1 - e^-h) D
        if callback is not None:
            callback({"i": i, "t": times[i], "t_next": times[i + 1], "x": x, "denoised": denoised})
    return x
