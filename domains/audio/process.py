"""The audio domain's diffusion process: the engine's Gaussian diffusion over the clean log-mel,
optionally over its residual to the noisy log-mel, optionally started from the noisy log-mel.

    process = MelDiffusion.from_config(cfg.process)
    loss = process.training_loss(network, batch)        # [B]
    mel = process.generate(network, batch, sampler="ddim", steps=8)   # [B, 1, M, T]

With y the noisy log-mel (batch["cond"]["noisy"]) and x0 the clean one, the diffused variable is

    z0 = (x0 - y) / residual_scale    (residual: true; the residual over the conditional input,
                                       as SR3 does over the bicubic image, Saharia et al. 2021,
                                       and "predict and refine", Whang et al. 2022)
    z0 = x0                           (residual: false)

and the estimate is x0_hat = y + residual_scale * z0_hat (or z0_hat). Sampling starts either at
the schedule's t_max from pure noise (t_start >= t_max), or at t_start < t_max from the forward-
noised input, z_{t_start} = alpha z_y + sigma eps with z_y the value of z for x0 = y (the noisy
mel itself: z_y = 0 for the residual), as SDEdit does (Meng et al. 2022) and as SGMSE+ /
StoRM start their reverse process near the noisy mixture (Richter et al. 2023; Lemercier et al.
2023). Any engine sampler runs on the shortened time grid.

`StochasticRegeneration` (StoRM, Lemercier et al. 2023, "StoRM: A Diffusion-based Stochastic
Regeneration Model for Speech Enhancement and Dereverberation", Sec. III) puts a predictive model
in front: a one-step regression network P gives y_hat = P(y), and the diffusion above runs with
y_hat in the place of y (conditioned on it, diffusing x0 - y_hat, starting near it):

    L = L_diffusion(x0 | y_hat) + predictor_weight * |P(y) - x0|^2 / n,   y_hat = sg(P(y))

(StoRM eq. 10 with the score loss replaced by the engine's weighted x0 loss; sg: the diffusion loss
does not train P, so P is exactly the one-step regression baseline with the same network and
steps, and "what diffusion adds over regression" is read off one model; see core/regeneration.py,
which holds the loss and the network pair.) The predictor removes most
of the noise; the diffusion regenerates what it over-suppressed, without the breathing and
phoneme-confusion artefacts of a diffusion started from the mixture alone (StoRM, Sec. I).

`OBJECTIVES[model.objective](cfg)` builds the process of a config: `MelDiffusion` ("diffusion"),
the one-step `baselines.RegressionProcess` ("regression") or `StochasticRegeneration` ("storm").
The domain wraps it in `Enhancer`, whose `generate` returns an `Enhanced` record (the clean
log-mel estimate together with the batch it was made for), so that the writers have the noisy
and clean references at hand.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import torch
from omegaconf import DictConfig
from torch import Tensor

from diffusekit.core.errors import ConfigError
from diffusekit.core.process import GaussianDiffusion
from diffusekit.core.regeneration import regeneration_loss
from diffusekit.core.registry import Registry
from diffusekit.domains.audio.baselines import RegressionProcess

# keys of the `process:` section read here (the rest build the engine's GaussianDiffusion)
OWN_KEYS = ("residual", "residual_scale", "t_start")


@dataclass(frozen=True, eq=False)
class MelDiffusion:
    """Conditional diffusion over log-mels [B, 1, M, T] conditioned on batch["cond"]["noisy"].

    inner:          the engine's process (schedule, prediction, loss weighting, sampler).
    residual:       diffuse (x0 - noisy) / residual_scale instead of x0.
    residual_scale: the residual's scale (about its standard deviation).
    t_start:        sampling starts at min(t_start, t_max) from the forward-noised noisy input.
    """

    inner: GaussianDiffusion
    residual: bool = False
    residual_scale: float = 1.0
    t_start: float = 1.0

    def __post_init__(self) -> None:
        if not self.residual_scale > 0:
            raise ValueError(f"process.residual_scale must be > 0, got {self.residual_scale}")
        if not 0.0 < self.t_start:
            raise ValueError(f"process.t_start must be > 0, got {self.t_start}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "MelDiffusion":
        """From the `process:` section: OWN_KEYS here, the other keys the engine's process."""
        own = {key: section[key] for key in OWN_KEYS if key in section and section[key] is not None}
        inner = GaussianDiffusion.from_config({k: section[k] for k in section if k not in OWN_KEYS})
        return cls(inner, residual=bool(own.get("residual", False)),
                   residual_scale=float(own.get("residual_scale", 1.0)),
                   t_start=float(own.get("t_start", 1.0)))

    @property
    def sampler(self) -> str:
        return self.inner.sampler

    @property
    def steps(self) -> int:
        return self.inner.steps

    def to_z(self, x0: Tensor, noisy: Tensor) -> Tensor:
        """The diffused variable z0 [B, 1, M, T] of clean log-mels x0 given noisy log-mels."""
        return (x0 - noisy) / self.residual_scale if self.residual else x0

    def from_z(self, z0: Tensor, noisy: Tensor) -> Tensor:
        """The clean log-mel estimate of a z0 estimate (inverse of `to_z`)."""
        return noisy + self.residual_scale * z0 if self.residual else z0

    def training_loss(self, network: Callable[..., Tensor], batch: dict,
                      generator: torch.Generator | None = None) -> Tensor:
        """[B] the engine's weighted denoising loss on z0 (see `losses.denoising_loss`)."""
        noisy = batch["cond"]["noisy"]
        return self.inner.training_loss(network, {**batch, "x0": self.to_z(batch["x0"], noisy)},
                                        generator=generator)

    def generate(self, network: Callable[..., Tensor], batch: dict, *, sampler: str | None = None,
                 steps: int | None = None, grid: str | None = None,
                 generator: torch.Generator | None = None,
                 callback: Callable[[dict], None] | None = None, **sampler_options: Any) -> Tensor:
        """Clean log-mel estimates [B, 1, M, T] for batch["cond"]["noisy"] (batch["x0"] gives
        only the shape); `steps` sampler steps from t_start (or t_max) down to 0."""
        noisy = batch["cond"]["noisy"]
        schedule = self.inner.schedule
        t0 = min(self.t_start, schedule.t_max)
        eps = torch.randn(noisy.shape, generator=generator, device=noisy.device, dtype=noisy.dtype)
        if t0 < schedule.t_max:
            # samplers start from sigma_0 * noise; passing (alpha_0 z_y + sigma_0 eps) / sigma_0
            # starts them at the forward-noised noisy input (SDEdit, Meng et al. 2022, eq. 3)
            alpha, sigma = schedule.alpha_sigma(torch.tensor(t0, dtype=torch.float64))
            z_y = self.to_z(noisy, noisy)
            eps = (float(alpha) * z_y + float(sigma) * eps) / float(sigma)
        z0 = self.inner.generate(network, batch, sampler=sampler, steps=steps, grid=grid,
                                 generator=generator, callback=callback, t_max=t0, noise=eps,
                                 **sampler_options)
        return self.from_z(z0, noisy)

    def inpaint(self, network: Callable[..., Tensor], batch: dict, known: Tensor, *,
                method: Any = "replace", sampler: str | None = None, steps: int | None = None,
                grid: str | None = None, generator: torch.Generator | None = None,
                callback: Callable[[dict], None] | None = None, **sampler_options: Any) -> Tensor:
        """Clean log-mel estimates [B, 1, M, T] that keep batch["x0"] where `known` ([B, 1, 1, T]
        frames, or batch["x0"]'s shape; bool) is True, conditioned on batch["cond"]["noisy"]
        (for packet-loss concealment: the gapped log-mel). The known part of z0 is
        to_z(x0, noisy); with t_start < t_max the unknown part starts at the forward-noised
        input as in `generate`, the known part on its own noising path (`core.inpainting`)."""
        noisy, x0 = batch["cond"]["noisy"], batch["x0"]
        known = torch.as_tensor(known, device=x0.device).bool().expand_as(x0)
        schedule = self.inner.schedule
        t0 = min(self.t_start, schedule.t_max)
        eps = torch.randn(noisy.shape, generator=generator, device=noisy.device, dtype=noisy.dtype)
        if t0 < schedule.t_max:  # SDEdit's start for the unknown part (see `generate`)
            alpha, sigma = schedule.alpha_sigma(torch.tensor(t0, dtype=torch.float64))
            started = (float(alpha) * self.to_z(noisy, noisy) + float(sigma) * eps) / float(sigma)
            eps = torch.where(known, eps, started)
        z0 = self.inner.inpaint(network, {**batch, "x0": self.to_z(x0, noisy)}, known,
                                method=method, sampler=sampler, steps=steps, grid=grid,
                                generator=generator, callback=callback, t_max=t0, noise=eps,
                                **sampler_options)
        return self.from_z(z0, noisy)


@dataclass(frozen=True, eq=False)
class StochasticRegeneration:
    """StoRM (see the module docstring): `network` is a `core.regeneration.PredictorDenoiser`.

    diffusion:        the conditional mel diffusion run on the predictor's estimate.
    predict:          (predictor network, batch) -> y_hat [B, 1, M, T], the one-step regression.
    predictor_weight: weight of the predictor's error in the training loss.
    predictor_power:  that error's power: 2, the mean squared error (StoRM; the conditional
                      mean), or 1, the absolute error (the conditional median).
    see_mixture:      the denoiser is also conditioned on the noisy mixture y (cond "mixture"),
                      so that it can restore what the predictor removed wrongly; StoRM's score
                      network sees y_hat only.
    """

    diffusion: MelDiffusion
    predict: Callable[[Callable[..., Tensor], dict], Tensor]
    predictor_weight: float = 1.0
    see_mixture: bool = False
    predictor_power: float = 2.0

    @property
    def sampler(self) -> str:
        return self.diffusion.sampler

    @property
    def steps(self) -> int:
        return self.diffusion.steps

    def on_estimate(self, batch: dict, estimate: Tensor) -> dict:
        """The batch with the predictor's estimate [B, 1, M, T] as the diffusion's condition
        "noisy" (and, with `see_mixture`, the noisy mixture as "mixture")."""
        cond = {**batch["cond"], "noisy": estimate}
        if self.see_mixture:
            cond["mixture"] = batch["cond"]["noisy"]
        return {**batch, "cond": cond}

    def training_loss(self, network: Any, batch: dict,
                      generator: torch.Generator | None = None) -> Tensor:
        """[B] diffusion loss given sg(P(y)) + predictor_weight * the predictor's mean error to
        `predictor_power` (`core.regeneration.regeneration_loss`)."""
        return regeneration_loss(
            self.predict(network.predictor, batch), batch["x0"],
            lambda base: self.diffusion.training_loss(
                network.denoiser, self.on_estimate(batch, base), generator=generator),
            self.predictor_weight, power=self.predictor_power)

    def generate(self, network: Any, batch: dict, **options: Any) -> Tensor:
        """Clean log-mel estimates [B, 1, M, T]: one predictor call, then the diffusion's
        sampler (`options` as `MelDiffusion.generate`)."""
        estimate = self.predict(network.predictor, batch)
        return self.diffusion.generate(network.denoiser, self.on_estimate(batch, estimate),
                                       **options)

    def inpaint(self, network: Any, batch: dict, known: Tensor, **options: Any) -> Tensor:
        """Clean log-mel estimates [B, 1, M, T] keeping batch["x0"] where `known`: one predictor
        call on the batch's condition, then the diffusion's inpainting around its estimate
        (`MelDiffusion.inpaint`; the known part's residual is taken over the estimate)."""
        estimate = self.predict(network.predictor, batch)
        return self.diffusion.inpaint(network.denoiser, self.on_estimate(batch, estimate), known,
                                      **options)


def diffusion_process(cfg: DictConfig) -> MelDiffusion:
    """The conditional mel diffusion (the engine's Gaussian process inside) from `process`."""
    return MelDiffusion.from_config(cfg.process)


def regeneration_process(cfg: DictConfig) -> StochasticRegeneration:
    """StoRM: the one-step regression in front of the mel diffusion (`model.predictor_weight`),
    whose sampling starts at `model.t_start` from the forward-noised estimate."""
    diffusion = dataclasses.replace(diffusion_process(cfg),
                                    t_start=float(cfg.model.get("t_start", 1.0)))
    power = float(cfg.model.get("predictor_power", 2.0))
    if power <= 0:
        raise ConfigError(f"model.predictor_power must be > 0 (2: squared error, 1: absolute), "
                          f"got {power:g}")
    return StochasticRegeneration(diffusion, RegressionProcess().predict,
                                  float(cfg.model.get("predictor_weight", 1.0)),
                                  see_mixture=bool(cfg.model.get("see_mixture", False)),
                                  predictor_power=power)


# model.objective -> factory(cfg) -> process with training_loss / generate
OBJECTIVES: Registry[Callable[[DictConfig], Any]] = Registry("audio objective")
OBJECTIVES.register("diffusion", diffusion_process)
OBJECTIVES.register("regression", lambda cfg: RegressionProcess())
OBJECTIVES.register("storm", regeneration_process)


@dataclass
class Enhanced:
    """A clean log-mel estimate `mel` [B, 1, M, T] and the batch it was generated for."""

    mel: Tensor
    batch: dict


@dataclass(frozen=True, eq=False)
class Enhancer:
    """A process whose `generate` returns `Enhanced` (training is the inner process's)."""

    inner: Any

    @property
    def sampler(self) -> str | None:
        return getattr(self.inner, "sampler", None)

    def training_loss(self, network, batch: dict, generator: torch.Generator | None = None,
                      ) -> Tensor:
        return self.inner.training_loss(network, batch, generator=generator)

    def generate(self, network, batch: dict, **options: Any) -> Enhanced:
        return Enhanced(self.inner.generate(network, batch, **options), batch)

    def inpaint(self, network, batch: dict, known: Tensor, **options: Any) -> Enhanced:
        """The inner process's `inpaint` (`ConfigError` for one without, the one-step regression)."""
        if not callable(getattr(self.inner, "inpaint", None)):
            raise ConfigError(f"the audio model's objective ({type(self.inner).__name__}) cannot "
                              "inpaint: train it with model.objective=storm or diffusion")
        return Enhanced(self.inner.inpaint(network, batch, known, **options), batch)


def mel_of(samples: Any) -> Tensor:
    """The log-mel estimate [B, 1, M, T] of `Enhanced` samples (or of a bare tensor)."""
    return samples.mel if isinstance(samples, Enhanced) else samples
