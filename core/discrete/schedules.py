"""Masking schedules of discrete diffusion: alpha(t), the probability that a token is still clean.

A discrete process on tokens in {0, ..., V-1} keeps each token with probability alpha(t) and
corrupts it otherwise (replaced by the mask token in masked diffusion, by a uniform token in
uniform diffusion). t runs over [0, 1]: alpha(0) = 1 is the data, alpha(1) ~ 0 is pure noise, and
alpha is strictly decreasing. The continuous-time NELBO only needs alpha and its derivative:

    L = int_0^1  alpha'(t) / (1 - alpha(t)) * E_q[ sum_{masked l} log p_theta(x_l | z_t) ] dt

(Sahoo et al. 2024, "Simple and Effective Masked Diffusion Language Models" (MDLM), eq. 10-11;
Shi et al. 2024, "Simplified and Generalized Masked Diffusion for Discrete Data" (MD4), eq. 5).
Substituting alpha for t shows the bound depends only on alpha(0) and alpha(1), never on the
shape in between (MD4 section 4); the shape changes the variance of the Monte-Carlo estimate and
where an ancestral sampler spends its steps.

Every schedule is a frozen dataclass with `alpha(t)`, `alpha_prime(t)` (d alpha / dt),
`mask_prob(t)` = 1 - alpha(t) and `loss_weight(t)` = -alpha'(t) / (1 - alpha(t)) >= 0, the last two
in closed form where 1 - alpha would cancel catastrophically near t = 0. Schedules are chosen by
name through `REGISTRY` (`get("cosine")`, `names()`), never by flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from diffusekit.core.registry import Registry

REGISTRY: Registry[Callable[..., "MaskingSchedule"]] = Registry("discrete schedule")

MDLM_EPS = 1e-3  # MDLM's log-linear schedule: alpha(1) = eps, so a fraction eps stays clean


def _as_tensor(t: Tensor | float) -> Tensor:
    """Python numbers become float64 scalars; tensors keep their dtype (ints become float64)."""
    if isinstance(t, Tensor):
        return t if t.is_floating_point() else t.to(torch.float64)
    return torch.tensor(float(t), dtype=torch.float64)


@dataclass(frozen=True)
class MaskingSchedule:
    """Base class: subclasses define `alpha` and `alpha_prime`, and override `mask_prob` /
    `loss_weight` with closed forms when `1 - alpha` loses precision near t = 0.

    All methods take t of any shape (or a float) and return a tensor of the same shape.
    """

    def alpha(self, t: Tensor | float) -> Tensor:
        """alpha(t): probability that a token is still clean at time t; alpha(0) = 1."""
        raise NotImplementedError

    def alpha_prime(self, t: Tensor | float) -> Tensor:
        """d alpha / dt (<= 0)."""
        raise NotImplementedError

    def mask_prob(self, t: Tensor | float) -> Tensor:
        """1 - alpha(t): probability that a token is corrupted at time t."""
        return 1.0 - self.alpha(t)

    def loss_weight(self, t: Tensor | float) -> Tensor:
        """-alpha'(t) / (1 - alpha(t)) >= 0: the NELBO weight on the summed masked-token
        cross-entropy (MDLM eq. 10).  Diverges like 1/t at t -> 0; callers keep t >= t_min."""
        return -self.alpha_prime(t) / self.mask_prob(t)

    def unmask_prob(self, t: Tensor | float, s: Tensor | float) -> Tensor:
        """(alpha_s - alpha_t) / (1 - alpha_t): probability that a token corrupted at time t is
        clean at the earlier time s < t under the reverse process (MDLM eq. 7; MD4 eq. 6)."""
        t, s = _as_tensor(t), _as_tensor(s)
        return (self.alpha(s) - self.alpha(t)) / self.mask_prob(t)


@REGISTRY.register("loglinear")
@dataclass(frozen=True)
class LogLinear(MaskingSchedule):
    """MDLM's log-linear schedule (Sahoo et al. 2024, section 3.5 / appendix):

        total noise  sigma(t) = -log(1 - (1 - eps) t),   alpha(t) = exp(-sigma(t)) = 1 - (1 - eps) t,
        alpha'(t) = -(1 - eps),   -alpha'/(1 - alpha) = 1 / t.

    alpha(1) = eps > 0: a fraction eps of the tokens is never masked, so MDLM's bound integrates
    the unmasking of only a (1 - eps) share; with an exact model its expectation is (1 - eps) H.
    """

    eps: float = MDLM_EPS

    def __post_init__(self) -> None:
        if not 0.0 <= self.eps < 1.0:
            raise ValueError(f"loglinear: eps must lie in [0, 1), got {self.eps}")

    def alpha(self, t: Tensor | float) -> Tensor:
        return 1.0 - (1.0 - self.eps) * _as_tensor(t)

    def alpha_prime(self, t: Tensor | float) -> Tensor:
        t = _as_tensor(t)
        return torch.full_like(t, -(1.0 - self.eps))

    def mask_prob(self, t: Tensor | float) -> Tensor:
        return (1.0 - self.eps) * _as_tensor(t)

    def loss_weight(self, t: Tensor | float) -> Tensor:
        return 1.0 / _as_tensor(t)


@REGISTRY.register("linear")
@dataclass(frozen=True)
class Linear(MaskingSchedule):
    """MD4's linear schedule (Shi et al. 2024, Table 1):

        alpha(t) = 1 - t,   alpha'(t) = -1,   -alpha'/(1 - alpha) = 1 / t.

    It is MDLM's log-linear schedule with eps = 0: alpha(1) = 0, every token is masked at t = 1,
    so the bound covers the whole unmasking and an exact model's expected NELBO is exactly H.
    (MDLM's code also has a `linear` schedule that is linear in the *total noise*
    sigma(t) = -log alpha(t); that one is not a masking-probability-linear schedule.)
    """

    def alpha(self, t: Tensor | float) -> Tensor:
        return 1.0 - _as_tensor(t)

    def alpha_prime(self, t: Tensor | float) -> Tensor:
        return torch.full_like(_as_tensor(t), -1.0)

    def mask_prob(self, t: Tensor | float) -> Tensor:
        return _as_tensor(t).clone()

    def loss_weight(self, t: Tensor | float) -> Tensor:
        return 1.0 / _as_tensor(t)


@REGISTRY.register("cosine")
@dataclass(frozen=True)
class Cosine(MaskingSchedule):
    """MD4's cosine schedule (Shi et al. 2024, Table 1; the MaskGIT mask ratio of Chang et al. 2022):

        alpha(t) = 1 - cos(pi/2 (1 - t)) = 1 - sin(pi t / 2),
        alpha'(t) = -(pi/2) cos(pi t / 2),
        -alpha'/(1 - alpha) = (pi/2) cos(pi t / 2) / sin(pi t / 2) = (pi/2) / tan(pi t / 2).

    alpha(1) = 0. A sampler on a uniform t grid unmasks few tokens in its first steps (when the
    model knows least) and many at the end.
    """

    def alpha(self, t: Tensor | float) -> Tensor:
        return 1.0 - torch.sin(0.5 * math.pi * _as_tensor(t))

    def alpha_prime(self, t: Tensor | float) -> Tensor:
        return -0.5 * math.pi * torch.cos(0.5 * math.pi * _as_tensor(t))

    def mask_prob(self, t: Tensor | float) -> Tensor:
        return torch.sin(0.5 * math.pi * _as_tensor(t))

    def loss_weight(self, t: Tensor | float) -> Tensor:
        return 0.5 * math.pi / torch.tan(0.5 * math.pi * _as_tensor(t))


@REGISTRY.register("polynomial")
@dataclass(frozen=True)
class Polynomial(MaskingSchedule):
    """MD4's polynomial schedule (Shi et al. 2024, Table 1):

        alpha(t) = 1 - t^w,   alpha'(t) = -w t^(w-1),   -alpha'/(1 - alpha) = w / t.

    w = 1 is `linear`; w > 1 keeps more tokens clean for longer.
    """

    w: float = 2.0

    def __post_init__(self) -> None:
        if self.w <= 0:
            raise ValueError(f"polynomial: exponent w must be positive, got {self.w}")

    def alpha(self, t: Tensor | float) -> Tensor:
        return 1.0 - _as_tensor(t) ** self.w

    def alpha_prime(self, t: Tensor | float) -> Tensor:
        t = _as_tensor(t)
        return -self.w * t ** (self.w - 1.0)

    def mask_prob(self, t: Tensor | float) -> Tensor:
        return _as_tensor(t) ** self.w

    def loss_weight(self, t: Tensor | float) -> Tensor:
        return self.w / _as_tensor(t)


def get(name: str, **params) -> MaskingSchedule:
    """Build the masking schedule registered as `name`, e.g. `get("loglinear", eps=1e-4)`.

    An unknown name raises `UnknownNameError` (a `KeyError`) listing the known names.
    """
    return REGISTRY.get(name)(**params)


def names() -> list[str]:
    """Names of all registered masking schedules."""
    return REGISTRY.names()


def resolve(schedule: str | MaskingSchedule) -> MaskingSchedule:
    """A schedule instance from a name or an instance (plugins may pass their own subclass)."""
    if isinstance(schedule, MaskingSchedule):
        return schedule
    if isinstance(schedule, str):
        return get(schedule)
    raise TypeError(
        f"schedule must be a name ({', '.join(names())}) or a MaskingSchedule, "
        f"got {type(schedule).__name__}"
    )
