"""Samplers of continuous Gaussian diffusion: pure functions over one denoiser, one registry.

Every sampler has the signature

    sample_<name>(denoiser, noise, ts, schedule, *, space=Euclidean(), generator=None,
                  callback=None, cond=None, <its own keyword options>) -> x0

* `denoiser`: any callable D(x [B, ...], t, **cond) -> x0_hat [B, ...]; t is passed as a 0-dim
  tensor (a `Denoiser` around a network, or an exact analytic denoiser).
* `noise`: [B, ...] unit Gaussian in the data's shape; the sampler starts from
  x = sigma(ts[0]) * space.project(noise).
* `ts`: [n + 1] descending times from `schedules.time_grid`, ts[-1] == 0 (n steps).
* `schedule`: the `Schedule` the denoiser was trained with (alpha(t), sigma(t), log-SNR).
* `space`: the noise space; every update is followed by `space.project` and all fresh noise
  comes from `space.randn_like(x, generator)` (so ZeroCoM states stay centred, padding zero).
* `generator`: the torch.Generator of the fresh noise of stochastic samplers.
* `callback` (a `Callback`): called after each step i with a dict {i, t (= ts[i]), t_next
  (= ts[i+1], the time of x), x (the state after the step), denoised (the last D output of the step)}.
* Conditioning: `cond`, a dict forwarded to every denoiser call as keyword arguments,
  D(x, t, **cond) (e.g. cond={"node_mask": mask} or {"label": y}). One convention for all.

Unknown options raise TypeError (nothing is silently ignored). The loops never synchronise with
the host: grid quantities and per-step coefficients are computed once before the loop, and the
loop only indexes Python lists and does tensor arithmetic. The time tensors a denoiser and a
callback receive are shared by every run of an equal grid: read them, never change them in
place (`t = 1000 * t`, not `t *= 1000`).

Built-ins (`BUILTINS`): `ddpm`, `ddim` (ancestral.py), `euler`, `heun` (karras.py), `dpmpp_2m`,
`dpmpp_2m_sde`, `dpmpp_3m`, `dpmpp_3m_sde` (dpmsolver.py), `unipc` (unipc.py), `consistency`
(consistency.py: multistep sampling of a consistency model, e.g. a distilled student from
`diffusekit.core.distillation`; with any other denoiser, denoise-and-renoise). Every sampler
fulfils `SamplerFn` and lives in one `REGISTRY`: look one up with `get(name)`; `names()` lists
all, plugins included; `register(name, fn)` (or `@register(name)`) adds one.

Writing a sampler needs only the names exported here (`__all__`), as in the example plugin's
`midpoint` (plugins/example/diffusekit_example/sampler.py): `Grid` holds a grid's schedule
quantities (float64, on the host); `step_scalars` turns per-step coefficient columns into
0-dim tensors on the state's device before the loop; `prepare_denoiser` hands the denoiser every
time it will see (`Grid.times_for` does both for the grid's own times). A first-order sampler:

    grid = Grid.build(schedule, ts)   # float64 on the host: t, alpha, sigma, lam [n + 1]; h [n]
    c_x = grid.sigma_ratio            # DDIM (eta = 0), x' = c_x x + c_d D: [n] float64 columns
    c_d = grid.alpha[1:] - grid.alpha[:-1] * c_x
    x = grid.start_state(noise, space)              # sigma(t_0) * project(noise)
    times, denoiser = grid.times_for(x, denoiser)   # 0-dim times; D prepared for them
    for i, (cx, cd) in enumerate(step_scalars(x, c_x, c_d)):  # 0-dim tensors, made before the loop
        x = space.project(cx * x + cd * denoiser(x, times[i], **cond))
    return x

Running a sampler over part of a grid: `run_segment(sampler, D, x, ts, schedule)` takes any
sampler from a given state x at ts[0] down to ts[-1], which may be > 0 (segments.py: the state
enters as noise = x / sigma(ts[0]); a segment ending above 0 is the first steps of a run over
ts + [0], stopped through the callback). It relies on the contract alone, so every sampler,
plugins' included, supports segments; RePaint (`diffusekit.core.inpainting`) uses it.

A sampler that also evaluates D off the grid passes those times through `step_scalars` too and
hands them all to `prepare_denoiser`; per-step decisions become Python bools with `.tolist()`
before the loop; `finite_or_zero` zeroes the entries of steps that do not use a coefficient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from torch import Tensor

from diffusekit.core.registry import Registry
from diffusekit.core.samplers.ancestral import sample_ddim, sample_ddpm
from diffusekit.core.samplers.consistency import sample_consistency
from diffusekit.core.samplers.dpmsolver import (
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_dpmpp_3m,
    sample_dpmpp_3m_sde,
)
from diffusekit.core.samplers.grid_coefficients import (
    Callback,
    Grid,
    finite_or_zero,
    prepare_denoiser,
    step_scalars,
)
from diffusekit.core.samplers.karras import sample_euler, sample_heun
from diffusekit.core.samplers.segments import run_segment
from diffusekit.core.samplers.unipc import sample_unipc


class SamplerFn(Protocol):
    """The sampler contract (see the module docstring); returns x0: [B, ...] like `noise`."""

    def __call__(self, denoiser: Callable[..., Tensor], noise: Tensor, ts: Tensor, schedule: Any,
                 **options: Any) -> Tensor: ...


REGISTRY: Registry[SamplerFn] = Registry("sampler")


def get(name: str) -> SamplerFn:
    """The sampler registered as `name`; `UnknownNameError` (listing the known ones) otherwise."""
    return REGISTRY.get(name)


def names() -> list[str]:
    """Names of all registered samplers, sorted (built-ins and plugins)."""
    return REGISTRY.names()


def register(name: str, fn: SamplerFn | None = None, *, replace: bool = False):
    """Register sampler `fn` under `name`; without `fn`, a decorator: `@register("mine")`."""
    return REGISTRY.register(name, fn, replace=replace)


# The built-ins, registered through the same call as a plugin's samplers.
BUILTINS: dict[str, SamplerFn] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "dpmpp_3m": sample_dpmpp_3m,
    "dpmpp_3m_sde": sample_dpmpp_3m_sde,
    "unipc": sample_unipc,
    "consistency": sample_consistency,
}
for _name, _fn in BUILTINS.items():
    register(_name, _fn)
del _name, _fn

__all__ = [
    # the contract and the registry
    "SamplerFn",
    "Callback",
    "REGISTRY",
    "BUILTINS",
    "get",
    "names",
    "register",
    # building blocks for writing a sampler
    "Grid",
    "step_scalars",
    "prepare_denoiser",
    "finite_or_zero",
    # running a sampler over part of a grid
    "run_segment",
]
