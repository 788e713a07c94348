"""The digits domain's process: the engine's Gaussian diffusion with classifier-free guidance.

Classifier-free guidance (Ho & Salimans 2022, eq. 6) mixes the conditional and the
unconditional prediction of one network trained with label dropout:

    eps_w(x, t, c) = (1 + w) eps(x, t, c) - w eps(x, t, null)

w = 0 is the plain conditional model; larger w trades diversity for fidelity to the label.
Every parameterisation here (eps, x0, v, flow, EDM) is affine in the network output at fixed
(x, t), so the same mix in x0 form, D_w = D_null + (1 + w)(D_c - D_null), is what the engine's
`guided(denoiser, scale=1 + w, uncond={"label": null})` computes; any registered sampler then
runs on D_w unchanged. `sample.guidance` sets w (command line: `toolkit sample --run R
sample.guidance=2`; Python: `diffusekit.sample(model, overrides=["sample.guidance=2"])`).
With w > 0 each sampler step costs two network evaluations (one when w = 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from omegaconf import DictConfig
from torch import Tensor

from diffusekit.core.distillation import per_example_guided
from diffusekit.core.errors import ConfigError
from diffusekit.core.parameterization import guided
from diffusekit.core.process import GaussianDiffusion


@dataclass(frozen=True, eq=False)
class GuidedDiffusion(GaussianDiffusion):
    """`GaussianDiffusion` whose samples follow classifier-free guidance of weight `guidance`
    (w of Ho & Salimans eq. 6); `null_label` is the network's "no label" class index (None: an
    unconditional network, which only takes w = 0)."""

    guidance: float = 0.0
    null_label: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.guidance < 0:
            raise ConfigError(f"sample.guidance must be >= 0 (w of Ho & Salimans 2022), got "
                              f"{self.guidance}")
        if self.guidance and self.null_label is None:
            raise ConfigError(f"sample.guidance={self.guidance:g} needs a class-conditional "
                              "model, and this one is unconditional: train it with labels "
                              "(network.n_classes > 0, network.label_dropout > 0), or sample "
                              "with sample.guidance=0")

    def sampling_denoiser(self, network: Callable[..., Tensor], batch: dict) -> Callable[..., Tensor]:
        """D_w = D(., null) + (1 + w)(D(., c) - D(., null)) for the batch's labels (the plain
        denoiser when w = 0 or the batch has no labels)."""
        return self.guided_denoiser(self.denoiser(network), batch, float(self.guidance))

    def guided_denoiser(self, denoiser: Callable[..., Tensor], batch: dict,
                        w: float | Tensor) -> Callable[..., Tensor]:
        """`denoiser` guided with weight w for the batch's labels: one w (a number) or one per
        example (w: [B], as a distilled student learns it: `core.distillation.per_example_guided`);
        `denoiser` itself when w is the number 0 or the batch has no labels."""
        label = (batch.get("cond") or {}).get("label")
        if label is None or self.null_label is None or (not isinstance(w, Tensor) and not w):
            return denoiser
        null = torch.full_like(label, self.null_label)  # [B] the null class
        if isinstance(w, Tensor):
            return per_example_guided(denoiser, 1.0 + w, {"label": null})
        return guided(denoiser, 1.0 + float(w), {"label": null})


def check_guidance(cfg: DictConfig) -> None:
    """`ConfigError` when `sample.guidance` asks for guidance that the configured network cannot
    give: an unconditional network (n_classes=0), or one whose null class was never trained
    (label_dropout=0)."""
    w = float(cfg.sample.get("guidance") or 0.0)
    if not w:
        return
    if int(cfg.network.n_classes) == 0:
        raise ConfigError(f"sample.guidance={w:g} needs a class-conditional model, and this one "
                          "is unconditional (network.n_classes=0): sample it with "
                          "sample.guidance=0")
    if float(cfg.network.label_dropout) <= 0:
        raise ConfigError(f"sample.guidance={w:g} needs the null class, and this model never "
                          "trained it (network.label_dropout=0): sample it with "
                          "sample.guidance=0, or train with network.label_dropout=0.1")


def build_process(cfg: DictConfig, **overrides: Any) -> GuidedDiffusion:
    """The process of `cfg.process`, guided with `sample.guidance` (checked by `check_guidance`)."""
    check_guidance(cfg)
    n_classes = int(cfg.network.n_classes)
    return GuidedDiffusion.from_config(
        cfg.process, guidance=float(cfg.sample.get("guidance") or 0.0),
        null_label=n_classes if n_classes else None, **overrides)
