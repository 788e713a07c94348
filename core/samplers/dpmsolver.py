"""DPM-Solver++ multistep samplers (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling
of Diffusion Probabilistic Models"), in data prediction, stepping in lambda = log(alpha / sigma)
(half the log-SNR).

The probability-flow ODE in data prediction has the exact solution (DPM-Solver++, eq. 9)

    x_s = (sigma_s / sigma_t) x_t + sigma_s int_{lambda_t}^{lambda_s} e^lambda x0_hat(lambda) dlambda,

and a k-th order multistep method replaces x0_hat by the polynomial through the last k denoiser
outputs m_0 = D_i, m_1 = D_{i-1}, m_2 = D_{i-2}. With h = lambda_s - lambda_t,
r_0 = h_{i-1} / h, r_1 = h_{i-2} / h and phi_1 = 1 - e^{-h}:

    order 1:  x_s = (sigma_s / sigma_t) x_t + alpha_s phi_1 m_0                   (= DDIM, eta = 0)
    order 2:  ... + alpha_s phi_1 [(1 + 1/(2 r_0)) m_0 - 1/(2 r_0) m_1]           (Alg. 2, 2M)
    order 3:  ... + alpha_s [phi_1 m_0 + phi_2 D1 - phi_3 D2],  phi_2 = 1 - phi_1 / h,
              phi_3 = phi_2 / h - 1/2,  D1, D2 the first and second divided differences
              (Lu et al. 2022, DPM-Solver, Alg. 2 / DPM-Solver++ App. B, 3M).

The SDE variants (DPM-Solver++(2M) SDE, Lu et al. 2022 Sec. 5 and k-diffusion's 'midpoint'
form) use eta in [0, 1]: the x_t weight gets e^{-eta h}, phi uses h (1 + eta), and fresh noise
sigma_s sqrt(1 - e^{-2 eta h}) z is added. All weights on (x, m_0, m_1, m_2) are computed once,
before the loop, by `multistep_coefficients`.

The first steps use lower orders (no history yet), and so do the last: the final step to t = 0
(h = +inf) is first order, and the one before it at most second order. A zero-SNR start
(alpha(t_0) = 0, lambda_0 = -inf) gives h_0 = +inf, so D_0 never enters a higher-order step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diffusekit.core.samplers.grid_coefficients import (
    Callback,
    Grid,
    finite_or_zero,
    step_scalars,
)
from diffusekit.core.schedules import Schedule
from diffusekit.core.spaces import Euclidean


@dataclass(frozen=True, eq=False)
class MultistepCoefficients:
    """Per-step weights of x_{i+1} = c_x x_i + w_0 m_0 + w_1 m_1 + w_2 m_2 + c_z z; each [n]
    float64 and finite. `orders` (Python ints) says how many history terms step i uses."""

    orders: list[int]
    c_x: Tensor
    w_0: Tensor
    w_1: Tensor
    w_2: Tensor
    c_z: Tensor


def step_orders(grid: Grid, max_order: int) -> list[int]:
    """The order of each step: min(max_order, i + 1, n - i), and never reaching back to D_0
    after a zero-SNR start (its interval h_0 is infinite)."""
    n = grid.n
    orders = [min(max_order, i + 1, n - i) for i in range(n)]
    if grid.zero_snr_start:
        orders = [o if i == 0 else min(o, i) for i, o in enumerate(orders)]
    return orders


def multistep_coefficients(grid: Grid, max_order: int, eta: float = 0.0) -> MultistepCoefficients:
    """All weights of DPM-Solver++(kM) (k = max_order <= 3), ODE (eta = 0) or SDE (eta > 0),
    vectorised over the n steps of `grid` (see the module docstring for the equations)."""
    if max_order not in (1, 2, 3):
        raise ValueError(f"multistep order must be 1, 2 or 3, got {max_order}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    orders = step_orders(grid, max_order)
    order = torch.tensor(orders)
    h = grid.h  # [n], +inf on the last step (and a zero-SNR first step)
    h_eta = h * (1.0 + eta)
    phi_1 = -torch.expm1(-h_eta)  # 1 - e^{-h (1 + eta)}
    if eta > 0:  # SDE: x_t decays by e^{-eta h}; noise std sigma_s sqrt(1 - e^{-2 eta h})
        c_x = grid.sigma_ratio * torch.exp(-eta * h)
        c_z = grid.sigma[1:] * (-torch.expm1(-2.0 * eta * h)).sqrt()
    else:
        c_x, c_z = grid.sigma_ratio, torch.zeros_like(h)
    nan = torch.full((2,), float("nan"), dtype=h.dtype)
    r_0 = torch.cat([nan[:1], h[:-1]]) / h  # h_{i-1} / h_i
    r_1 = torch.cat([nan, h[:-2]])[: h.shape[0]] / h  # h_{i-2} / h_i
    # order 2 (DPM-Solver++(2M), Alg. 2): D = (1 + 1/(2 r_0)) m_0 - 1/(2 r_0) m_1
    w0_2, w1_2 = phi_1 * (1.0 + 0.5 / r_0), -phi_1 * 0.5 / r_0
    # order 3: D1 = (1 + q) D1_0 - q D1_1,  D2 = u (D1_0 - D1_1),  D1_0 = (m_0 - m_1) / r_0,
    # D1_1 = (m_1 - m_2) / r_1,  q = r_0 / (r_0 + r_1),  u = 1 / (r_0 + r_1); then
    # phi_1 m_0 + phi_2 D1 - phi_3 D2 = phi_1 m_0 + A D1_0 + B D1_1 with A, B below.
    phi_2 = 1.0 - phi_1 / h_eta
    phi_3 = phi_2 / h_eta - 0.5
    q, u = r_0 / (r_0 + r_1), 1.0 / (r_0 + r_1)
    big_a, big_b = phi_2 * (1.0 + q) - phi_3 * u, phi_3 * u - phi_2 * q
    w0_3, w1_3, w2_3 = phi_1 + big_a / r_0, big_b / r_1 - big_a / r_0, -big_b / r_1
    zero = torch.zeros_like(h)
    w_0 = torch.where(order == 1, phi_1, torch.where(order == 2, w0_2, w0_3))
    w_1 = torch.where(order == 1, zero, torch.where(order == 2, w1_2, w1_3))
    w_2 = torch.where(order == 3, w2_3, zero)
    a_s = grid.alpha[1:]
    return MultistepCoefficients(
        orders=orders,
        c_x=finite_or_zero(c_x),
        w_0=finite_or_zero(a_s * w_0),
        w_1=finite_or_zero(a_s * w_1),
        w_2=finite_or_zero(a_s * w_2),
        c_z=finite_or_zero(c_z),
    )


def _multistep_loop(
    denoiser: Callable[..., Tensor],
    noise: Tensor,
    ts: Tensor,
    schedule: Schedule,
    *,
    max_order: int,
    eta: float,
    space: Any,
    generator: torch.Generator | None,
    callback: Callback | None,
    cond: Mapping[str, Any] | None,
) -> Tensor:
    """The shared loop of the DPM-Solver++ multistep samplers (one NFE per step)."""
    cond = dict(cond or {})
    grid = Grid.build(schedule, ts)
    co = multistep_coefficients(grid, max_order, eta)
    rows = step_scalars(noise, co.c_x, co.w_0, co.w_1, co.w_2, co.c_z)
    noisy = (co.c_z != 0).tolist()
    times, denoiser = grid.times_for(noise, denoiser)
    x = grid.start_state(noise, space)
    m_1 = m_2 = x  # history D_{i-1}, D_{i-2}; unused (weight 0, skipped) until it exists
    for i, (cx, w0, w1, w2, cz) in enumerate(rows):
        denoised = denoiser(x, times[i], **cond)
        order = co.orders[i]
        x = (cx * x).addcmul_(w0, denoised)  # x_s = (sigma_s/sigma_t) e^{-eta h} x_t + alpha_s phi_1 m_0 ...
        if order >= 2:
            x.addcmul_(w1, m_1)  # ... + the first divided difference (2M / 3M)
        if order >= 3:
            x.addcmul_(w2, m_2)  # ... + the second divided difference (3M)
        if noisy[i]:
            x.addcmul_(cz, space.randn_like(x, generator))  # SDE: sigma_s sqrt(1 - e^{-2 eta h}) z
        x = space.project(x)
        m_2, m_1 = m_1, denoised
        if callback is not None:
            callback({"i": i, "t": times[i], "t_next": times[i + 1], "x": x, "denoised": denoised})
    return x


def sample_dpmpp_2m(
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
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): second-order multistep
    exponential integrator of the probability-flow ODE in data prediction, steps in
    lambda = log(alpha / sigma). First order on the first step and on the final step to t = 0.
    noise: [B, ...]; ts: [n + 1] descending, ts[-1] = 0. Returns x0: [B, ...]; n NFE.
    """
    return _multistep_loop(denoiser, noise, ts, schedule, max_order=2, eta=0.0, space=space,
                           generator=generator, callback=callback, cond=cond)


def sample_dpmpp_2m_sde(
    denoiser: Callable[..., Tensor],
    noise: Tensor,
    ts: Tensor,
    schedule: Schedule,
    *,
    space: Any = Euclidean(),
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    cond: Mapping[str, Any] | None = None,
    eta: float = 1.0,
) -> Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, "DPM-Solver++", Sec. 5; the 'midpoint' form of
    k-diffusion and diffusers' sde-dpmsolver++): the second-order multistep solver of the
    reverse SDE in data prediction. eta = 1 (default) is the full SDE, eta = 0 gives dpmpp_2m.
    Fresh noise from space.randn_like(x, generator). noise: [B, ...]; ts: [n + 1] descending,
    ts[-1] = 0. Returns x0: [B, ...]; n NFE.
    """
    return _multistep_loop(denoiser, noise, ts, schedule, max_order=2, eta=eta, space=space,
                           generator=generator, callback=callback, cond=cond)


def sample_dpmpp_3m(
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
    """DPM-Solver++(3M) (Lu et al. 2022, "DPM-Solver++", App. B; the third-order multistep
    update of DPM-Solver): data prediction, steps in lambda = log(alpha / sigma). Orders ramp
    1, 2, 3, ..., 3, 2, 1 (first order on the final step to t = 0). noise: [B, ...];
    ts: [n + 1] descending, ts[-1] = 0. Returns x0: [B, ...]; n NFE.
    """
    return _multistep_loop(denoiser, noise, ts, schedule, max_order=3, eta=0.0, space=space,
                           generator=generator, callback=callback, cond=cond)


def sample_dpmpp_3m_sde(
    denoiser: Callable[..., Tensor],
    noise: Tensor,
    ts: Tensor,
    schedule: Schedule,
    *,
    space: Any = Euclidean(),
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    cond: Mapping[str, Any] | None = None,
    eta: float = 1.0,
) -> Tensor:
    """DPM-Solver++(3M) SDE (Lu et al. 2022; k-diffusion's dpmpp_3m_sde): the third-order
    multistep solver of the reverse SDE, eta in [0, 1] (eta = 0 gives dpmpp_3m).
    noise: [B, ...]; ts: [n + 1] descending, ts[-1] = 0. Returns x0: [B, ...]; n NFE.
    """
    return _multistep_loop(denoiser, noise, ts, schedule, max_order=3, eta=eta, space=space,
                           generator=generator, callback=callback, cond=cond)


__all__ = [
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_dpmpp_3m",
    "sample_dpmpp_3m_sde",
    "multistep_coefficients",
    "step_orders",
    "MultistepCoefficients",
]
