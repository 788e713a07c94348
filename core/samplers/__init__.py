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
* `callback`: called after each step i with a dict {i, t (= ts[i]), t_next (= ts[i+1], the time
  of x), x (the state after the step), denoised (the last D output of the step)}.
* Conditioning: `cond`, a dict forwarded to every denoiser call as keyword arguments,
  D(x, t, **cond) (e.g. cond={"node_mask": mask} or {"label": y}). One convention for all.

Unknown options raise TypeError (nothing is silently ignored). The loops never synchronise with
the host: grid quantities and per-step coefficients are computed once before the loop
(`grid_coefficients`), and the loop only indexes Python lists and does tensor arithmetic.

Built-ins: `ddpm`, `ddim` (ancestral.py), `euler`, `heun` (karras.py), `dpmpp_2m`,
`dpmpp_2m_sde`, `dpmpp_3m`, `dpmpp_3m_sde` (dpmsolver.py), `unipc` (unipc.py). Look them up with
`get(name)`; `names()` lists all, plugins included; `register(name, fn)` (or `@register(name)`)
adds one.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from torch import Tensor

from diffusekit.core.registry import Registry


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


# The built-in families register themselves on import (after REGISTRY exists).
from diffusekit.core.samplers import ancestral, dpmsolver, karras, unipc  # noqa: E402

__all__ = ["REGISTRY", "SamplerFn", "get", "names", "register", "ancestral", "karras", "dpmsolver", "unipc"]
