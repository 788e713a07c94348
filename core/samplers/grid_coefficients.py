"""The public building blocks of a sampler: per-grid quantities and per-step 0-dim tensors.

A sampler walks a descending grid ts = [t_0 > t_1 > ... > t_n = 0] of a schedule with
x_t = alpha(t) x0 + sigma(t) eps. Everything that depends only on the grid is computed once,
vectorised and in float64 on the host (`Grid`):

    alpha_i, sigma_i,  lambda_i = log(alpha_i / sigma_i) = log_snr(t_i) / 2,
    h_i = lambda_{i+1} - lambda_i   (the step length in half-log-SNR, Lu et al. 2022),

plus a Python flag (`zero_snr_start`: alpha(t_0) = 0, lambda_0 = -inf, as for rectified flow).
A sampler then computes its own per-step coefficients as [n] float64 columns and turns them into
Python lists of 0-dim tensors on the state's device (`step_scalars`), so that its loop only
indexes Python lists and multiplies tensors: no `.item()`, no `bool(tensor)`, no host sync.
Per-step decisions (does step i add noise?) become Python bools before the loop (`.tolist()`).

Infinite quantities are legal here and handled by the formulas' limits: the final step to t = 0
has h = +inf (exp(-h) = 0, sigma_n = 0), and a zero-SNR start has h_0 = +inf too. Each sampler
builds its coefficients so that these limits are finite (e.g. sigma_{i+1}/sigma_i instead of
ratios of VE noise levels), and `finite_or_zero` guards entries that a step does not use.

The 0-dim tensors (`Grid.times`, `step_scalars`) are shared by every run of an equal grid
(`scalar_cache`): they are read-only. Nothing in the engine writes to them, and a sampler, a
denoiser or a callback must not either (`t = 1000 * t`, never `t *= 1000`).

`run_first_order` is the one loop shared by the built-in samplers whose every step has the form
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

#: The callback of a sampler: called after each step i with {i, t, t_next, x, denoised}.
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

    def start_state(self, noise: Tensor, space: Any) -> Tensor:
        """x_{t_0} = sigma(t_0) * space.project(noise): [B, ...] in noise's dtype, the prior
        sample (the usual approximation of N(alpha_0 x0, sigma_0^2) for alpha_0 > 0; exact
        when alpha_0 = 0)."""
        sigma0 = self.sigma[0].to(device=noise.device, dtype=compute_dtype(noise.dtype))
        return (sigma0 * space.project(noise)).to(noise.dtype)

    def _time_lists(self, like: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """(all n + 1 times, the first n, the first n stacked): 0-dim tensors in the compute
        dtype on like's device, the same objects for every run of an equal grid (`interned`)."""

        def make(stacked: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
            times = list(stacked.unbind(0))
            return times, times[:-1], stacked[:-1]

        return interned("times", self.t, like.device, compute_dtype(like.dtype), make)

    def times(self, like: Tensor) -> list[Tensor]:
        """The n + 1 grid times as 0-dim tensors on like's device (at least float32), to pass
        to D and the callback; read-only and shared by equal grids. Samplers that pass D only
        these use `times_for`, which also prepares the denoiser."""
        return self._time_lists(like)[0]

    def times_for(self, like: Tensor, denoiser: Callable[..., Tensor]
                  ) -> tuple[list[Tensor], Callable[..., Tensor]]:
        """(`times(like)`, the callable the loop should use instead of `denoiser`): the times
        are handed to the denoiser once (`prepare_denoiser`) together with the schedule values
        the grid already holds. For samplers that pass D only grid times. The final time t = 0
        is not prepared: no sampler evaluates D there (and the grid's alpha, sigma are the data's)."""
        times, head, stacked_head = self._time_lists(like)
        return times, prepare_denoiser(denoiser, head, stacked_head, alpha_sigma=(self.alpha[:-1], self.sigma[:-1]),
                                       schedule=self.schedule, batch=like.shape[0])


def step_scalars(like: Tensor, *columns: Tensor) -> list[tuple[Tensor, ...]]:
    """Per-step coefficient columns (each [n], any float dtype, finite) as n tuples of 0-dim
    tensors on like's device in its compute dtype (at least float32): row i is
    (columns[0][i], columns[1][i], ...). Made without a host sync in the loop, and read-only:
    equal tables give the very same tensors across runs (`scalar_cache`)."""
    table = torch.stack([c.to(torch.float64) for c in columns], dim=0)

    def make(converted: Tensor) -> list[tuple[Tensor, ...]]:
        # one unbind per column (an unbind per row costs a call per step)
        return list(zip(*(column.unbind(0) for column in converted.unbind(0))))

    return interned("step_scalars", table, like.device, compute_dtype(like.dtype), make)


def prepare_denoiser(denoiser: Callable[..., Tensor], times: Sequence[Tensor],
                     stacked: Tensor | None = None, **known: Any) -> Callable[..., Tensor]:
    """The callable a sampling loop should use for `denoiser`, given every 0-dim time tensor
    the loop will pass it (`times`; `stacked`: the same as one tensor, if at hand).

    A denoiser that can precompute for known times (`prepare_times`, see `Denoiser`: it then
    evaluates its schedule once for the whole run) gets them here, with what the caller knows
    already (`alpha_sigma` of `schedule`, the `batch` size), and returns the callable to use
    (itself or an equivalent cheaper entry point); any other denoiser is returned unchanged."""
    prepare = getattr(denoiser, "prepare_times", None)
    if callable(prepare):
        return prepare(times, stacked, **known) or denoiser
    return denoiser


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
    rows = step_scalars(x, c_x, c_d, c_z)
    noisy = (c_z != 0).tolist()
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
    "Callback",
    "Grid",
    "step_scalars",
    "prepare_denoiser",
    "finite_or_zero",
    "compute_dtype",
    "run_first_order",
]
