"""Consistency distillation: a few-step student of any teacher denoiser, guided or not.

Song, Dhariwal, Chen & Sutskever 2023 ("Consistency Models", CM) distil a diffusion model into a
consistency function f_theta(x_t, t) that maps every point of a probability-flow ODE trajectory
to the trajectory's end at t_min, so that one evaluation is a sample (sampler `consistency`).

**The student** (CM Sec. 3 and App. C, in the engine's x0 units). In VE coordinates
x~ = x / alpha, s = sigma / alpha (the ODE of x~ is the VE ODE in the noise level s, EDM eq. 4),
with s_min = s(t_min) and sigma_data = sd,

    f(x, t) = c_skip(s) x~ + c_out(s) F_theta(c_in(s) x~, c_noise(t), **cond),
    c_skip = sd^2 / ((s - s_min)^2 + sd^2),   c_out = sd (s - s_min) / sqrt(s^2 + sd^2),
    c_in = 1 / sqrt(s^2 + sd^2)   (EDM's input scale, Karras et al. 2022, Table 1),

so c_skip(s_min) = 1, c_out(s_min) = 0 and the boundary condition f(x, t_min) = x~ = x / alpha(t_min)
holds for any network output (x itself on a VE schedule; on VP alpha(t_min) = 1 - 2e-6 for the
default t_min). The output is an x0 estimate, so the student is an engine denoiser D(x, t, **cond).

**The training pair** (CM Algorithm 2). On a grid t_min = tau_1 < ... < tau_N = t_max (N = n_steps + 1,
Karras spacing in s, CM Sec. 6: tau_i = (s_min^(1/rho) + (i-1)/(N-1) (s_max^(1/rho) - s_min^(1/rho)))^rho),
draw n ~ U{1..N-1}, x_{n+1} = alpha(tau_{n+1}) x0 + sigma(tau_{n+1}) eps, take one ODE step of the
teacher to x^_n = Phi(x_{n+1}; tau_{n+1} -> tau_n), and minimise

    L = lambda(tau_n) d( f_theta(x_{n+1}, tau_{n+1}),  f_theta^-(x^_n, tau_n) )   (CM eq. 7 / Alg. 2)

with theta^- an EMA of theta (stop-gradient; `ema_update`), d squared L2 per degree of freedom or
the pseudo-Huber metric sqrt(|e|^2 + c^2) - c (Song & Dhariwal 2023, "Improved Techniques for
Training Consistency Models", iCT, Sec. 3.3), and lambda = 1 (CM) or 1 / (s_{n+1} - s_n) (iCT Sec. 3.2).

**Guidance** (Luo et al. 2023, "Latent Consistency Models", LCM, Sec. 4.2): a student of the
classifier-free-guided teacher D_w = D(uncond) + w (D(cond) - D(uncond)) (the engine's `guided`)
takes w as an input: each example draws w ~ U[w_min, w_max], the teacher steps with D_w, and the
student sees w as cond["guidance"] ([B]); the student's network decides how to embed it
(`GuidanceInput` adds a zero-initialised embedding of w to any network's noise-level embedding).

**A trained teacher's student** (`DenoiserStudent`): the skip form around the teacher's own
parameterisation of a network initialised from the teacher's weights, f = c_skip x~ + (1 - c_skip) D
with c_skip of width s_min (a convex blend that is the teacher's D away from the boundary, so the
student starts as the teacher), so any domain's network is a student as it is (`diffusekit.core.app.distill` trains one
through the toolkit's trainer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from diffusekit.core import samplers
from diffusekit.core.layers import sinusoidal_features
from diffusekit.core.parameterization import NOISE_INPUTS, DenoiserFn, broadcast_to, expand_time
from diffusekit.core.registry import Registry
from diffusekit.core.samplers.grid_coefficients import compute_dtype
from diffusekit.core.schedules import EDM_SIGMA_MAX, Schedule
from diffusekit.core.spaces import Euclidean


def boundary_time(schedule: Schedule) -> float:
    """The default t_min of a consistency function: where a karras / log-SNR grid of `schedule`
    stops before t = 0 (log-SNR = schedule.log_snr_max, s_min = 0.002 unless the schedule says
    otherwise: CM's epsilon)."""
    return float(schedule.t_of_log_snr(torch.tensor(schedule.log_snr_max, dtype=torch.float64)))


def consistency_grid(schedule: Schedule, n_steps: int, *, t_min: float | None = None,
                     rho: float = 7.0) -> Tensor:
    """[n_steps + 1] float64 descending times t_max = tau_N > ... > tau_1 = t_min (no t = 0):
    CM's discretisation (Sec. 6, the Karras et al. 2022 eq. 5 spacing) in s = sigma / alpha,

        s_i = (s_min^(1/rho) + (i-1)/(N-1) (s_max^(1/rho) - s_min^(1/rho)))^rho,   N = n_steps + 1,

    with s_max floored at EDM's 80 where alpha(t_max) = 0 (flow); the ends are t_max and t_min exactly."""
    if n_steps < 1:
        raise ValueError(f"a consistency grid needs at least one step, got n_steps={n_steps}")
    t_min = boundary_time(schedule) if t_min is None else float(t_min)
    t_max = float(schedule.t_max)
    if not 0.0 < t_min < t_max:
        raise ValueError(f"t_min must lie in (0, t_max = {t_max:g}), got {t_min:g}")
    lam = schedule.log_snr(torch.tensor([t_max, t_min], dtype=torch.float64)).double()
    lam = torch.where(torch.isfinite(lam), lam, torch.full_like(lam, -2.0 * math.log(EDM_SIGMA_MAX)))
    s_max, s_min = torch.exp(-0.5 * lam).tolist()  # s = sigma / alpha = exp(-lambda / 2)
    ramp = torch.linspace(1.0, 0.0, n_steps + 1, dtype=torch.float64)  # descending: tau_N first
    s = (s_min ** (1 / rho) + ramp * (s_max ** (1 / rho) - s_min ** (1 / rho))) ** rho
    ts = schedule.t_of_log_snr(-2.0 * torch.log(s)).double()
    ts[0], ts[-1] = t_max, t_min
    return ts


class ConsistencyStudent(nn.Module):
    """f_theta(x, t, **cond) -> x0_hat around a raw network, with f(x, t_min) = x / alpha(t_min).

    net:        net(x_in [B, ...], c_noise [B], **cond) -> F of x's shape (the network contract).
    schedule:   the teacher's `Schedule`.
    t_min:      the boundary time (default `boundary_time(schedule)`); at t <= t_min the student
                is the identity in VE coordinates whatever the network returns.
    sigma_data: sd of the parameterisation (CM App. C: 0.5).
    noise_input: what the network sees as c_noise (see `parameterization.NOISE_INPUTS`; default
                "edm", ln(s) / 4), or a callable (t [B], schedule) -> [B].

    The coefficients (module docstring) are written as c_skip / alpha = sd^2 alpha / (d^2 + sd^2 alpha^2),
    c_out = sd d / r, c_in / alpha = 1 / r with d = sigma - s_min alpha = alpha (s - s_min) and
    r = sqrt(sigma^2 + sd^2 alpha^2): finite also where alpha = 0 (a zero-SNR t_max).
    """

    def __init__(self, net: Callable[..., Tensor], schedule: Schedule, *, t_min: float | None = None,
                 sigma_data: float = 0.5, noise_input: str | Callable[[Tensor, Schedule], Tensor] = "edm") -> None:
        super().__init__()
        self.net = net
        self.schedule = schedule
        self.t_min = boundary_time(schedule) if t_min is None else float(t_min)
        alpha, sigma = schedule.alpha_sigma(torch.tensor(self.t_min, dtype=torch.float64))
        self.s_min = float(sigma / alpha)
        self.sigma_data = float(sigma_data)
        self.noise_input = NOISE_INPUTS.get(noise_input) if isinstance(noise_input, str) else noise_input

    def boundary_offset(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(alpha, sigma, d) at times t [B] in t's compute dtype, d = sigma - s_min alpha =
        alpha (s - s_min) the distance from the boundary in VE units (finite where alpha = 0),
        exactly 0 at t <= t_min."""
        dtype = compute_dtype(t.dtype)
        t = t.to(dtype)
        alpha, sigma = (v.to(dtype) for v in self.schedule.alpha_sigma(t))
        d = sigma - self.s_min * alpha
        return alpha, sigma, torch.where(t <= torch.tensor(self.t_min, dtype=dtype), torch.zeros_like(d), d)

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(c_skip / alpha, c_out, c_in / alpha) at times t: [B] each, in t's compute dtype, so that
        f = (c_skip / alpha) x + c_out F((c_in / alpha) x). Exactly (1 / alpha, 0, .) at t <= t_min."""
        alpha, sigma, d = self.boundary_offset(t)
        sd = self.sigma_data
        r = torch.sqrt(sigma * sigma + sd * sd * alpha * alpha)  # alpha sqrt(s^2 + sd^2)
        c_skip = sd * sd * alpha / (d * d + sd * sd * alpha * alpha)  # c_skip(s) / alpha   (CM App. C)
        c_out = sd * d / r  # sd (s - s_min) / sqrt(s^2 + sd^2)                         (CM App. C)
        return c_skip, c_out, 1.0 / r  # c_in / alpha = 1 / (alpha sqrt(s^2 + sd^2))      (EDM Table 1)

    def forward(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        """x: [B, ...] state at time t ([B] or scalar) -> x0_hat = f_theta(x, t): [B, ...]."""
        t = expand_time(t, x)
        c_skip, c_out, c_in = self.coefficients(t)
        out = self.net(x * broadcast_to(c_in, x), self.noise_input(t, self.schedule).to(x.dtype), **cond)
        return broadcast_to(c_skip, x) * x + broadcast_to(c_out, x) * out  # f = c_skip x~ + c_out F


class DenoiserStudent(ConsistencyStudent):
    """f(x, t, **cond) = c_skip(s) x~ + (1 - c_skip(s)) D(x, t, **cond) around an engine denoiser D,
    with c_skip(s) = b^2 / ((s - s_min)^2 + b^2) for a boundary width b (default: s_min).

    The student of a trained model: D is the teacher's own parameterisation (`Denoiser`: eps, v,
    x0, ... with the teacher's c_noise) of a network that starts from the teacher's weights, so
    every domain's network keeps its own inputs. Two choices differ from CM's raw-network form
    (`ConsistencyStudent`), both so that the student starts as the teacher:

    * D is already an x0 estimate, so its weight is 1 - c_skip (a convex blend: with CM's
      c_out / sd the weights sum to up to 1.2 and every x0 starts 20% too large);
    * the blend's width b is the boundary's own scale s_min, not sd = 0.5 (LCM, Luo et al. 2023,
      Sec. 4.1, scales its boundary time by 10 for the same reason): with b = sd, f keeps
      c_skip(0.16) = 91% of x~, noise included, so D would have to learn outputs of size
      sd^2 / s to denoise at low noise; a quick digits student could not (its 4-step samples,
      which end at t = 0.1, stayed noisy: classifier FD 111 against 28 at one step). With b = s_min,
      f = D to within 1% for s >= 10 s_min and the student starts as the teacher's E[x0 | x_t].

    The boundary condition holds exactly for any b: c_skip(s_min) = 1, f(x, t_min) = x / alpha(t_min).

    denoiser:       D(x [B, ...], t [B], **cond) -> x0_hat (an nn.Module when it has parameters).
    schedule, t_min: as for `ConsistencyStudent` (c_in and noise_input are D's own).
    boundary_width: b in units of s = sigma / alpha (None: s_min).
    """

    def __init__(self, denoiser: Callable[..., Tensor], schedule: Schedule, *, t_min: float | None = None,
                 boundary_width: float | None = None) -> None:
        super().__init__(denoiser, schedule, t_min=t_min)
        self.boundary_width = self.s_min if boundary_width is None else float(boundary_width)
        if not self.boundary_width > 0:
            raise ValueError(f"the boundary width must be > 0, got {self.boundary_width}")

    def blend(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(c_skip(s) / alpha, 1 - c_skip(s)) at times t [B], in t's compute dtype, written with
        d = alpha (s - s_min) so that both stay finite where alpha = 0:
        c_skip / alpha = b^2 alpha / (d^2 + b^2 alpha^2), 1 - c_skip = d^2 / (d^2 + b^2 alpha^2);
        exactly (1 / alpha, 0) at t <= t_min."""
        alpha, _, d = self.boundary_offset(t)
        b2 = self.boundary_width ** 2 * alpha * alpha
        return self.boundary_width ** 2 * alpha / (d * d + b2), d * d / (d * d + b2)

    def forward(self, x: Tensor, t: Tensor | float, **cond: Any) -> Tensor:
        """x: [B, ...] state at time t ([B] or scalar) -> x0_hat = f(x, t): [B, ...]."""
        t = expand_time(t, x)
        c_skip, c_denoised = self.blend(t)
        denoised = self.net(x, t.to(compute_dtype(x.dtype)), **cond)
        # f = c_skip(s) x~ + (1 - c_skip(s)) D, with c_skip(s) x~ = (c_skip / alpha) x
        return broadcast_to(c_skip, x) * x + broadcast_to(c_denoised, x) * denoised


class GuidanceInput(nn.Module):
    """A network that also takes the guidance scale w: net(x_in, c_noise, guidance=w, **cond).

    LCM's w-conditioning (Luo et al. 2023, Sec. 4.2) gives the student w through an embedding
    added to its timestep embedding. This wrapper does that for any network whose noise-level
    embedding is the output [B, ..., E] of a named submodule `embedding` (the digits UNet's
    `embed_noise`): a forward hook adds

        e_w = W2 SiLU(W1 phi(w)),   phi(w) = sinusoidal_features(w / 100, features),   W2 = 0 at start,

    so that the wrapped network equals the network for every w until W2 has trained (phi's
    highest angular frequency is then 10 per unit of w). E is the `out_features` of the
    submodule's last Linear layer. The network's parameters keep their names under `net.`, the
    embedding's are under `guidance.`; `guidance=None` leaves the embedding untouched.

    net:       net(x_in, c_noise, **cond) -> out (the network contract).
    embedding: the name of the submodule whose output is the noise-level embedding.
    features:  the size of phi(w).
    """

    def __init__(self, net: nn.Module, embedding: str, *, features: int = 32) -> None:
        super().__init__()
        try:
            module = net.get_submodule(embedding)
        except AttributeError:
            raise ValueError(f"the network has no module {embedding!r} to add the guidance embedding to") from None
        linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"module {embedding!r} has no Linear layer whose width the guidance embedding could take")
        width = linears[-1].out_features
        self.net, self.embedding, self.features = net, embedding, int(features)
        self.guidance = nn.Sequential(nn.Linear(self.features, width), nn.SiLU(), nn.Linear(width, width))
        nn.init.zeros_(self.guidance[-1].weight)
        nn.init.zeros_(self.guidance[-1].bias)
        self.__dict__["_w"] = None  # the scales of the call in progress ([B]), read by the hook
        module.register_forward_hook(self._add_embedding)

    def _add_embedding(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        w = self.__dict__["_w"]
        if w is None:
            return output
        e = self.guidance(sinusoidal_features(w / 100.0, self.features).to(self.guidance[0].weight.dtype))
        return output + e.reshape(e.shape[0], *[1] * (output.dim() - 2), e.shape[-1]).to(output.dtype)

    def forward(self, x_in: Tensor, c_noise: Tensor, guidance: Tensor | float | None = None, **cond: Any) -> Tensor:
        """x_in: [B, ...], c_noise: [B], guidance: w as [B], a 0-dim tensor or a number (None: none)."""
        w = None
        if guidance is not None:
            w = torch.as_tensor(guidance, device=x_in.device, dtype=torch.float32)
            w = w.reshape(-1).expand(x_in.shape[0]) if w.numel() == 1 else w.reshape(x_in.shape[0])
        self.__dict__["_w"] = w
        try:
            return self.net(x_in, c_noise, **cond)
        finally:
            self.__dict__["_w"] = None


@torch.no_grad()
def ema_update(target: nn.Module, student: nn.Module, decay: float) -> None:
    """theta^- <- mu theta^- + (1 - mu) theta, in place (CM Algorithm 2, last line); buffers are
    copied. decay = mu in [0, 1]; mu = 0 makes the target the student itself (iCT Sec. 3.2)."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"the EMA decay must lie in [0, 1], got {decay}")
    for p_target, p_student in zip(target.parameters(), student.parameters(), strict=True):
        p_target.lerp_(p_student.detach(), 1.0 - decay)
    for b_target, b_student in zip(target.buffers(), student.buffers(), strict=True):
        b_target.copy_(b_student)


@dataclass(frozen=True)
class GuidanceRange:
    """LCM's w-conditioning (Luo et al. 2023, Sec. 4.2): each example draws a guidance scale
    w ~ U[w_min, w_max]; the teacher is D_w = D(x, t, **uncond) + w (D(x, t, **cond) - D(x, t, **uncond))
    (the engine's `guided`, w = 1 the conditional model) and the student receives w as cond[key]: [B].

    uncond: the conditioning keyword arguments of the unconditional branch (e.g. {"label": null}).
    """

    uncond: Mapping[str, Any] = field(default_factory=dict)
    w_min: float = 1.0
    w_max: float = 4.0
    key: str = "guidance"

    def __post_init__(self) -> None:
        if not self.w_min <= self.w_max:
            raise ValueError(f"guidance range needs w_min <= w_max, got [{self.w_min}, {self.w_max}]")

    def draw(self, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """[B] scales w ~ U[w_min, w_max] in like's compute dtype on its device (like: [B, ...])."""
        u = torch.rand(like.shape[0], generator=generator, device=like.device, dtype=torch.float64)
        return (self.w_min + (self.w_max - self.w_min) * u).to(compute_dtype(like.dtype))


def per_example_guided(teacher: DenoiserFn, w: Tensor, uncond: Mapping[str, Any]) -> DenoiserFn:
    """Classifier-free guidance with one scale per example (Ho & Salimans 2022, eq. 6, x0 form):
    D_w(x, t, c) = D(x, t, uncond) + w (D(x, t, c) - D(x, t, uncond)), w: [B]. With every w equal
    it is `parameterization.guided(teacher, w, uncond)`."""

    def guided_teacher(x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        d_cond = teacher(x, t, **cond)
        d_uncond = teacher(x, t, **{**cond, **uncond})
        return d_uncond + broadcast_to(w, x) * (d_cond - d_uncond)

    return guided_teacher


def ddim_step(teacher: DenoiserFn, x: Tensor, t: Tensor, s: Tensor, schedule: Schedule, *,
              space: Any = Euclidean(), cond: Mapping[str, Any] | None = None) -> Tensor:
    """One DDIM (eta = 0) step of the probability-flow ODE from t to s per example (Song et al. 2021,
    eq. 12): x_s = (sigma_s / sigma_t) x_t + (alpha_s - alpha_t sigma_s / sigma_t) D(x_t, t).
    x: [B, ...]; t, s: [B] with sigma_t > 0. The same step as `sample_ddim` over the grid [t, s, ...]."""
    alpha_t, sigma_t = schedule.alpha_sigma(t.double())
    alpha_s, sigma_s = schedule.alpha_sigma(s.double())
    c_x = sigma_s / sigma_t
    c_d = alpha_s - alpha_t * c_x
    denoised = teacher(x, t.to(compute_dtype(x.dtype)), **dict(cond or {}))
    return space.project(broadcast_to(c_x, x) * x + broadcast_to(c_d, x) * denoised)


def sampler_step(sampler: str | Callable[..., Tensor], teacher: DenoiserFn, x: Tensor, t: float, s: float,
                 schedule: Schedule, *, space: Any = Euclidean(), cond: Mapping[str, Any] | None = None,
                 generator: torch.Generator | None = None) -> Tensor:
    """One step of any registered sampler (or `SamplerFn`) from t to s, 0 < s < t, for the whole
    batch x: [B, ...] (one time pair). Samplers refuse grids that end above 0 (`Grid.build`), so
    this is `samplers.run_segment` over [t, s]: the run over [t, s, 0] from the state x, stopped
    by the contract's callback after its first step (an interior step: heun corrects it, a
    multistep solver takes it at order 1), without evaluating the step to 0."""
    sample = samplers.get(sampler) if isinstance(sampler, str) else sampler
    if not 0.0 < s < t:
        raise ValueError(f"sampler_step needs 0 < s < t, got t={t:g}, s={s:g}")
    ts = torch.tensor([t, s], dtype=torch.float64)
    return samplers.run_segment(sample, teacher, x, ts, schedule, space=space, generator=generator, cond=cond)


# d(a, b) of the consistency loss: (error [B, ...] projected, n_dof [B], **options) -> [B]
METRICS: Registry[Callable[..., Tensor]] = Registry("consistency metric")


@METRICS.register("l2")
def metric_l2(err: Tensor, n_dof: Tensor) -> Tensor:
    """|a - b|^2 / n_dof: squared L2 per degree of freedom (CM Sec. 3)."""
    return err.pow(2).flatten(1).sum(1) / n_dof


@METRICS.register("pseudo_huber")
def metric_pseudo_huber(err: Tensor, n_dof: Tensor, c: float = 0.00054) -> Tensor:
    """sqrt(|a - b|^2 / n_dof + c^2) - c: iCT's pseudo-Huber metric (Sec. 3.3, c = 0.00054 sqrt(d)
    on the unnormalised norm), here per degree of freedom, i.e. iCT's value / sqrt(d)."""
    return torch.sqrt(metric_l2(err, n_dof) + c * c) - c


# lambda of the consistency loss: (s_next [B], s [B]) -> [B], s = sigma / alpha at tau_{n+1}, tau_n
STEP_WEIGHTINGS: Registry[Callable[[Tensor, Tensor], Tensor]] = Registry("consistency weighting")


@STEP_WEIGHTINGS.register("uniform")
def weight_uniform(s_next: Tensor, s: Tensor) -> Tensor:
    """lambda = 1 (CM Sec. 3, consistency distillation)."""
    return torch.ones_like(s)


@STEP_WEIGHTINGS.register("inverse_step")
def weight_inverse_step(s_next: Tensor, s: Tensor) -> Tensor:
    """lambda = 1 / (s_{n+1} - s_n) (iCT Sec. 3.2): small steps, near the data, weigh more."""
    return 1.0 / (s_next - s)


def consistency_loss(
    student: DenoiserFn,
    target: DenoiserFn | None,
    teacher: DenoiserFn,
    x0: Tensor,
    schedule: Schedule,
    *,
    n_steps: int = 17,
    rho: float = 7.0,
    t_min: float | None = None,
    sampler: str | Callable[..., Tensor] = "ddim",
    metric: str = "l2",
    weighting: str = "uniform",
    metric_options: Mapping[str, Any] | None = None,
    space: Any = None,
    generator: torch.Generator | None = None,
    cond: Mapping[str, Any] | None = None,
    guidance: GuidanceRange | None = None,
) -> Tensor:
    """Per-example consistency distillation loss, [B] (CM Algorithm 2; LCM for `guidance`).

    student: f_theta (a `ConsistencyStudent`), differentiated; target: f_theta^- (its EMA copy),
    evaluated without gradients, or None for the stop-gradient student itself (iCT's mu = 0);
    teacher: the diffusion model's denoiser D(x, t, **cond). x0: [B, ...] data.
    n_steps, rho, t_min: the grid `consistency_grid(schedule, n_steps, t_min=..., rho=...)`
    (t_min default: student.t_min where the student has one, else `boundary_time`).
    sampler: the teacher's ODE step: "ddim" (default) steps every example from its own tau_{n+1}
    (`ddim_step`, n drawn per example); any other registered sampler name (or function) takes one
    step of that sampler for the whole batch (`sampler_step`), so n is then drawn once per batch
    (the same expected loss). The step should solve the probability-flow ODE (a deterministic sampler).
    metric: "l2" | "pseudo_huber" (`METRICS`, with `metric_options`); weighting: "uniform" |
    "inverse_step" (`STEP_WEIGHTINGS`). All noise comes from `space.randn_like` (default
    Euclidean) and every state is projected, so ZeroCoM states stay centred. cond: keyword
    arguments for every call; guidance: a `GuidanceRange` (w-conditioned student of the guided teacher).
    """
    space = Euclidean() if space is None else space
    cond = dict(cond or {})
    if t_min is None:
        t_min = getattr(student, "t_min", None)
    ts = consistency_grid(schedule, n_steps, t_min=t_min, rho=rho).to(x0.device)
    batch, dtype = x0.shape[0], compute_dtype(x0.dtype)
    per_example = isinstance(sampler, str) and sampler == "ddim"
    n = torch.randint(n_steps, (batch if per_example else 1,), generator=generator, device=x0.device)
    n = n.expand(batch)
    t_next, t_now = ts[n], ts[n + 1]  # tau_{n+1} > tau_n: [B] float64 (the grid is descending)

    x0 = space.project(x0)
    eps = space.randn_like(x0, generator)
    alpha, sigma = schedule.alpha_sigma(t_next)
    x_next = space.project(broadcast_to(alpha, x0) * x0 + broadcast_to(sigma, x0) * eps)  # x_{n+1} (Alg. 2)

    student_cond = dict(cond)
    if guidance is not None:  # LCM: w ~ U[w_min, w_max] per example, the teacher guided at w
        w = guidance.draw(x0, generator)
        teacher = per_example_guided(teacher, w, guidance.uncond)
        student_cond[guidance.key] = w
    with torch.no_grad():  # x^_n = Phi(x_{n+1}; tau_{n+1} -> tau_n), one teacher ODE step     (Alg. 2)
        if per_example:
            x_now = ddim_step(teacher, x_next, t_next, t_now, schedule, space=space, cond=cond)
        else:
            t_pair = ts[n[:1]], ts[n[:1] + 1]
            x_now = sampler_step(sampler, teacher, x_next, float(t_pair[0]), float(t_pair[1]), schedule,
                                 space=space, cond=cond, generator=generator)
        goal = (student if target is None else target)(x_now, t_now.to(dtype), **student_cond)  # f^-(x^_n, tau_n)
    pred = student(x_next, t_next.to(dtype), **student_cond)  # f_theta(x_{n+1}, tau_{n+1})
    err = space.project(pred - goal.detach())
    d = METRICS.get(metric)(err, space.n_dof(x0), **dict(metric_options or {}))
    s_next, s_now = (schedule.sigma(t) / schedule.alpha(t) for t in (t_next, t_now))  # VE noise levels
    return STEP_WEIGHTINGS.get(weighting)(s_next, s_now).to(d.dtype) * d  # lambda(tau_n) d(., .)  (CM eq. 7)


__all__ = [
    "ConsistencyStudent",
    "DenoiserStudent",
    "GuidanceInput",
    "GuidanceRange",
    "consistency_loss",
    "consistency_grid",
    "boundary_time",
    "ema_update",
    "ddim_step",
    "sampler_step",
    "per_example_guided",
    "METRICS",
    "STEP_WEIGHTINGS",
]
