"""Running any sampler over a segment [t_a -> t_b] of a grid, from a given state, also for t_b > 0.

The sampler contract fixes a run's ends: it starts from x = sigma(ts[0]) * space.project(noise)
and its grid ends at ts[-1] = 0. No sampler accepts a grid that ends above 0 (`Grid.build`
refuses it), and several treat their last step specially because it lands on the data: ddpm's
last step adds no noise, heun does not correct it, the multistep solvers (dpmpp_*, unipc) ramp
their order down to 1 there. A method that stops half way and goes back up in time (RePaint's
jumps, Lugmayr et al. 2022) therefore needs another way to stop at t_b > 0.

`run_segment` uses only the public contract, so it works for every sampler, plugins'
included, and changes none:

* the start: a given state x at t_a is injected as noise = x / sigma(t_a) (x lies in the space,
  and `space.project` is linear and idempotent, so the sampler starts from x itself; the same
  trick as SDEdit in `diffusekit.core.editing`);
* the end: a segment [t_a = s_0 > ... > s_k = t_b > 0] is the first k steps of the run over
  [s_0, ..., s_k, 0]. The callback reports the state after every step (x at t_next); after step
  k - 1 it holds x at t_b, and the run is stopped there (an exception carries the state out), so
  the final step to 0 is never evaluated: no extra denoiser call. Since the step into t_b is not
  the run's last, each sampler treats it as an interior step (ddpm adds its posterior noise,
  heun corrects, the multistep solvers use order <= 2 on it).

A multistep solver starts each segment with an empty history (order 1 first), and UniPC's state
at t_b is its predictor (its corrector would need the next evaluation): both stay consistent
solvers of the same ODE, only of lower order at a segment's ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from diffusekit.core.schedules import Schedule
from diffusekit.core.spaces import Euclidean

#: The callback of a sampler (as `grid_coefficients.Callback`): called after each step.
StepCallback = Callable[[dict[str, Any]], None]


class _SegmentEnd(Exception):
    """Carries the state at the segment's last time out of the sampler's loop."""

    def __init__(self, x: Tensor) -> None:
        super().__init__("segment end")
        self.x = x


def segment_grid(ts: Tensor) -> tuple[Tensor, int | None]:
    """(the grid the sampler runs, the step after which to stop): ts itself and None when it
    ends at 0; else ts + [0] and len(ts) - 2 (the step whose t_next is ts[-1]). ts: [k + 1]
    descending, float64 on the host; validated by the sampler's own `Grid.build`."""
    ts = torch.as_tensor(ts).detach().to(device="cpu", dtype=torch.float64)
    if ts.dim() != 1 or ts.shape[0] < 2:
        raise ValueError(f"a segment needs at least 2 times, got shape {tuple(ts.shape)}")
    if bool(ts[-1] == 0):
        return ts, None
    return torch.cat([ts, ts.new_zeros(1)]), ts.shape[0] - 2


def run_segment(
    sampler: Callable[..., Tensor],
    denoiser: Callable[..., Tensor],
    x: Tensor,
    ts: Tensor,
    schedule: Schedule,
    *,
    space: Any = Euclidean(),
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    cond: Mapping[str, Any] | None = None,
    start_scale: Tensor | float | None = None,
    **options: Any,
) -> Tensor:
    """Run `sampler` (any `SamplerFn`) from the state x [B, ...] at ts[0] down to ts[-1], which
    may be > 0. Returns the state at ts[-1]: [B, ...] like x (x0 when ts[-1] = 0).

    ts: [k + 1] descending times, ts[0] < t_max allowed; the step times are ts themselves.
    start_scale: 1 / sigma(ts[0]) if the caller has it at hand (a 0-dim tensor or a float, made
    before its loop); computed from the schedule otherwise. `callback` sees every step of the
    segment (indices from 0). The other arguments are the sampler's own."""
    grid, stop_after = segment_grid(ts)
    if start_scale is None:
        _, sigma0 = schedule.alpha_sigma(grid[:1])
        start_scale = float(1.0 / sigma0[0])
    noise = x * start_scale  # sigma(t_a) * project(noise) = x for x in the space

    if stop_after is None:
        return sampler(denoiser, noise, grid, schedule, space=space, generator=generator,
                       callback=callback, cond=cond, **options)

    def stop(info: dict[str, Any]) -> None:
        if callback is not None:
            callback(info)
        if info["i"] == stop_after:  # a Python int: no host read
            raise _SegmentEnd(info["x"])

    try:
        sampler(denoiser, noise, grid, schedule, space=space, generator=generator, callback=stop,
                cond=cond, **options)
    except _SegmentEnd as end:
        return end.x
    name = getattr(sampler, "__name__", repr(sampler))
    raise RuntimeError(f"sampler {name} returned without reporting step {stop_after} to its callback: "
                       "a segment ending at t > 0 needs the callback of the sampler contract")


__all__ = ["run_segment", "segment_grid"]
