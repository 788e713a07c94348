"""A Gaussian diffusion process: the built parts a trainer and a sampler need, bundled.

`GaussianDiffusion` ties a schedule, a network parameterisation and a training objective
(weighting + time sampler), and turns a raw network into the one denoiser contract. Training and
generation speak to a *process* through two methods, so continuous and discrete (masked) diffusion
plug into the same LightningModule:

    process.training_loss(network, batch, generator=None) -> [B] per-example loss
    process.generate(network, batch, sampler=..., steps=..., generator=None) -> samples like batch["x0"]

and a third that repair uses (`toolkit inpaint`, `core.inpainting`):

    process.inpaint(network, batch, known, method="replace", ...) -> samples whose known part is batch["x0"]

A batch is a dict: "x0" the clean data [B, ...], optionally "cond" (keyword arguments for the
network, e.g. the low-resolution image) and "mask" ([B, N] node / padding mask that selects the
noise space). The process never sees a config file: domains build it from a section of theirs
with `GaussianDiffusion.from_config(cfg.process)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import torch
from torch import Tensor

from diffusekit.core import losses, samplers, schedules
from diffusekit.core.inpainting import inpaint
from diffusekit.core.parameterization import Denoiser
from diffusekit.core.registry import Registry
from diffusekit.core.schedules import Schedule
from diffusekit.core.spaces import Euclidean, Masked, ZeroCoM

# name -> factory(mask or None) -> noise space
SPACES: Registry[Callable[[Tensor | None], Any]] = Registry("noise space")
SPACES.register("euclidean", lambda mask: Euclidean())
SPACES.register("masked", lambda mask: Masked(mask) if mask is not None else Euclidean())
SPACES.register("zero_com", lambda mask: ZeroCoM(mask))


def _plain(value: Any) -> Any:
    """A config value as plain Python: mappings -> dict, sequences -> list (recursively)."""
    if hasattr(value, "items"):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, (str, bytes, Tensor))
                                             and hasattr(value, "__len__")):
        return [_plain(item) for item in value]
    return value


@dataclass(frozen=True, eq=False)
class GaussianDiffusion:
    """x_t = alpha(t) x0 + sigma(t) eps with a network trained through `Denoiser`.

    schedule:     a `Schedule` or its registered name.
    prediction:   what the network predicts ("eps", "x0", "v", "flow", "edm").
    weighting:    loss weighting name (see `losses.WEIGHTINGS`), with `weighting_options`.
    t_sampler:    training time distribution (see `losses.TIME_SAMPLERS`), with options.
    space:        noise space name (see `SPACES`): "euclidean", "masked", "zero_com".
    noise_input:  what the network sees as its noise level (see `NOISE_INPUTS`); None = default.
    sampler, steps, grid: defaults for `generate`.
    """

    schedule: Schedule | str = "vp_cosine"
    prediction: str = "eps"
    weighting: str = "eps_mse"
    t_sampler: str = "uniform"
    space: str = "euclidean"
    noise_input: str | None = None
    sigma_data: float | None = None
    sampler: str = "dpmpp_2m"
    steps: int = 20
    grid: str = "log_snr"
    weighting_options: dict = field(default_factory=dict)
    t_sampler_options: dict = field(default_factory=dict)
    sampler_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.schedule, str):
            object.__setattr__(self, "schedule", schedules.get(self.schedule))
        # resolve every name now, so a bad config fails at build time, not mid-run
        losses.WEIGHTINGS.get(self.weighting)
        losses.TIME_SAMPLERS.get(self.t_sampler)
        SPACES.get(self.space)
        samplers.get(self.sampler)

    @classmethod
    def from_config(cls, section: Mapping[str, Any], **overrides: Any) -> "GaussianDiffusion":
        """Build from a config section (e.g. a domain's `process:`; any mapping, OmegaConf
        included) whose keys are this class's fields, plus `schedule_options` (keyword
        arguments of the named schedule). Null option mappings count as empty; keys that are
        not fields are left to the caller (a domain may keep its own knobs in the section);
        `overrides` replace section values."""
        values = {**{key: _plain(section[key]) for key in section}, **overrides}
        schedule_options = values.pop("schedule_options", None) or {}
        if isinstance(values.get("schedule"), str):
            values["schedule"] = schedules.get(values["schedule"], **schedule_options)
        names = {f.name for f in fields(cls)}
        kwargs = {key: value for key, value in values.items() if key in names}
        for key in ("weighting_options", "t_sampler_options", "sampler_options"):
            if key in kwargs and kwargs[key] is None:
                kwargs[key] = {}
        if "steps" in kwargs:
            kwargs["steps"] = int(kwargs["steps"])
        return cls(**kwargs)

    def denoiser(self, network: Callable[..., Tensor]) -> Denoiser:
        """Wrap a raw network net(x_in, c_noise, **cond) into D(x, t, **cond) -> x0_hat."""
        return Denoiser(network, self.schedule, self.prediction,
                        noise_input=self.noise_input, sigma_data=self.sigma_data)

    def space_for(self, batch: dict) -> Any:
        """The noise space of a batch (its "mask" selects padding / atoms)."""
        return SPACES.get(self.space)(batch.get("mask"))

    def training_loss(self, network: Callable[..., Tensor], batch: dict,
                      generator: torch.Generator | None = None) -> Tensor:
        """[B] weighted denoising loss of `network` on batch["x0"] (see `losses.denoising_loss`)."""
        x0 = batch["x0"]
        space = self.space_for(batch)
        return losses.denoising_loss(
            self.denoiser(network), space.project(x0), self.schedule, self.t_sampler, self.weighting,
            space, generator=generator, cond=batch.get("cond"),
            t_sampler_options=self.t_sampler_options, weighting_options=self.weighting_options,
        )

    def generate(
        self,
        network: Callable[..., Tensor],
        batch: dict,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        grid: str | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[[dict], None] | None = None,
        t_max: float | None = None,
        noise: Tensor | None = None,
        **sampler_options,
    ) -> Tensor:
        """Samples shaped like batch["x0"] (only its shape, dtype and device are used), with
        batch["cond"] as conditioning and batch["mask"] selecting the space.

        t_max: the grid's first time (default: the schedule's); noise: the unit noise the
        sampler starts from, x_{t_max} = sigma(t_max) noise (default: drawn from the space)."""
        x_like = batch["x0"]
        space, ts, noise = self._start(batch, steps, grid, t_max, noise, generator)
        sample = samplers.get(sampler or self.sampler)
        options = {**self.sampler_options, **sampler_options}
        cond = batch.get("cond")
        if cond:
            options["cond"] = cond
        return sample(self.sampling_denoiser(network, batch), noise, ts.to(x_like.device),
                      self.schedule, space=space, generator=generator, callback=callback,
                      **options)

    def inpaint(
        self,
        network: Callable[..., Tensor],
        batch: dict,
        known: Tensor,
        *,
        method: str | Any = "replace",
        sampler: str | None = None,
        steps: int | None = None,
        grid: str | None = None,
        generator: torch.Generator | None = None,
        callback: Callable[[dict], None] | None = None,
        t_max: float | None = None,
        noise: Tensor | None = None,
        **sampler_options,
    ) -> Tensor:
        """Samples shaped like batch["x0"] that keep batch["x0"] where `known` is True and fill
        the rest (`core.inpainting.inpaint`: replacement or RePaint with any sampler; in a
        `ZeroCoM` space the known atoms come back where they were given). `known`: bool (or 0 / 1) of batch["x0"]'s
        shape, broadcastable to it, or a leading [B, N] mask; method: a name of
        `inpainting.METHODS` or an instance with options (`RePaint(jump_length=5,
        resamplings=4)`). Everything else as in `generate`; the sampler sees the same denoiser
        (`sampling_denoiser`: guidance included) and the batch's "cond" and "mask"."""
        x0 = batch["x0"]
        space, ts, noise = self._start(batch, steps, grid, t_max, noise, generator)
        options = {**self.sampler_options, **sampler_options}
        if callback is not None:
            options["callback"] = callback
        return inpaint(samplers.get(sampler or self.sampler), self.sampling_denoiser(network, batch),
                       noise, ts.to(x0.device), self.schedule, x0, known, space=space,
                       generator=generator, method=method, cond=batch.get("cond") or None, **options)

    def _start(self, batch: dict, steps: int | None, grid: str | None, t_max: float | None,
               noise: Tensor | None, generator: torch.Generator | None) -> tuple[Any, Tensor, Tensor]:
        """(space, time grid, unit start noise) of a `generate` / `inpaint` call: the batch's
        space, the grid of `steps` / `grid` (the process's by default) from `t_max`, and `noise`
        or a fresh draw of the space shaped like batch["x0"]."""
        space = self.space_for(batch)
        ts = schedules.time_grid(self.schedule, steps or self.steps, grid or self.grid, t_max=t_max)
        return space, ts, space.randn_like(batch["x0"], generator) if noise is None else noise

    def sampling_denoiser(self, network: Callable[..., Tensor], batch: dict) -> Callable[..., Tensor]:
        """The denoiser `generate` hands the sampler: `denoiser(network)` here; a subclass may
        wrap it for the batch (classifier-free guidance: `parameterization.guided`)."""
        return self.denoiser(network)
