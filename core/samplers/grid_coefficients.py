"""Per-grid and per-step quantities that every Gaussian sampler precomputes before its loop.

A sampler walks a descending grid ts = [t_0 > t_1 > ... > t_n = 0] of a schedule with
x_t = alpha(t) x0 + sigma(t) eps. Everything that depends only on the grid is computed here,
once, vectorised and in float64 on the host:

    alpha_i, sigma_i,  lambda_i = log(alpha_i / sigma_i) = log_snr(t_i) / 2,
    h_i = lambda_{i+1} - lambda_i   (the step length in half-log-SNR, Lu et al. 2022),

plus Python flags (`zero_snr_start`: alpha(t_0) = 0, lambda_0 = -inf, as for rectified flow) and
Python lists of 0-dim tensors on the state's device (`step_rows`), so that the sampling loop only
indexes Python lists and multiplies tensors: no `.item()`, no `bool(tensor)`, no host sync.

Infinite quantities are legal here and handled by the formulas' limits: the final step to t = 0
has h = +inf (exp(-h) = 0, sigma_n = 0), and a zero-SNR start has h_0 = +inf too. Each sampler
builds its coefficients so that these limits are finite (e.g. sigma_{i+1}/sigma_i instead of
ratios of VE noise levels), and `finite_or_zero` guards entries that a step does not use.

`run_first_order` is the one loop shared by the samplers whose every step has the form
x_{i+1} = c_x x_i + c_d D(x_i, t_i) + c_z z (DDPM, DDIM, Euler): they differ only in c_x, c_d, c_z.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from diffusekit.core.samplers.scalar_cache import interned
from diffusekit.core.schedules import Schedule

StepRow = tuple[Tensor, ...]
Callback = Callable[[dict[str, Any]], None]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of times and coefficients for a state of `dtype`: at least float32.

    Half-precision states keep their dtype (0-dim coefficient tensors do not promote them),
    but times and coefficients are never rounded to bf16/fp16."""
    return torch.promote_types(dtype, torch.float32)


def finite_or_zero(v: Tensor) -> Tensor:
    """v with every non-finite entry replaced by 0 (entries of steps that do not use them)."""
    return torch.where(torch.isfinite(v), v, torch.zeros_like(v))


@dataclass(frozen=True, eq=False)
class Grid:
    """A time grid and its schedule quantities, float64 on the CPU. All tensors are [n + 1].

    t:      the times, descending, t[-1] = 0.
    alpha:  alpha(t);  sigma: sigma(t)  (sigma[-1] = 0, alpha[-1] = alpha(0) = 1).
    lam:    lambda(t) = log(alpha / sigma) = log_snr / 2  (+inf at t = 0; -inf at zero SNR).
    zero_snr_start: alpha(t_0) == 0 (flow, zero-terminal-SNR schedules): a Python bool.
    schedule: the schedule evaluated.
    """

    t: Tensor
    alpha: Tensor
    sigma: Tensor
    lam: Tensor
    zero_snr_start: bool
    schedule: Schedule

    @property
    def n(self) -> int:
        """The number of steps (len(t) - 1)."""
        return self.t.shape[0] - 1

    @property
    def h(self) -> Tensor:
        """[n] step lengths in lambda, h_i = lambda_{i+1} - lambda_i > 0 (+inf on the last step
        and on a zero-SNR first step)."""
        return self.lam[1:] - self.lam[:-1]

    @property
    def sigma_ratio(self) -> Tensor:
        """[n] sigma_{i+1} / sigma_i (0 on the last step); sigma_i > 0 for every i < n."""
        return self.sigma[1:] / self.sigma[:-1]

    @classmethod
    def build(cls, schedule: Schedule, ts: Tensor | Sequence[float]) -> "Grid":
        """Evaluate `schedule` on the whole grid `ts` ([n + 1], descending, ts[-1] = 0) in one
        vectorised call. Validation and flags use the host: this runs once, before any loop."""
        t = torch.as_tensor(ts).detach().to(device="cpu", dtype=torch.float64)
        if t.dim() != 1 or t.shape[0] < 2:
            raise ValueError(f"ts must be a 1-D grid of at least 2 times, got shape {tuple(t.shape)}")
        if not bool(((t[1:] < t[:-1]).all()) & (t[-1] == 0)):
            raise ValueError("ts must be strictly descending and end at t = 0 (use schedules.time_grid)")
        alpha, sigma = schedule.alpha_sigma(t)
        # t = 0 is the data itself: x_0 = x0, for every schedule (alpha = 1, sigma = 0 there)
        alpha = torch.cat([alpha[:-1].to(torch.float64), torch.ones(1, dtype=torch.float64)])
        sigma = torch.cat([sigma[:-1].to(torch.float64), torch.zeros(1, dtype=torch.float64)])
        lam = torch.log(alpha) - torch.log(sigma)  # log(0) = -inf at zero SNR; +inf at t = 0
        valid, zero_snr_start = torch.stack([(sigma[:-1] > 0).all() & ~torch.isnan(lam).any(),
                                             alpha[0] <= 0]).tolist()  # one host read
        if not valid:
            raise ValueError("the schedule must have sigma(t) > 0 for t > 0 on the grid")
        return cls(t=t, alpha=alpha, sigma=sigma, lam=lam, zero_snr_start=zero_snr_start, schedule=schedule)

    def _time_lists(self, like: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """(all n + 1 times, the first n, the first n stacked): 0-dim tensors in the compute
        dtype on like's device, the same objects for every run of an equal grid (`interned`)."""

        def make(stacked: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
            times = list(stacked.unbind(0))
            return times, times[:-1], stacked[:-1]

        return interned("times", self.t, like.device, compute_dtype(like.dtype), make)

    def times(self, like: Tensor) -> list[Tensor]:
        """[n + 1] 0-dim time tensors in the compute dtype on like's device (passed to D).
        Samplers that pass D only these use `times_for`, which also prepares the denoiser."""
        return self._time_lists(like)[0]

    def times_for(self, like: Tensor, denoiser: Callable[..., Tensor]
                  ) -> tuple[list[Tensor], Callable[..., Tensor]]:
        """`times(like)`, handed to the denoiser once (`prepare_denoiser`) together with the
        schedule values the grid already holds, and the callable the loop should use (see
        there). For samplers that pass D only grid times. The final time t = 0 is not
        prepared: no sampler evaluates D there (and the grid's alpha, sigma are the data's)."""
        times, head, stacked_head = self._time_lists(like)
        return times, prepare_denoiser(denoiser, head, stacked_head, alpha_sigma=(self.alpha[:-1], self.sigma[:-1]),
                                       schedule=self.schedule, batch=like.shape[0])


def prepare_denoiser(denoiser: Callable[..., Tensor], times: Sequence[Tensor],
                     stacked: Tensor | None = None, **known: Any) -> Callable[..., Tensor]:
    """Hand the 0-dim times a loop will pass to a denoiser that can precompute for them
    (`prepare_times`, see `Denoiser`; `stacked`: the same times as one tensor, if at hand;
    `known`: what the caller knows already: `alpha_sigma` of `schedule`, and `batch`), and return the
    callable the loop should use: what `prepare_times` returns (the denoiser itself or an
    equivalent cheaper entry point), or the denoiser unchanged."""
    prepare = getattr(denoiser, "prepare_times", None)
    if callable(prepare):
        return prepare(times, stacked, **known) or denoiser
    return denoiser


def step_rows(columns: Sequence[Tensor], like: Tensor) -> list[StepRow]:
    """Pack per-step coefficient columns (each [n], float64) into n rows of 0-dim tensors on
    like's device, in the compute dtype: row i is (columns[0][i], columns[1][i], ...).
    Non-finite entries must have been replaced (`finite_or_zero`) by the caller. Equal tables
    give the very same rows (`interned`): callers only read them."""
    table = torch.stack([c.to(torch.float64) for c in columns], dim=0)

    def make(converted: Tensor) -> list[StepRow]:
        # one unbind per column (an unbind per row costs a call per step)
        return list(zip(*(column.unbind(0) for column in converted.unbind(0))))

    return interned("step_rows", table, like.device, compute_dtype(like.dtype), make)


def host_flags(v: Tensor) -> list[bool]:
    """A [n] boolean tensor as Python bools (grid preparation only, never inside a loop)."""
    return [bool(b) for b in v.tolist()]


def start_state(noise: Tensor, grid: Grid, space: Any) -> Tensor:
    """x_{t_0} = sigma(t_0) * project(noise): the prior sample (the usual approximation of
    N(alpha_0 x0, sigma_0^2) for alpha_0 > 0; exact when alpha_0 = 0)."""
    sigma0 = grid.sigma[0].to(device=noise.device, dtype=compute_dtype(noise.dtype))
    return (sigma0 * space.project(noise)).to(noise.dtype)


def run_first_order(
    denoiser: Callable[..., Tensor],
    x: Tensor,
    grid: Grid,
    c_x: Tensor,
    c_d: Tensor,
    c_z: Tensor,
    *,
    space: Any,
    generator: torch.Generator | None,
    callback: Callback | None,
    cond: Mapping[str, Any] | None,
) -> Tensor:
    """The loop of every sampler of the form  x_{i+1} = c_x[i] x_i + c_d[i] D(x_i, t_i) + c_z[i] z,
    z ~ space.randn_like: coefficients [n] float64 (finite), x: [B, ...] the start state.
    Noise is drawn only on the steps where c_z != 0 (decided here, before the loop)."""
    cond = dict(cond or {})
    times, denoiser = grid.times_for(x, denoiser)
    rows = step_rows([c_x, c_d, c_z], x)
    noisy = host_flags(c_z != 0)
    for i, (cx, cd, cz) in enumerate(rows):
        denoised = denoiser(x, times[i], **cond)
        x = (cx * x).addcmul_(cd, denoised)  # the step's deterministic part: cx x + cd D
        if noisy[i]:
            x.addcmul_(cz, space.randn_like(x, generator))  # its fresh noise
        x = space.project(x)
        if callback is not None:
            callback({"i": i, "t": times[i], "t_next": times[i + 1], "x": x, "denoised": denoised})
    return x


__all__ = [
    "Grid",
    "StepRow",
    "Callback",
    "compute_dtype",
    "finite_or_zero",
    "step_rows",
    "prepare_denoiser",
    "host_flags",
    "start_state",
    "run_first_order",
]
