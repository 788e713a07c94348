"""One denoiser contract for the whole engine: D(x, t, **cond) -> x0_hat.

A raw network `net(x_in, c_noise, **cond)` may predict eps, x0, v, a flow velocity, or EDM's
preconditioned F. `Denoiser` wraps it into the estimate of the clean data x0 that every sampler
and every loss speaks to. All adapters live in this file, each a small class registered by name.

With x_t = alpha x0 + sigma eps (see `schedules`), the targets and their inversions are

    eps:   x0 = (x - sigma eps_hat) / alpha                      (Ho et al. 2020)
    x0:    x0 = x0_hat
    v:     v = alpha eps - sigma x0;  x0 = (alpha x - sigma v_hat) / (alpha^2 + sigma^2)
                                                                (Salimans & Ho 2022, eq. 12)
    flow:  u = eps - x0;  x0 = (x - sigma u_hat) / (alpha + sigma)   (rectified flow velocity)
    edm:   in VE coordinates x~ = x / alpha, s = sigma / alpha (Karras et al. 2022, eq. 7, Table 1):
           D = c_skip x~ + c_out F(c_in x~, c_noise),  c_skip = sd^2 / (s^2 + sd^2),
           c_out = s sd / sqrt(s^2 + sd^2),  c_in = 1 / sqrt(s^2 + sd^2),  c_noise = log(s) / 4
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, NamedTuple, Protocol

import torch
from torch import Tensor, nn

from diffusekit.core.registry import Registry
from diffusekit.core.schedules import Schedule


class DenoiserFn(Protocol):
    """Anything that maps (x [B, ...], t [B] or scalar, **cond) to an x0 estimate of x's shape."""

    def __call__(self, x: Tensor, t: Tensor, **cond) -> Tensor: ...


def expand_time(t: Tensor | float, x: Tensor) -> Tensor:
    """t as a [B] tensor on x's device (a scalar is broadcast to the batch)."""
    t = torch.as_tensor(t, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    return t


def broadcast_to(v: Tensor, x: Tensor) -> Tensor:
    """[B] -> [B, 1, ..., 1] in x's dtype, to scale x of shape [B, ...]."""
    return v.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


class Prediction:
    """How a network's output relates to x0. Every parameterisation here is linear in the state
    and the output, x0_hat = a(t) x + b(t) out, so a subclass defines `x0_coefficients` (a, b)
    and `target`; `input_scale` is 1 unless `scales_input` (preconditioning). `Denoiser`
    applies them."""

    scales_input = False

    def input_scale(self, alpha: Tensor, sigma: Tensor) -> Tensor:
        """Factor applied to x before the network (1 unless preconditioned)."""
        return torch.ones_like(alpha)

    def x0_coefficients(self, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """(a, b) with x0_hat = a x + b out, for alpha, sigma of any (broadcastable) shape."""
        raise NotImplementedError

    def target(self, x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """What an ideal network outputs for data x0 and noise eps."""
        raise NotImplementedError


PREDICTIONS: Registry[Prediction] = Registry("prediction")


class EpsPrediction(Prediction):
    def x0_coefficients(self, alpha, sigma):
        return 1.0 / alpha, -sigma / alpha  # x0 = (x - sigma eps) / alpha

    def target(self, x0, eps, alpha, sigma):
        return eps


class X0Prediction(Prediction):
    def x0_coefficients(self, alpha, sigma):
        return torch.zeros_like(alpha), torch.ones_like(alpha)

    def target(self, x0, eps, alpha, sigma):
        return x0


class VPrediction(Prediction):
    def x0_coefficients(self, alpha, sigma):
        norm = alpha * alpha + sigma * sigma  # x0 = (alpha x - sigma v) / (alpha^2 + sigma^2)
        return alpha / norm, -sigma / norm

    def target(self, x0, eps, alpha, sigma):
        return alpha * eps - sigma * x0


class FlowPrediction(Prediction):
    def x0_coefficients(self, alpha, sigma):
        return 1.0 / (alpha + sigma), -sigma / (alpha + sigma)  # x0 = (x - sigma u) / (alpha + sigma)

    def target(self, x0, eps, alpha, sigma):
        return eps - x0


class EDMPreconditioning(Prediction):
    """Karras et al. 2022 preconditioning, valid for any schedule via VE coordinates."""

    scales_input = True

    def __init__(self, sigma_data: float = 0.5) -> None:
        self.sigma_data = sigma_data

    def _coefficients(self, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s, sd = sigma / alpha, self.sigma_data
        denom = s * s + sd * sd
        return sd * sd / denom, s * sd / denom.sqrt(), 1.0 / denom.sqrt()  # c_skip, c_out, c_in

    def input_scale(self, alpha, sigma):
        return self._coefficients(alpha, sigma)[2] / alpha  # c_in applied to x~ = x / alpha

    def x0_coefficients(self, alpha, sigma):
        c_skip, c_out, _ = self._coefficients(alpha, sigma)
        return c_skip / alpha, c_out  # D = c_skip x~ + c_out F, x~ = x / alpha

    def target(self, x0, eps, alpha, sigma):
        c_skip, c_out, _ = self._coefficients(alpha, sigma)
        return (x0 - c_skip * (x0 + (sigma / alpha) * eps)) / c_out  # EDM eq. 8's effective target


PREDICTIONS.register("eps", EpsPrediction())
PREDICTIONS.register("x0", X0Prediction())
PREDICTIONS.register("v", VPrediction())
PREDICTIONS.register("flow", FlowPrediction())
PREDICTIONS.register("edm", EDMPreconditioning())

# What the network receives as its noise level, c_noise: [B].
NOISE_INPUTS: Registry[Callable[[Tensor, Schedule], Tensor]] = Registry("noise input")
# (named functions, not lambdas, so that a Denoiser pickles)


def _time(t: Tensor, schedule: Schedule) -> Tensor:
    return t


def _time_1000(t: Tensor, schedule: Schedule) -> Tensor:
    return 1000.0 * t


def _log_snr(t: Tensor, schedule: Schedule) -> Tensor:
    return schedule.log_snr(t)


def _edm_noise(t: Tensor, schedule: Schedule) -> Tensor:
    """Karras et al. 2022, Table 1: c_noise = ln(sigma) / 4, in VE coordinates (ln s = -log_snr / 2)."""
    return -schedule.log_snr(t) / 8.0


NOISE_INPUTS.register("t", _time)
NOISE_INPUTS.register("t1000", _time_1000)
NOISE_INPUTS.register("log_snr", _log_snr)
NOISE_INPUTS.register("edm", _edm_noise)


def _train_step(t: Tensor, schedule: Schedule) -> Tensor:
    """The training-step index k of t = (k + 1) / N on a discrete schedule's N-step grid
    (`vp_discrete`): diffusers' integer timestep (999 at t = 1), fractional between grid points."""
    if not schedule.n_train_steps:
        raise ValueError("noise input 'train_step' needs a schedule with n_train_steps (vp_discrete)")
    return t * schedule.n_train_steps - 1.0


NOISE_INPUTS.register("train_step", _train_step)


@dataclass(slots=True, eq=False)
class _PreparedTime:
    """What `Denoiser.prepare_times` evaluated for one 0-dim time tensor t, so that
    D(x, t) = a x + b net(x * scale, c_noise) needs no schedule arithmetic.

    t:       the time tensor itself (held, so that its id stays its own while prepared).
    a, b:    0-dim x0 coefficients, x0_hat = a x + b out.
    scale:   0-dim input scale (preconditioning), or None for none.
    c_noise: the 0-dim noise input, or None when only `c_noise_batch` was made.
    c_noise_batch: c_noise expanded to [B] in the dtype of the batch last seen (or None yet);
             its element 0 stands for the 0-dim value when `c_noise` is None.
    """

    t: Tensor
    a: Tensor
    b: Tensor
    scale: Tensor | None
    c_noise: Tensor | None
    c_noise_batch: Tensor | None

    def noise_input_for(self, x: Tensor) -> Tensor:
        """c_noise as [B] in x's dtype (x: [B, ...]), kept for the next call with that batch."""
        batch = self.c_noise_batch
        if batch is None or batch.shape[0] != x.shape[0] or batch.dtype != x.dtype:
            value = self.c_noise if self.c_noise is not None else batch[0]
            batch = self.c_noise_batch = value.to(x.dtype).expand(x.shape[0])
        return batch


class _PreparedCall(NamedTuple):
    """The callable `prepare_times` returned last, with what it was made for (to reuse it)."""

    times: Sequence[Tensor]
    batch: int | None
    net: Callable[..., Tensor]
    prediction: Prediction
    noise_input: Callable[[Tensor, Schedule], Tensor]
    call: Callable[..., Tensor]


class Denoiser(nn.Module):
    """D(x, t, **cond) -> x0_hat around a raw network.

    net:        callable net(x_in [B, ...], c_noise [B], **cond) -> output of x's shape.
    schedule:   the `Schedule` that defines alpha(t), sigma(t).
    prediction: "eps" | "x0" | "v" | "flow" | "edm" (EDM preconditioning) or a `Prediction`.
    noise_input: what the network sees as c_noise: "t" (default; "edm" for prediction "edm"),
                "t1000", "log_snr", "train_step" (k of t = (k+1)/N, discrete), or a callable (t [B], schedule) -> [B].

    The network is a submodule, so `Denoiser` can be trained, moved and saved like one.

    Fast path: samplers call `prepare_times(times)` once before their loop with the 0-dim time
    tensors they will pass; the schedule is then evaluated for the whole grid in one vectorised
    call, and each step only looks its coefficients up (by tensor identity), so the per-step cost
    around the network is a few tensor operations and no schedule arithmetic.
    """

    def __init__(
        self,
        net: Callable[..., Tensor],
        schedule: Schedule,
        prediction: str | Prediction = "eps",
        *,
        noise_input: str | Callable[[Tensor, Schedule], Tensor] | None = None,
        sigma_data: float | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.schedule = schedule
        if isinstance(prediction, str):
            name = prediction
            prediction = PREDICTIONS.get(prediction)
            if name == "edm" and sigma_data is not None:
                prediction = EDMPreconditioning(sigma_data)
        self.prediction = prediction
        if noise_input is None:
            noise_input = "edm" if isinstance(prediction, EDMPreconditioning) else "t"
        self.noise_input = NOISE_INPUTS.get(noise_input) if isinstance(noise_input, str) else noise_input
        self._prepared: dict[int, _PreparedTime] = {}

    def prepare_times(self, times: Sequence[Tensor], stacked: Tensor | None = None, *,
                      alpha_sigma: tuple[Tensor, Tensor] | None = None, schedule: Schedule | None = None,
                      batch: int | None = None) -> Callable[..., Tensor]:
        """Evaluate the x0 coefficients (a, b), c_noise and the input scale for every 0-dim time
        tensor in `times` at once; later calls with one of these very tensors skip the schedule.

        stacked:     the same times as one [n] tensor, if the caller has it.
        alpha_sigma: ([n], [n]) alpha(t), sigma(t) at those times under `schedule`, if the
                     caller has evaluated it already (a sampler's grid); any dtype and device.
                     Used only when `schedule` is this denoiser's own schedule.
        batch:       the batch size B of the states to come: c_noise is then expanded to [B]
                     here, once per time, instead of at every call.

        Each call replaces the previous table (a sampling run prepares its whole grid once),
        except that a call with the very list of times of the previous call (and the same
        batch, network and parameterisation) keeps it: samplers hand out the same time tensors
        for every run of an equal grid (`scalar_cache`). Entries are keyed by identity and hold
        their tensor (so that no other tensor can have its id while it is prepared); any other
        time, even an equal one, takes the ordinary path. The prepared times must not be
        changed in place afterwards (samplers never do; see `diffusekit.core.samplers`).

        Returns the callable a sampling loop should use: with no module hooks registered on this
        denoiser, a closure over the table and the network that does exactly what `forward`
        does for a prepared time (skipping nn.Module's call machinery and attribute lookups, a
        few microseconds per step); with hooks, `self`, so that they fire.
        """
        hooked = bool(self._forward_hooks or self._forward_pre_hooks)
        kept = self.__dict__.get("_prepared_call")
        if (kept is not None and not hooked and len(times) > 0 and kept.times is times and kept.batch == batch
                and kept.net is self.net and kept.prediction is self.prediction
                and kept.noise_input is self.noise_input):
            return kept.call
        table: dict[int, _PreparedTime] = {}
        if len(times) > 0:
            t = torch.stack(list(times)) if stacked is None else stacked
            if alpha_sigma is None or schedule is not self.schedule:
                alpha_sigma = self.schedule.alpha_sigma(t)
            alpha, sigma = alpha_sigma
            a, b = self.prediction.x0_coefficients(alpha, sigma)
            per_time = [a, b]
            if self.prediction.scales_input:
                per_time.append(self.prediction.input_scale(alpha, sigma))
            # one conversion for all coefficient columns, then one unbind per column
            columns = torch.stack([c.to(torch.float64) for c in per_time])
            columns = columns.to(device=t.device, dtype=t.dtype).unbind(0)
            a_col, b_col = columns[0].unbind(0), columns[1].unbind(0)
            s_col = columns[2].unbind(0) if len(columns) > 2 else [None] * len(times)
            c_noise = self.noise_input(t, self.schedule).to(t.dtype)
            if batch is None:  # 0-dim per time; expanded to the batch at the first call
                c_col, expanded = c_noise.unbind(0), [None] * len(times)
            else:  # [B] views per time, made here (their element 0 stands for the 0-dim value)
                c_col, expanded = [None] * len(times), c_noise[:, None].expand(len(times), batch).unbind(0)
            table = {id(ti): _PreparedTime(ti, a_i, b_i, s_i, c_i, e_i) for ti, a_i, b_i, c_i, s_i, e_i
                     in zip(times, a_col, b_col, c_col, s_col, expanded)}
        # plain attributes: nn.Module.__setattr__ would cost more than the whole lookup saves
        self.__dict__["_prepared"] = table
        self.__dict__["_prepared_call"] = None
        if hooked:
            return self
        net, forward = self.net, self.forward

        def prepared_denoiser(x: Tensor, t: Tensor, **cond) -> Tensor:
            """D(x, t, **cond) for a prepared grid time t (else `forward`): x: [B, ...]."""
            entry = table.get(id(t))  # found: t is entry.t (the entry keeps that id taken)
            if entry is None:
                return forward(x, t, **cond)
            c_noise = entry.c_noise_batch
            if c_noise is None or c_noise.shape[0] != x.shape[0] or c_noise.dtype != x.dtype:
                c_noise = entry.noise_input_for(x)
            scale = entry.scale
            out = net(x if scale is None else x * scale, c_noise, **cond)
            return (entry.a * x).addcmul_(entry.b, out)  # x0_hat = a x + b out

        self.__dict__["_prepared_call"] = _PreparedCall(times, batch, net, self.prediction, self.noise_input,
                                                        prepared_denoiser)
        return prepared_denoiser

    def __getstate__(self) -> dict:
        """Pickle without the prepared table and its closure (they belong to one sampling run)."""
        state = super().__getstate__()
        state["_prepared"], state["_prepared_call"] = {}, None
        return state

    def _coefficients_at(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """(a, b, c_noise, input scale or None) at times t (any shape): x0_hat = a x + b out."""
        alpha, sigma = self.schedule.alpha_sigma(t)
        a, b = self.prediction.x0_coefficients(alpha, sigma)
        scale = self.prediction.input_scale(alpha, sigma) if self.prediction.scales_input else None
        return a, b, self.noise_input(t, self.schedule), scale

    def coefficients(self, x: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor, Tensor]:
        """(t [B], alpha [B, 1, ...], sigma [B, 1, ...]) for a state x at time t."""
        t = expand_time(t, x)
        alpha, sigma = self.schedule.alpha_sigma(t)
        return t, broadcast_to(alpha, x), broadcast_to(sigma, x)

    def forward(self, x: Tensor, t: Tensor | float, **cond) -> Tensor:
        """x: [B, ...] noisy state at time t ([B] or scalar) -> x0_hat: [B, ...]."""
        entry = self._prepared.get(id(t))
        if entry is not None:  # a prepared grid time (this very tensor): 0-dim coefficients
            a, b, scale, c_noise = entry.a, entry.b, entry.scale, entry.noise_input_for(x)
        else:
            a, b, c_noise, scale = self._coefficients_at(expand_time(t, x))  # [B] each
            a, b, c_noise = broadcast_to(a, x), broadcast_to(b, x), c_noise.to(x.dtype)
            scale = None if scale is None else broadcast_to(scale, x)
        out = self.net(x if scale is None else x * scale, c_noise, **cond)
        return (a * x).addcmul_(b, out)  # x0_hat = a x + b out

    def target(self, x0: Tensor, eps: Tensor, t: Tensor | float) -> Tensor:
        """The raw network's regression target for data x0 and noise eps at time t."""
        _, alpha, sigma = self.coefficients(x0, t)
        return self.prediction.target(x0, eps, alpha, sigma)


def guided(denoiser: DenoiserFn, scale: float, uncond: dict) -> DenoiserFn:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6, in x0 form):

    D_w(x, t, c) = D(x, t, uncond) + w (D(x, t, c) - D(x, t, uncond)).

    `uncond` holds the conditioning keyword arguments that replace `cond` for the
    unconditional branch (e.g. {"label": null_label}); scale 1 is the plain conditional model.
    """

    def guided_denoiser(x: Tensor, t: Tensor, **cond) -> Tensor:
        d_cond = denoiser(x, t, **cond)
        if scale == 1.0:
            return d_cond
        d_uncond = denoiser(x, t, **{**cond, **uncond})
        return d_uncond + scale * (d_cond - d_uncond)

    return guided_denoiser


__all__ = [
    "Denoiser",
    "DenoiserFn",
    "Prediction",
    "PREDICTIONS",
    "NOISE_INPUTS",
    "guided",
    "expand_time",
    "broadcast_to",
]
