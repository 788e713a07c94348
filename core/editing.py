"""Editing a given sample with any sampler: SDEdit.

SDEdit (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic
Differential Equations", Sec. 3, Algorithm 1) perturbs a guide x_g (a sketch, a stroke painting,
a corrupted example) to an intermediate time t0 and lets the model finish the reverse process:

    x_{t0} = alpha(t0) x_g + sigma(t0) eps,        eps ~ N(0, I) in the noise space,   (SDEdit eq. 2)
    x_0    = the sampler's reverse process from t0 to 0.

t0 trades faithfulness (small t0: close to x_g) against realism (large t0: close to a fresh sample;
t0 = t_max with alpha(t_max) ~ 0 is plain sampling). When x_g is itself a sample of the data, x_{t0}
is a sample of the marginal q_{t0}, so an exact reverse process returns the data distribution.

Every engine sampler starts from x = sigma(ts[0]) * space.project(noise) (the sampler contract,
`diffusekit.core.samplers`), so SDEdit needs no sampler of its own: `sdedit_noise` returns the
unit noise whose start state is x_{t0} above, and any registered sampler (plugins' included) runs
from it on a grid whose first time is t0 (`schedules.time_grid(..., t_max=t0)`).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from diffusekit.core.schedules import Schedule
from diffusekit.core.spaces import Euclidean


def _start_scales(schedule: Schedule, t_start: float) -> tuple[float, float]:
    """(alpha(t0), sigma(t0)) as floats, checked: t0 in (0, t_max] with sigma(t0) > 0."""
    t_start = float(t_start)
    if not 0.0 < t_start <= schedule.t_max:
        raise ValueError(f"SDEdit's start time must be in (0, t_max = {schedule.t_max:g}], "
                         f"got {t_start:g}")
    alpha, sigma = (float(v) for v in schedule.alpha_sigma(torch.tensor(t_start, dtype=torch.float64)))
    if not sigma > 0.0:
        raise ValueError(f"SDEdit needs noise at its start time: sigma({t_start:g}) = {sigma:g}")
    return alpha, sigma


def sdedit_noise(guide: Tensor, t_start: float, schedule: Schedule, *, space: Any = Euclidean(),
                 generator: torch.Generator | None = None) -> Tensor:
    """The unit noise [B, ...] from which a sampler on a grid starting at `t_start` begins at
    x_{t0} = alpha(t0) P(guide) + sigma(t0) eps (SDEdit eq. 2; P = space.project, eps from
    `space.randn_like`): noise = (alpha(t0) / sigma(t0)) P(guide) + eps, so that
    sigma(t0) * P(noise) = x_{t0} (P is linear and idempotent).

    guide: [B, ...] the sample to edit, in the data's shape and scale; t_start in (0, t_max]."""
    alpha, sigma = _start_scales(schedule, t_start)
    projected = space.project(guide)
    return (alpha / sigma) * projected + space.randn_like(projected, generator)


def sdedit(sampler: Callable[..., Tensor], denoiser: Callable[..., Tensor], guide: Tensor,
           ts: Tensor, schedule: Schedule, *, space: Any = Euclidean(),
           generator: torch.Generator | None = None, **options: Any) -> Tensor:
    """SDEdit with any sampler (`SamplerFn`): x_{t0} from `guide` (`sdedit_noise` at t0 = ts[0]),
    then `sampler(denoiser, noise, ts, schedule, space=..., generator=..., **options)` down to
    ts[-1] = 0. Returns the edited samples [B, ...] like `guide`.

    ts: [n + 1] descending times starting at t0 (`schedules.time_grid(schedule, n, kind,
    t_max=t0)`): n steps over [0, t0] instead of over the whole [0, t_max]."""
    noise = sdedit_noise(guide, float(ts[0]), schedule, space=space, generator=generator)
    return sampler(denoiser, noise, ts, schedule, space=space, generator=generator, **options)
