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
`register_samplers` hook, and it uses only the public names of `diffusekit.core.samplers`:
`Grid` holds the grid's schedule quantities, `step_scalars` turns the per-step coefficients
into 0-dim tensors before the loop, and `prepare_denoiser` hands D every time it will see, so
the loop never synchronises with the host.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from diffusekit.core.samplers import Callback, Grid, prepare_denoiser, step_scalars
from diffusekit.core.schedules import Schedule
from diffusekit.core.spaces import Euclidean


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
    h = grid.h  # [n] float64 step lengths in lambda, +inf where there is no midpoint
    has_mid = torch.isfinite(h)
    lam_mid = torch.where(has_mid, grid.lam[:-1] + 0.5 * h, 0.0)  # lambda_m = lambda_t + h / 2
    t_mid = torch.where(has_mid, schedule.t_of_log_snr(2.0 * lam_mid).double(), 0.0)  # log_snr = 2 lambda
    alpha_mid, sigma_mid = (v.double() for v in schedule.alpha_sigma(t_mid))
    m_x = torch.where(has_mid, sigma_mid / grid.sigma[:-1], 0.0)  # half step: sigma_m / sigma_t
    m_d = torch.where(has_mid, alpha_mid * -torch.expm1(-0.5 * h), 0.0)  # ... alpha_m (1 - e^{-h/2})
    c_x = grid.sigma_ratio  # full step: sigma_s / sigma_t
    c_d = grid.alpha[1:] * -torch.expm1(-h)  # ... alpha_s (1 - e^{-h})
    x = grid.start_state(noise, space)
    times, steps = grid.times(x), step_scalars(x, t_mid, c_x, c_d, m_x, m_d)
    denoiser = prepare_denoiser(denoiser, [step[0] for step in steps] + times)  # every time D will see
    has_mid = has_mid.tolist()  # Python bools: the loop reads no tensor
    for i, (t_m, c_x, c_d, m_x, m_d) in enumerate(steps):
        denoised = denoiser(x, times[i], **cond)
        if has_mid[i]:
            u = space.project(m_x * x + m_d * denoised)  # half step to lambda_t + h / 2
            denoised = denoiser(u, t_m, **cond)  # D at the midpoint
        x = space.project(c_x * x + c_d * denoised)  # x_s = (sigma_s / sigma_t) x_t + alpha_s (1 - e^-h) D
        if callback is not None:
            callback({"i": i, "t": times[i], "t_next": times[i + 1], "x": x, "denoised": denoised})
    return x
