"""Denoising losses of continuous Gaussian diffusion: one loss, many weightings and time samplers.

Every loss here is a weighted x0 error (Kingma et al. 2021, "Variational Diffusion Models";
Kingma & Gao 2023, "Understanding Diffusion Objectives", Table 1):

    L(x0) = E_{t, eps} [ w(lambda_t) * |D(alpha_t x0 + sigma_t eps, t) - x0|^2 / n_dof ],

where lambda = log SNR. Any network target is one weighting of this: eps-MSE is w = SNR,
v-MSE is w = SNR + 1, EDM's loss is w = 1/sigma_data^2 + SNR. Because the loss speaks only to the
denoiser contract D(x, t, **cond) -> x0_hat, it trains any `Denoiser` whatever its prediction.
Weightings and time samplers are chosen by name from registries.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from diffusekit.core.parameterization import DenoiserFn, broadcast_to
from diffusekit.core.registry import Registry
from diffusekit.core.schedules import Schedule
from diffusekit.core.spaces import Euclidean

T_EPS = 1e-5  # the least time a loss samples: lambda(0) = +inf is never evaluated

# w(lambda [B], **params) -> [B]: the weight on the per-dimension x0 squared error.
WEIGHTINGS: Registry[Callable[..., Tensor]] = Registry("loss weighting")


@WEIGHTINGS.register("x0")
def weight_x0(log_snr: Tensor) -> Tensor:
    """w = 1: plain x0 regression."""
    return torch.ones_like(log_snr)


@WEIGHTINGS.register("eps_mse")
def weight_eps_mse(log_snr: Tensor) -> Tensor:
    """w = SNR: the eps-prediction MSE of Ho et al. 2020 (|eps_hat - eps|^2 = SNR |x0_hat - x0|^2)."""
    return torch.exp(log_snr)


@WEIGHTINGS.register("snr")
def weight_truncated_snr(log_snr: Tensor) -> Tensor:
    """w = max(SNR, 1): truncated-SNR weighting (Salimans & Ho 2022, "Progressive Distillation", Sec. 4)."""
    return torch.exp(log_snr).clamp(min=1.0)


@WEIGHTINGS.register("min_snr")
def weight_min_snr(log_snr: Tensor, gamma: float = 5.0) -> Tensor:
    """w = min(SNR, gamma): Min-SNR-gamma (Hang et al. 2023, eq. 7), gamma = 5 by default."""
    return torch.exp(log_snr).clamp(max=gamma)


@WEIGHTINGS.register("v")
def weight_v(log_snr: Tensor) -> Tensor:
    """w = SNR + 1: the v-prediction MSE of a VP process (Salimans & Ho 2022)."""
    return torch.exp(log_snr) + 1.0


@WEIGHTINGS.register("edm")
def weight_edm(log_snr: Tensor, sigma_data: float = 0.5) -> Tensor:
    """Karras et al. 2022, eq. 8 + Table 1: lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 with
    sigma = exp(-lambda/2) the VE-equivalent noise level, i.e. w = 1/sd^2 + SNR."""
    return torch.exp(log_snr) + 1.0 / sigma_data**2


@WEIGHTINGS.register("flow")
def weight_flow(log_snr: Tensor) -> Tensor:
    """w = (1 + sqrt(SNR))^2: the rectified-flow velocity MSE |u_hat - u|^2 with u = eps - x0
    (for alpha + sigma = 1: x0_hat - x0 = -sigma (u_hat - u))."""
    return (1.0 + torch.exp(0.5 * log_snr)) ** 2


# t_sampler(batch, schedule, generator, device, **params) -> t [B] in [T_EPS, schedule.t_max].
TIME_SAMPLERS: Registry[Callable[..., Tensor]] = Registry("time sampler")


def _clamp_time(t: Tensor, schedule: Schedule) -> Tensor:
    return t.clamp(T_EPS, schedule.t_max)


@TIME_SAMPLERS.register("uniform")
def time_uniform(
    batch: int, schedule: Schedule, generator: torch.Generator | None = None,
    device: torch.device | str = "cpu", stratified: bool = True,
) -> Tensor:
    """t ~ U(0, t_max). `stratified`: one draw per stratum [i/B, (i+1)/B) in shuffled order, the
    low-discrepancy sampler of Kingma et al. 2021 (App. I.1): same mean, lower variance."""
    u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
    if stratified:
        perm = torch.randperm(batch, generator=generator, device=device)
        u = (perm.to(torch.float64) + u) / batch
    return _clamp_time(u * schedule.t_max, schedule)


@TIME_SAMPLERS.register("log_normal")
def time_log_normal(
    batch: int, schedule: Schedule, generator: torch.Generator | None = None,
    device: torch.device | str = "cpu", p_mean: float = -1.2, p_std: float = 1.2,
) -> Tensor:
    """EDM's training distribution (Karras et al. 2022, Table 1): ln sigma ~ N(P_mean, P_std^2)
    in VE coordinates, mapped to t through lambda = -2 ln sigma."""
    z = torch.randn(batch, generator=generator, device=device, dtype=torch.float64)
    log_snr = -2.0 * (p_mean + p_std * z)
    return _clamp_time(schedule.t_of_log_snr(log_snr), schedule)


@TIME_SAMPLERS.register("logit_normal")
def time_logit_normal(
    batch: int, schedule: Schedule, generator: torch.Generator | None = None,
    device: torch.device | str = "cpu", mean: float = 0.0, std: float = 1.0,
) -> Tensor:
    """Esser et al. 2024 (SD3, eq. 19): t = sigmoid(u), u ~ N(mean, std^2); favours mid times."""
    z = torch.randn(batch, generator=generator, device=device, dtype=torch.float64)
    return _clamp_time(torch.sigmoid(mean + std * z) * schedule.t_max, schedule)


@TIME_SAMPLERS.register("uniform_terminal")
def time_uniform_terminal(
    batch: int, schedule: Schedule, generator: torch.Generator | None = None,
    device: torch.device | str = "cpu", p_terminal: float = 0.25, stratified: bool = True,
) -> Tensor:
    """t = t_max with probability `p_terminal`, else t ~ U(0, t_max) (`time_uniform`).

    A sampler's first step evaluates the denoiser at t_max, where x_t is (almost) pure noise and
    D(x_t, t_max) is the posterior mean E[x0 | cond]: with one step it is the whole answer. Uniform
    times almost never visit t_max itself; Lin et al. 2024 ("Common Diffusion Noise Schedules and
    Sample Steps are Flawed", Sec. 3.3) show that a model must be trained at the time sampling
    starts from. This mixture trains it there explicitly (with w = 1 + SNR ~ 1 for v, the plain
    x0 regression of a conditional model's posterior mean) and everywhere else as before."""
    if not 0.0 <= p_terminal <= 1.0:
        raise ValueError(f"p_terminal must be in [0, 1], got {p_terminal}")
    t = time_uniform(batch, schedule, generator, device, stratified)
    terminal = torch.rand(batch, generator=generator, device=device) < p_terminal
    return torch.where(terminal, torch.full_like(t, schedule.t_max), t)


def denoising_loss(
    denoiser: DenoiserFn,
    x0: Tensor,
    schedule: Schedule,
    t_sampler: str | Callable[..., Tensor] = "uniform",
    weighting: str | Callable[[Tensor], Tensor] = "eps_mse",
    space=None,
    *,
    generator: torch.Generator | None = None,
    cond: dict | None = None,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    t_sampler_options: dict | None = None,
    weighting_options: dict | None = None,
) -> Tensor:
    """Per-example weighted denoising loss, [B].

    x0: [B, ...] clean data; the noisy input is x_t = alpha_t x0 + sigma_t eps with eps drawn
    from `space` (default Euclidean) unless `noise` is given, and t from `t_sampler` unless `t`
    ([B]) is given. The error is projected onto the space (padding and, for ZeroCoM, the
    centre-of-mass direction do not count) and averaged over its degrees of freedom.
    `cond` is passed to the denoiser as keyword arguments.
    """
    space = Euclidean() if space is None else space
    batch = x0.shape[0]
    if t is None:
        sample_t = TIME_SAMPLERS.get(t_sampler) if isinstance(t_sampler, str) else t_sampler
        t = sample_t(batch, schedule, generator, x0.device, **(t_sampler_options or {}))
    weight_fn = WEIGHTINGS.get(weighting) if isinstance(weighting, str) else weighting
    eps = space.randn_like(x0, generator) if noise is None else noise
    alpha, sigma = schedule.alpha_sigma(t)
    x_t = broadcast_to(alpha, x0) * x0 + broadcast_to(sigma, x0) * eps  # VDM eq. 1
    x0_hat = denoiser(x_t, t, **(cond or {}))
    err = space.project(x0_hat - x0)
    mse = err.pow(2).flatten(1).sum(1) / space.n_dof(x0)
    weight = weight_fn(schedule.log_snr(t), **(weighting_options or {})).to(mse.dtype)
    return weight * mse


def names() -> dict[str, list[str]]:
    """The registered weightings and time samplers."""
    return {"weightings": WEIGHTINGS.names(), "time_samplers": TIME_SAMPLERS.names()}


__all__ = ["denoising_loss", "WEIGHTINGS", "TIME_SAMPLERS", "T_EPS", "names"]
