"""Noise schedules of continuous Gaussian diffusion, and the time grids samplers walk.

A process is  x_t = alpha(t) x0 + sigma(t) eps,  eps ~ N(0, I),  t in [0, 1],  t = 0 is the data.
Every schedule is a small frozen dataclass defined by its log signal-to-noise ratio
lambda(t) = log(alpha^2 / sigma^2) (Kingma et al. 2021, "Variational Diffusion Models"), which is
strictly decreasing, +inf at t = 0, and exactly invertible (`t_of_log_snr`). Two families:

* variance preserving (VP):  alpha^2 + sigma^2 = 1, so alpha^2 = sigmoid(lambda);
* variance exploding (VE):   alpha = 1, sigma = exp(-lambda / 2);

plus rectified flow (alpha = 1 - t, sigma = t). Schedules are chosen by name through the
`REGISTRY`; time grids are separate (`time_grid`) and carry no state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
from torch import Tensor

from diffusekit.core.registry import Registry

EDM_SIGMA_MIN = 0.002  # Karras et al. 2022, Table 1: sigma_min of the EDM time discretisation
EDM_SIGMA_MAX = 80.0  # ... and its sigma_max
DEFAULT_LOG_SNR_MAX = -2.0 * math.log(EDM_SIGMA_MIN)  # ~12.43: the least noise a grid visits

REGISTRY: Registry[Callable[..., "Schedule"]] = Registry("schedule")


def _as_tensor(t: Tensor | float) -> Tensor:
    return t if isinstance(t, Tensor) else torch.tensor(float(t), dtype=torch.float64)


@dataclass(frozen=True)
class Schedule:
    """Base class: subclasses define `log_snr` and `t_of_log_snr`; VP or VE fixes alpha, sigma.

    `t_max` is where samplers start (1.0 unless the schedule is singular there) and
    `log_snr_max` the least noise a karras / log-SNR grid visits before its final jump to t = 0.
    """

    t_max: float = field(default=1.0, kw_only=True)
    log_snr_max: float = field(default=DEFAULT_LOG_SNR_MAX, kw_only=True)
    variance_preserving: ClassVar[bool] = True
    n_train_steps: ClassVar[int | None] = None  # a discrete training grid, where there is one

    def log_snr(self, t: Tensor) -> Tensor:
        """lambda(t) = log(alpha(t)^2 / sigma(t)^2); +inf at t = 0.  t: any shape."""
        raise NotImplementedError

    def t_of_log_snr(self, log_snr: Tensor) -> Tensor:
        """The inverse of `log_snr`: the time at which the log-SNR equals `log_snr`."""
        raise NotImplementedError

    def alpha(self, t: Tensor | float) -> Tensor:
        """Signal scale alpha(t).  VP: sqrt(sigmoid(lambda)); VE: 1."""
        t = _as_tensor(t)
        if self.variance_preserving:
            return torch.sigmoid(self.log_snr(t)).sqrt()
        return torch.ones_like(t)

    def sigma(self, t: Tensor | float) -> Tensor:
        """Noise scale sigma(t).  VP: sqrt(sigmoid(-lambda)); VE: exp(-lambda / 2)."""
        t = _as_tensor(t)
        if self.variance_preserving:
            return torch.sigmoid(-self.log_snr(t)).sqrt()
        return torch.exp(-0.5 * self.log_snr(t))

    def alpha_sigma(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """(alpha(t), sigma(t)) in one call (VP: one log-SNR evaluation for both)."""
        if self.variance_preserving and type(self).alpha is Schedule.alpha:
            lam = self.log_snr(_as_tensor(t))
            return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()
        return self.alpha(t), self.sigma(t)


@REGISTRY.register("vp_linear")
@dataclass(frozen=True)
class VPLinear(Schedule):
    """DDPM's linear betas in continuous time (Song et al. 2021, "Score-Based Generative
    Modeling through SDEs", eq. 33): beta(t) = b0 + t (b1 - b0), with b0 = 0.1, b1 = 20 the
    continuous form of betas 1e-4 .. 0.02 over 1000 steps.

    -log alpha(t)^2 = g(t) = b0 t + (b1 - b0) t^2 / 2,    lambda(t) = -log(expm1(g(t))).
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    def _g(self, t: Tensor) -> Tensor:
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t

    def log_snr(self, t: Tensor) -> Tensor:
        return -torch.log(torch.expm1(self._g(_as_tensor(t))))

    def t_of_log_snr(self, log_snr: Tensor) -> Tensor:
        g = torch.nn.functional.softplus(-log_snr)  # g = log(1 + e^-lambda)
        b0, db = self.beta_min, self.beta_max - self.beta_min
        return (torch.sqrt(b0 * b0 + 2.0 * db * g) - b0) / db  # root of db/2 t^2 + b0 t - g = 0

    def alpha(self, t: Tensor | float) -> Tensor:
        return torch.exp(-0.5 * self._g(_as_tensor(t)))

    def sigma(self, t: Tensor | float) -> Tensor:
        return torch.sqrt(-torch.expm1(-self._g(_as_tensor(t))))

    def alpha_sigma(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        g = self._g(_as_tensor(t))
        return torch.exp(-0.5 * g), torch.sqrt(-torch.expm1(-g))


@REGISTRY.register("vp_cosine")
@dataclass(frozen=True)
class VPCosine(Schedule):
    """The cosine schedule of Nichol & Dhariwal 2021 ("Improved DDPM", eq. 17):

    alpha(t)^2 = f(t) / f(0),   f(t) = cos^2(pi/2 (t + s) / (1 + s)),   s = 0.008.

    alpha(1) = 0, so samplers start at t_max = 0.9946 (Lu et al. 2022, DPM-Solver, App. D), where
    an eps-predicting network is still well defined.
    """

    s: float = 0.008
    t_max: float = field(default=0.9946, kw_only=True)

    def _theta(self, t: Tensor) -> Tensor:
        return 0.5 * math.pi * (t + self.s) / (1.0 + self.s)

    def log_snr(self, t: Tensor) -> Tensor:
        t = _as_tensor(t)
        c2 = torch.cos(self._theta(t)) ** 2
        c02 = math.cos(0.5 * math.pi * self.s / (1.0 + self.s)) ** 2
        return torch.log(c2) - torch.log(c02 - c2)  # alpha^2 / sigma^2 = c2 / (c0^2 - c2)

    def t_of_log_snr(self, log_snr: Tensor) -> Tensor:
        c0 = math.cos(0.5 * math.pi * self.s / (1.0 + self.s))
        theta = torch.arccos(torch.sigmoid(log_snr).sqrt() * c0)  # cos(theta) = alpha c0
        return theta * (1.0 + self.s) * 2.0 / math.pi - self.s


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation of fp(xp) at x (xp increasing), exact at the knots and
    safe where fp is infinite at a knot."""
    x = x.to(xp.dtype)
    i = torch.searchsorted(xp, x.clamp(xp[0], xp[-1]).contiguous(), right=True).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    w = (x - x0) / (x1 - x0)
    mid = f0 + w * (f1 - f0)
    return torch.where(w <= 0, f0, torch.where(w >= 1, f1, mid))


@REGISTRY.register("vp_discrete")
@dataclass(frozen=True, eq=False)
class VPDiscrete(Schedule):
    """A VP schedule given by the alphas_cumprod of N training steps (Ho et al. 2020, eq. 4:
    alpha_bar_k = prod_{i<=k} (1 - beta_i)). Step k = 0..N-1 sits at t = (k + 1) / N, so the
    schedule is exact at the N grid points; t = 0 is the clean data (alpha = 1). Between points
    g(t) = -log alpha(t)^2 is linear in t, which keeps lambda monotone and exactly invertible.

    Built from `betas` (default: DDPM's linspace(1e-4, 0.02, 1000)) or `alphas_cumprod`.
    """

    betas: tuple[float, ...] | None = None
    alphas_cumprod: tuple[float, ...] | None = None
    n_train_steps: int = 1000

    def __post_init__(self) -> None:
        if self.alphas_cumprod is not None:
            ab = torch.tensor(self.alphas_cumprod, dtype=torch.float64)
        else:
            betas = (
                torch.tensor(self.betas, dtype=torch.float64)
                if self.betas is not None
                else torch.linspace(1e-4, 0.02, self.n_train_steps, dtype=torch.float64)
            )
            ab = torch.cumprod(1.0 - betas, dim=0)
        valid = len(ab) >= 2 and bool((ab[1:] <= ab[:-1]).all()) and bool((ab[:-1] > 0).all())
        if not valid or bool(ab[-1] < 0) or bool(ab[0] > 1):
            raise ValueError("alphas_cumprod must be positive and non-increasing")
        object.__setattr__(self, "n_train_steps", len(ab))
        g = torch.cat([torch.zeros(1, dtype=torch.float64), -torch.log(ab)])
        object.__setattr__(self, "_t_knots", torch.linspace(0.0, 1.0, len(ab) + 1, dtype=torch.float64))
        object.__setattr__(self, "_g_knots", g)
        object.__setattr__(self, "_alphas_cumprod", ab)
        object.__setattr__(self, "_knots_on", {})  # device -> (t_knots, g_knots) there
        if self.log_snr_max == DEFAULT_LOG_SNR_MAX:  # least noise a grid visits: the first step
            object.__setattr__(self, "log_snr_max", float(torch.log(ab[0] / (1 - ab[0]))))

    @property
    def alphas_cumprod_tensor(self) -> Tensor:
        """[N] float64: alpha_bar_k of the training steps."""
        return self._alphas_cumprod

    def _knots(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(t_knots, g_knots) on `device`, so the schedule follows its times there (a GPU's
        training times); copied once per device."""
        if device.type == "cpu":
            return self._t_knots, self._g_knots
        if device not in self._knots_on:
            self._knots_on[device] = (self._t_knots.to(device), self._g_knots.to(device))
        return self._knots_on[device]

    def _g(self, t: Tensor) -> Tensor:
        """g(t) = -log alpha(t)^2, linear between the knots t_k = k / N (k = 0..N), so the
        segment of t is floor(t N): no search needed."""
        scaled = t.to(torch.float64).clamp(0.0, 1.0) * self.n_train_steps
        i = scaled.floor().clamp(max=self.n_train_steps - 1)
        w = scaled - i
        i = i.long()
        g_knots = self._knots(t.device)[1]
        g0, g1 = g_knots[i], g_knots[i + 1]
        return torch.where(w > 0, g0 + w * (g1 - g0), g0)  # exact at knots, also where g1 = inf

    def log_snr(self, t: Tensor) -> Tensor:
        t = _as_tensor(t)
        return (-torch.log(torch.expm1(self._g(t)))).to(t.dtype)

    def t_of_log_snr(self, log_snr: Tensor) -> Tensor:
        g = torch.nn.functional.softplus(-log_snr.to(torch.float64))
        t_knots, g_knots = self._knots(log_snr.device)
        return _interp(g, g_knots, t_knots).to(log_snr.dtype)

    def alpha(self, t: Tensor | float) -> Tensor:
        t = _as_tensor(t)
        return torch.exp(-0.5 * self._g(t)).to(t.dtype)

    def sigma(self, t: Tensor | float) -> Tensor:
        t = _as_tensor(t)
        return torch.sqrt(-torch.expm1(-self._g(t))).to(t.dtype)

    def alpha_sigma(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        t = _as_tensor(t)
        g = self._g(t)
        return torch.exp(-0.5 * g).to(t.dtype), torch.sqrt(-torch.expm1(-g)).to(t.dtype)


@REGISTRY.register("vp_polynomial")
@dataclass(frozen=True, eq=False)
class VPPolynomial(VPDiscrete):
    """EDM's polynomial schedule for molecules (Hoogeboom et al. 2022, App. B, "polynomial_2"),
    on its N training steps: at t_k = k / N, k = 0..N,

        a_k = (1 - t_k^power)^2                         the polynomial,
        a_k = prod_{i<=k} clip(a_i / a_{i-1}, c, 1)     each step's ratio clipped at c = 0.001
                                                        (a_{-1} = 1), so sampling stays stable,
        alpha_k^2 = (1 - 2 s) a_k + s                   s = `precision`: the SNR stays in
                                                        [s / (1 - s), (1 - s) / s] (about e^+-11.5)

    and step k = 1..N sits at t = k / N as in `vp_discrete`; t = 0 is the clean data (EDM's own
    t = 0 keeps noise of variance s). EDM trains on QM9 with power 2, s = 1e-5, N = 1000.
    """

    power: float = 2.0
    precision: float = 1e-5
    clip: float = 0.001

    def __post_init__(self) -> None:
        if not (self.power > 0 and 0 < self.precision < 0.5 and 0 < self.clip <= 1):
            raise ValueError(f"vp_polynomial needs power > 0, 0 < precision < 0.5 and "
                             f"0 < clip <= 1, got {self.power}, {self.precision}, {self.clip}")
        t = torch.linspace(0.0, 1.0, self.n_train_steps + 1, dtype=torch.float64)
        a = (1.0 - t ** self.power) ** 2
        ratios = a / torch.cat([torch.ones(1, dtype=torch.float64), a[:-1]])
        a = torch.cumprod(ratios.clamp(self.clip, 1.0), 0)
        alphas2 = (1.0 - 2.0 * self.precision) * a + self.precision
        object.__setattr__(self, "alphas_cumprod", tuple(alphas2[1:].tolist()))
        super().__post_init__()


def rescale_zero_terminal_snr(schedule: Schedule, n_train_steps: int = 1000) -> VPDiscrete:
    """Lin et al. 2024 ("Common Diffusion Noise Schedules and Sample Steps are Flawed", Alg. 1):
    shift and scale sqrt(alpha_bar) so that the last step has exactly zero SNR and the first is
    unchanged. A continuous VP schedule is first discretised on `n_train_steps` points. Pair the
    result with v- or x0-prediction: eps-prediction is undefined at zero SNR.
    """
    if not schedule.variance_preserving:
        raise ValueError("rescale_zero_terminal_snr needs a variance-preserving schedule")
    if isinstance(schedule, VPDiscrete):
        ab = schedule.alphas_cumprod_tensor
    else:
        t = torch.arange(1, n_train_steps + 1, dtype=torch.float64) / n_train_steps
        ab = schedule.alpha(t) ** 2
    sab = ab.sqrt()
    first, last = sab[0].clone(), sab[-1].clone()
    sab = (sab - last) * first / (first - last)
    return VPDiscrete(alphas_cumprod=tuple((sab**2).tolist()), t_max=1.0)


@REGISTRY.register("ve")
@dataclass(frozen=True)
class VE(Schedule):
    """Variance exploding (Song et al. 2021, eq. 31): alpha = 1, sigma(t) = sigma_min
    (sigma_max / sigma_min)^t for t in (0, 1], and sigma(0) = 0 (the data itself)."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    variance_preserving: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.log_snr_max == DEFAULT_LOG_SNR_MAX:  # grids stop just above sigma_min (t = 1e-3,
            # Song et al.'s sampling end), since t = 0 itself is the data
            l_end = self.log_snr(torch.tensor(1e-3, dtype=torch.float64))
            object.__setattr__(self, "log_snr_max", float(l_end))

    def log_snr(self, t: Tensor) -> Tensor:
        t = _as_tensor(t)
        log_sigma = math.log(self.sigma_min) + t * math.log(self.sigma_max / self.sigma_min)
        return torch.where(t > 0, -2.0 * log_sigma, torch.full_like(t, math.inf))

    def t_of_log_snr(self, log_snr: Tensor) -> Tensor:
        t = (-0.5 * log_snr - math.log(self.sigma_min)) / math.log(self.sigma_max / self.sigma_min)
        return t.clamp(0.0, 1.0)


@REGISTRY.register("edm")
@dataclass(frozen=True)
class EDM(Schedule):
    """Karras et al. 2022 ("Elucidating the Design Space...", Table 1): alpha = 1 and
    sigma(t) = sigma_max * t, i.e. EDM's sigma(t) = t rescaled to t in [0, 1]. Use it with the
    `karras` time grid (rho = 7 between sigma_min = 0.002 and sigma_max = 80) and the EDM
    preconditioning of `Denoiser` (sigma_data = 0.5)."""

    sigma_max: float = EDM_SIGMA_MAX
    sigma_data: float = 0.5
    variance_preserving: ClassVar[bool] = False

    def log_snr(self, t: Tensor) -> Tensor:
        return -2.0 * torch.log(self.sigma_max * _as_tensor(t))

    def t_of_log_snr(self, log_snr: Tensor) -> Tensor:
        return torch.exp(-0.5 * log_snr) / self.sigma_max


@REGISTRY.register("flow")
@dataclass(frozen=True)
class Flow(Schedule):
    """Rectified flow (Liu et al. 2023; Lipman et al. 2023): alpha = 1 - t, sigma = t, so
    lambda(t) = 2 log((1 - t) / t) and t = sigmoid(-lambda / 2)."""

    variance_preserving: ClassVar[bool] = False  # neither VP nor VE: alpha and sigma are overridden below

    def log_snr(self, t: Tensor) -> Tensor:
        t = _as_tensor(t)
        return 2.0 * (torch.log1p(-t) - torch.log(t))

    def t_of_log_snr(self, log_snr: Tensor) -> Tensor:
        return torch.sigmoid(-0.5 * log_snr)

    def alpha(self, t: Tensor | float) -> Tensor:
        return 1.0 - _as_tensor(t)

    def sigma(self, t: Tensor | float) -> Tensor:
        return _as_tensor(t).clone()


def get(name: str, **params) -> Schedule:
    """Build the schedule registered as `name`, e.g. `get("vp_cosine")`, `get("edm", sigma_max=80)`."""
    return REGISTRY.get(name)(**params)


def names() -> list[str]:
    """Names of all registered schedules (built-ins and plugins)."""
    return REGISTRY.names()


# ---------------------------------------------------------------------------------------------
# Time grids: n steps = n + 1 descending times from t_max to exactly 0. Pure functions.

GRIDS: Registry[Callable[..., Tensor]] = Registry("time grid")


@GRIDS.register("uniform")
def _grid_uniform(schedule: Schedule, n: int, t_max: float) -> Tensor:
    """Evenly spaced in t from t_max to 0 (for t_max = 1 this is diffusers' "trailing")."""
    return torch.linspace(t_max, 0.0, n + 1, dtype=torch.float64)


@GRIDS.register("trailing")
def _grid_trailing(schedule: Schedule, n: int, t_max: float) -> Tensor:
    """Lin et al. 2024, Table 2 "trailing": evenly spaced from the last training step, snapped to
    the schedule's training grid where it has one (vp_discrete); else the same as uniform."""
    ts = _grid_uniform(schedule, n, t_max)
    if schedule.n_train_steps:
        N = schedule.n_train_steps
        ts = torch.round(ts * N) / N
    return ts


def _sigma_ve(log_snr: Tensor) -> Tensor:
    return torch.exp(-0.5 * log_snr)  # the VE-equivalent noise level sigma / alpha


def _log_snr_at(schedule: Schedule, t_max: float) -> Tensor:
    """lambda(t_max), floored at EDM's sigma_max = 80 where the schedule has zero SNR there
    (flow, zero-terminal-SNR): spacing rules need a finite top end; ts[0] stays t_max."""
    l_lo = schedule.log_snr(torch.tensor(t_max, dtype=torch.float64))
    floor = torch.full_like(l_lo, -2.0 * math.log(EDM_SIGMA_MAX))
    return torch.where(torch.isfinite(l_lo), l_lo, floor)


@GRIDS.register("karras")
def _grid_karras(schedule: Schedule, n: int, t_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022, eq. 5: sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho
    in the VE-equivalent sigma = sigma/alpha, between t_max and log_snr_max, then t = 0."""
    l_lo = _log_snr_at(schedule, t_max)
    s_max, s_min = _sigma_ve(l_lo), _sigma_ve(torch.tensor(schedule.log_snr_max, dtype=torch.float64))
    ramp = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    sig = (s_max ** (1 / rho) + ramp * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    ts = schedule.t_of_log_snr(-2.0 * torch.log(sig)).to(torch.float64)
    ts[0] = t_max
    return torch.cat([ts, ts.new_zeros(1)])


@GRIDS.register("log_snr")
def _grid_log_snr(schedule: Schedule, n: int, t_max: float) -> Tensor:
    """Lu et al. 2022 (DPM-Solver, Sec. 3.3): evenly spaced in lambda between t_max and
    log_snr_max, then t = 0."""
    l_lo = _log_snr_at(schedule, t_max)
    ls = torch.linspace(float(l_lo), schedule.log_snr_max, n, dtype=torch.float64)
    ts = schedule.t_of_log_snr(ls).to(torch.float64)
    ts[0] = t_max
    return torch.cat([ts, ts.new_zeros(1)])


def time_grid(
    schedule: Schedule, n: int, kind: str = "uniform", *, t_max: float | None = None, **options
) -> Tensor:
    """n + 1 descending times [t_max, ..., 0] (float64) for an n-step sampler.

    kind: "uniform" | "trailing" | "karras" (options: rho) | "log_snr", or any registered grid.
    ts[0] is `t_max` (default: the schedule's) and ts[-1] is exactly 0.
    """
    if n < 1:
        raise ValueError(f"a time grid needs at least one step, got n={n}")
    fn = GRIDS.get(kind)
    ts = fn(schedule, n, schedule.t_max if t_max is None else t_max, **options)
    ts[-1] = 0.0
    return ts
