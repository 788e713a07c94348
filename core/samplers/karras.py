"""Euler and Heun samplers of Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based
Generative Models", Algorithms 1 and 2), for any schedule, in VE-equivalent coordinates.

The probability-flow ODE of x_t = alpha x0 + sigma eps becomes, with

    x~ = x / alpha,   s = sigma / alpha   (Karras et al. 2022, eq. 4 and Table 1),

the VE ODE  dx~/ds = (x~ - D(x, t)) / s =: d. In state coordinates the slope is
d = (x - alpha D) / sigma (the eps estimate), which stays finite where alpha = 0, and every update
below is written with sigma ratios so that a zero-SNR start (flow: alpha(1) = 0, s = +inf) needs
no special case for Euler; Heun falls back to its Euler step there.

Churn (Alg. 2, lines 4-6): before step i, noise is added to raise s_i to s^_i = (1 + gamma_i) s_i,
gamma_i = min(S_churn / n, sqrt(2) - 1) where S_tmin <= s_i <= S_tmax. The raised level is
mapped back to a time t^_i of the schedule (`t_of_log_snr`), computed once in `churn_grid`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diffusekit.core.samplers.grid_coefficients import (
    Callback,
    Grid,
    finite_or_zero,
    prepare_denoiser,
    run_first_order,
    step_scalars,
)
from diffusekit.core.schedules import Schedule
from diffusekit.core.spaces import Euclidean


@dataclass(frozen=True, eq=False)
class ChurnedGrid:
    """Where each step starts after churn. Tensors are [n] float64.

    t_hat, alpha_hat, sigma_hat: the raised point (the grid point itself where gamma_i = 0).
    c_keep, c_noise: x^_i = c_keep x_i + c_noise z (Alg. 2, line 6 in state coordinates).
    active: Python bools, the steps that add churn noise.
    """

    t_hat: Tensor
    alpha_hat: Tensor
    sigma_hat: Tensor
    c_keep: Tensor
    c_noise: Tensor
    active: list[bool]


def churn_grid(
    grid: Grid,
    schedule: Schedule,
    *,
    S_churn: float = 0.0,
    S_tmin: float = 0.0,
    S_tmax: float = math.inf,
    S_noise: float = 1.0,
) -> ChurnedGrid | None:
    """The stochastic "churn" of Karras et al. 2022, Algorithm 2 (lines 4-6), for every step;
    None where no step churns (S_churn = 0: Algorithm 1, every step starts at its grid point).

    gamma_i = min(S_churn / n, sqrt(2) - 1) if S_tmin <= s_i <= S_tmax else 0   (line 4)
    s^_i = s_i (1 + gamma_i)                                                   (line 5)
    x~^_i = x~_i + sqrt(s^_i^2 - s_i^2) S_noise z                              (line 6)

    s is the VE noise level sigma / alpha; a step at infinite s (zero SNR) never churns. The
    raised time is t^ = t_of_log_snr(-2 log s^), clipped to t <= 1; the noise amount uses the
    s^ of the clipped time, so the state stays consistent with the schedule.
    """
    gamma_max = min(S_churn / grid.n, math.sqrt(2.0) - 1.0)
    if gamma_max <= 0:
        return None
    t, alpha, sigma = grid.t[:-1], grid.alpha[:-1], grid.sigma[:-1]
    s = sigma / alpha  # +inf where alpha = 0
    in_range = torch.isfinite(s) & (s >= S_tmin) & (s <= S_tmax)
    gamma = torch.where(in_range, torch.full_like(s, gamma_max), torch.zeros_like(s))
    active = gamma > 0
    if not bool(active.any()):  # S_tmin / S_tmax exclude every step
        return None
    s_raised = torch.where(active, s * (1.0 + gamma), torch.ones_like(s))  # 1: placeholder
    t_raised = schedule.t_of_log_snr(-2.0 * torch.log(s_raised)).to(torch.float64).clamp(max=1.0)
    t_hat = torch.where(active, t_raised, t)
    a_raised, s_raised_sigma = schedule.alpha_sigma(t_hat)
    alpha_hat = torch.where(active, a_raised.to(torch.float64), alpha)
    sigma_hat = torch.where(active, s_raised_sigma.to(torch.float64), sigma)
    s_hat = torch.where(active, sigma_hat / alpha_hat, s)
    extra = torch.where(active, (s_hat**2 - s**2).clamp(min=0.0).sqrt(), torch.zeros_like(s))
    c_keep = torch.where(active, alpha_hat / alpha, torch.ones_like(s))  # x~ is shared: x^ = a^ x~
    c_noise = alpha_hat * extra * S_noise  # a^ sqrt(s^^2 - s^2) S_noise
    return ChurnedGrid(t_hat, alpha_hat, sigma_hat, finite_or_zero(c_keep), finite_or_zero(c_noise),
                       active.tolist())


def _karras_loop(
    denoiser: Callable[..., Tensor],
    noise: Tensor,
    ts: Tensor,
    schedule: Schedule,
    *,
    second_order: bool,
    space: Any,
    generator: torch.Generator | None,
    callback: Callback | None,
    cond: Mapping[str, Any] | None,
    churn: Mapping[str, float],
) -> Tensor:
    """Algorithm 2 of Karras et al. 2022 (Euler when `second_order` is False). See the samplers."""
    cond = dict(cond or {})
    grid = Grid.build(schedule, ts)
    hat = churn_grid(grid, schedule, **churn)
    if not second_order and hat is None:
        # Euler without churn is the first-order step x' = c_x x + c_d D (= DDIM, eta = 0)
        return run_first_order(denoiser, grid.start_state(noise, space), grid, grid.sigma_ratio,
                               grid.alpha[1:] - grid.alpha[:-1] * grid.sigma_ratio,
                               torch.zeros(grid.n, dtype=torch.float64), space=space,
                               generator=generator, callback=callback, cond=cond)
    # each step starts at (t^_i, a^_i, s^_i): the raised point, or the grid point without churn
    a0, s0 = (grid.alpha[:-1], grid.sigma[:-1]) if hat is None else (hat.alpha_hat, hat.sigma_hat)
    a1, s1 = grid.alpha[1:], grid.sigma[1:]  # ... and ends at t_{i+1}
    # Euler, Alg. 2 line 8 (x~' = x~^ + (s_{i+1} - s^) d), in state coordinates:
    #   x' = (sigma_{i+1} / sigma^) x^ + (alpha_{i+1} - alpha^ sigma_{i+1} / sigma^) D
    c_x = s1 / s0
    c_d = a1 - a0 * c_x
    # Heun, Alg. 2 lines 9-11: x~_{i+1} = x~' + (s_{i+1} - s^)/2 (d' - d), d = (x - alpha D) / sigma
    #   => x_{i+1} = x' + k (d' - d),   k = alpha_{i+1} (s_{i+1} - s^) / 2
    #             = e_x x^ + e_d D + e_p D',   with the three coefficients below.
    k = 0.5 * (s1 - a1 * s0 / a0)  # -inf where a^ = 0: no correction there (Euler step)
    e_x = (1.0 + k / s1) * c_x - k / s0
    e_d = (1.0 + k / s1) * c_d + k * a0 / s0
    e_p = -k * a1 / s1
    # Alg. 2 line 9: correct unless the step ends at sigma = 0; also skip at an infinite s^.
    correct = (torch.arange(grid.n) < grid.n - 1) & (a0 > 0) & torch.tensor(second_order)
    corrector = torch.stack([e_x, e_d, e_p])
    corrector = finite_or_zero(torch.where(correct, corrector, torch.zeros_like(corrector)))
    rows = step_scalars(noise, c_x, c_d, *corrector)
    do_correct = correct.tolist()
    if hat is None:  # no churn: each step starts at its grid time
        active, churn_rows = [False] * grid.n, [None] * grid.n
        times, denoiser = grid.times_for(noise, denoiser)
        t_hat = times[:-1]
    else:
        churn_rows = step_scalars(noise, hat.t_hat, hat.c_keep, hat.c_noise)
        active, t_hat = hat.active, [row[0] for row in churn_rows]
        times = grid.times(noise)
        # every time D will see, at once
        denoiser = prepare_denoiser(denoiser, t_hat + times, batch=noise.shape[0])

    x = grid.start_state(noise, space)
    for i, (cx, cd, ex, ed, ep) in enumerate(rows):
        if active[i]:
            _, ckeep, cnoise = churn_rows[i]  # (t^_i, c_keep, c_noise)
            x = space.project(ckeep * x + cnoise * space.randn_like(x, generator))  # line 6
        denoised = denoiser(x, t_hat[i], **cond)
        x_next = space.project((cx * x).addcmul_(cd, denoised))  # Euler step, line 8
        if do_correct[i]:
            denoised_next = denoiser(x_next, times[i + 1], **cond)
            x_next = (ex * x).addcmul_(ed, denoised).addcmul_(ep, denoised_next)
            x_next = space.project(x_next)  # trapezoid, line 11: e_x x + e_d D + e_p D'
        x = x_next
        if callback is not None:
            callback({"i": i, "t": times[i], "t_next": times[i + 1], "x": x, "denoised": denoised})
    return x


def sample_euler(
    denoiser: Callable[..., Tensor],
    noise: Tensor,
    ts: Tensor,
    schedule: Schedule,
    *,
    space: Any = Euclidean(),
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    cond: Mapping[str, Any] | None = None,
    S_churn: float = 0.0,
    S_tmin: float = 0.0,
    S_tmax: float = math.inf,
    S_noise: float = 1.0,
) -> Tensor:
    """Euler sampler: Karras et al. 2022, Algorithm 1 (deterministic) in VE-equivalent
    coordinates x~ = x / alpha, s = sigma / alpha, with the optional churn of Algorithm 2.

    In these coordinates the Euler step x~' = x~ + (s' - s)(x~ - D) / s is exactly DDIM with
    eta = 0 (and DPM-Solver++ of order 1): x' = (sigma' / sigma) x + (alpha' - alpha sigma' / sigma) D.
    That form is finite at a zero-SNR start (alpha = 0, s = inf), so flow schedules need no
    special case. noise: [B, ...]; ts: [n + 1] descending, ts[-1] = 0. One NFE per step.
    """
    churn = dict(S_churn=S_churn, S_tmin=S_tmin, S_tmax=S_tmax, S_noise=S_noise)
    return _karras_loop(denoiser, noise, ts, schedule, second_order=False, space=space,
                        generator=generator, callback=callback, cond=cond, churn=churn)


def sample_heun(
    denoiser: Callable[..., Tensor],
    noise: Tensor,
    ts: Tensor,
    schedule: Schedule,
    *,
    space: Any = Euclidean(),
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    cond: Mapping[str, Any] | None = None,
    S_churn: float = 0.0,
    S_tmin: float = 0.0,
    S_tmax: float = math.inf,
    S_noise: float = 1.0,
) -> Tensor:
    """Heun's second-order sampler: Karras et al. 2022, Algorithm 2 (Algorithm 1 when
    S_churn = 0, the default), in VE-equivalent coordinates x~ = x / alpha, s = sigma / alpha.

    Each step takes an Euler step and corrects it with the trapezoidal rule (2 NFE); the final
    step to t = 0 stays an Euler step (Alg. 2, line 9), and so does a step that starts at zero
    SNR (alpha = 0: the trapezoid weight is infinite). n steps cost 2n - 1 evaluations.
    Churn options S_churn, S_tmin, S_tmax, S_noise as in Alg. 2 (see `churn_grid`).
    noise: [B, ...]; ts: [n + 1] descending, ts[-1] = 0. Returns x0: [B, ...].
    """
    churn = dict(S_churn=S_churn, S_tmin=S_tmin, S_tmax=S_tmax, S_noise=S_noise)
    return _karras_loop(denoiser, noise, ts, schedule, second_order=True, space=space,
                        generator=generator, callback=callback, cond=cond, churn=churn)


__all__ = ["sample_euler", "sample_heun", "churn_grid", "ChurnedGrid"]
