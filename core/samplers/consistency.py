"""Multistep consistency sampling (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models").

A consistency function f(x_t, t) maps every point of a probability-flow ODE trajectory to the
trajectory's end, so one evaluation at t_0 is already a sample (Algorithm 1, line 2):

    x0_hat = f(x_{t_0}, t_0),   x_{t_0} = sigma(t_0) z.

Further steps trade NFE for quality (Algorithm 1, lines 3-6): re-noise the estimate to the next
time of a descending grid with fresh noise, and map it back again,

    x_{t_i} = alpha(t_i) x0_hat + sigma(t_i) z_i,   z_i ~ N(0, I) in the noise space,
    x0_hat  = f(x_{t_i}, t_i).

(In VE coordinates x~ = x / alpha, s = sigma / alpha this is the paper's x~ = x0_hat + s z; the
paper adds sqrt(s^2 - s_min^2) z to account for the noise level s_min of f's own output, a
relative change of s_min^2 / s^2 <= 1e-4 for the engine's s_min = 0.002 and s >= 0.2, omitted here.)

Here f is any denoiser: the engine's contract D(x, t, **cond) -> x0_hat is the consistency
function's contract too (`diffusekit.core.distillation.ConsistencyStudent` is one). With an
ordinary denoiser D = E[x0 | x_t] the same loop is a valid, if crude, sampler: each step replaces
the state by its posterior mean re-noised to the next time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from diffusekit.core.samplers.grid_coefficients import Callback, Grid, step_scalars
from diffusekit.core.schedules import Schedule
from diffusekit.core.spaces import Euclidean


def sample_consistency(
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
    """Multistep consistency sampling (Song et al. 2023, "Consistency Models", Algorithm 1).

    Step i maps x_{t_i} to x0_hat = D(x_{t_i}, t_i) and, unless t_{i+1} = 0, re-noises it to
    x_{t_{i+1}} = alpha(t_{i+1}) x0_hat + sigma(t_{i+1}) z with fresh z from `space.randn_like`;
    the last step (to t = 0) returns D itself. One denoiser evaluation per step, so n steps cost
    n NFE (a one-step consistency model: ts = time_grid(schedule, 1)).

    noise: [B, ...] unit Gaussian; ts: [n + 1] descending, ts[-1] = 0. Returns x0: [B, ...].
    """
    cond = dict(cond or {})
    grid = Grid.build(schedule, ts)
    x = grid.start_state(noise, space)
    times, denoiser = grid.times_for(x, denoiser)
    rows = step_scalars(x, grid.alpha[1:], grid.sigma[1:])  # (alpha, sigma) of x_{t_{i+1}}: 0-dim
    renoise = (grid.sigma[1:] > 0).tolist()  # Python bools: every step but the last one
    for i, (alpha_next, sigma_next) in enumerate(rows):
        denoised = denoiser(x, times[i], **cond)  # x0_hat = f(x_{t_i}, t_i)         (Alg. 1, line 2 / 5)
        if renoise[i]:  # x_{t_{i+1}} = alpha x0_hat + sigma z                      (Alg. 1, line 4)
            x = space.project((alpha_next * denoised).addcmul_(sigma_next, space.randn_like(denoised, generator)))
        else:
            x = space.project(denoised)
        if callback is not None:
            callback({"i": i, "t": times[i], "t_next": times[i + 1], "x": x, "denoised": denoised})
    return x


__all__ = ["sample_consistency"]
