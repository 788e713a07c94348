"""The one LightningModule of the toolkit: trains any process on any network.

`DiffusionModule` receives *built* parts: the network, the process (anything with
`training_loss(network, batch, generator=None) -> [B]` and `generate(network, batch, ...)`, e.g.
`diffusekit.core.process.GaussianDiffusion` or a discrete process) and `OptimSettings`. It never
sees a config file, builds no data and computes no domain metrics; the data module, the callbacks
and the domain do that (see `diffusekit.core.app.training.fit`).

What it adds: AdamW with linear warm-up (Loshchilov & Hutter 2019), an `EMA` of the weights (in
this file) that is checkpointed with the model and used for validation and sampling, and a stop
on a non-finite loss (`NonFiniteLossError`). Gradient clipping is the Trainer's
(`gradient_clip_val`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

import lightning as L
import torch
from torch import Tensor, nn

from diffusekit.core.errors import NonFiniteLossError
from diffusekit.core.registry import Registry


# decay(progress in [0, 1] after the warm-up) -> multiplier of the peak learning rate
LR_DECAYS: Registry[Callable[[float], float]] = Registry("learning-rate decay")
LR_DECAYS.register("constant", lambda progress: 1.0)
# cosine annealing to 0 without restarts (Loshchilov & Hutter 2017, "SGDR", eq. 5)
LR_DECAYS.register("cosine", lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)))


@dataclass(frozen=True)
class OptimSettings:
    """AdamW + linear warm-up, then the learning-rate `decay` (LR_DECAYS) over the remaining
    steps up to `total_steps` (needed by every decay but "constant"; a budget that ends inside
    the warm-up never decays). `lr` is the peak, reached after `warmup_steps` optimiser steps."""

    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 100
    decay: str = "constant"
    total_steps: int | None = None

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError(f"need lr > 0 and warmup_steps >= 0, got {self}")
        LR_DECAYS.get(self.decay)  # an unknown name fails here, with the known ones listed
        if self.decay != "constant" and not (self.total_steps or 0) > 0:
            raise ValueError(f"optim.decay={self.decay} needs a step budget (trainer.max_steps "
                             f"> 0), got {self.total_steps}")

    def build(self, parameters) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
        """AdamW over `parameters` and its per-step schedule (`lr_factor`): what the toolkit
        trainer (and so every benchmark) trains with."""
        optimizer = torch.optim.AdamW(parameters, lr=self.lr, betas=tuple(self.betas),
                                      eps=self.eps, weight_decay=self.weight_decay)
        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                            lambda step: self.lr_factor(step))

    def lr_factor(self, step: int) -> float:
        """Multiplier of `lr` at optimiser step `step` (0-based): the warm-up, then the decay."""
        if step < self.warmup_steps:
            return warmup_factor(step, self.warmup_steps)
        if self.decay == "constant":
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)  # a budget inside the warm-up
        return LR_DECAYS.get(self.decay)(min(1.0, (step - self.warmup_steps + 1) / span))


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Multiplier of the peak learning rate at optimiser step `step` (0-based): linear from
    1 / warmup_steps up to 1 over `warmup_steps` steps, then 1."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


def batch_size(batch: dict) -> int:
    """Number of examples in a batch dict (the leading size of batch["x0"])."""
    return int(batch["x0"].shape[0])


def slice_batch(batch: Any, stop: int | None, start: int = 0) -> Any:
    """Examples start..stop of a batch: every tensor (nested in dicts, lists) cut on dim 0."""
    if isinstance(batch, Tensor):
        return batch[start:stop]
    if isinstance(batch, dict):
        return {k: slice_batch(v, stop, start) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(slice_batch(v, stop, start) for v in batch)
    return batch


def concat_batches(a: Any, b: Any) -> Any:
    """Two batches joined on dim 0 (tensors nested in dicts and lists; other values from `a`)."""
    if isinstance(a, Tensor):
        return torch.cat([a, b])
    if isinstance(a, dict):
        return {k: concat_batches(a[k], b[k]) for k in a}
    if isinstance(a, (list, tuple)):
        return type(a)(concat_batches(x, y) for x, y in zip(a, b))
    return a


# ------------------------------------------------------------------------------------- EMA
# Exponential moving average of the weights (the weights used for validation, sampling, export):
#     w_ema <- d w_ema + (1 - d) w,   d = min(decay, (1 + n) / (10 + n)) with warm-up, else decay
# at every optimiser step n (the warm-up form is TensorFlow's `ExponentialMovingAverage` with
# `num_updates`, as in the original DDPM code; it keeps early averages from being dominated by the
# random initialisation). Buffers (e.g. normalisation statistics) are copied, not averaged. The
# averaged copy is an ordinary submodule: it moves with `.to(device)`, is part of the owner's
# `state_dict` (checkpoints and `--resume` keep it) and is never trained.


class EMA(nn.Module):
    """An averaged, frozen copy of `network`; call `update(network)` after each optimiser step.

    decay:  the averaging constant d in [0, 1); 0 makes the copy follow the network exactly.
    warmup: use min(decay, (1 + n) / (10 + n)) at update n.
    """

    def __init__(self, network: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.network = copy.deepcopy(network).eval().requires_grad_(False)
        # a buffer, so the update count is saved and restored with the weights
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        """The decay the next update uses."""
        n = int(self.num_updates)
        if self.warmup:
            return min(self.decay, (1 + n) / (10 + n))
        return self.decay

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        """Fold the current weights of `network` (same architecture) into the average."""
        d = self.current_decay()
        ema_params = dict(self.network.named_parameters())
        for name, param in network.named_parameters():
            shadow = ema_params[name]
            if shadow.dtype.is_floating_point:
                shadow.lerp_(param.detach().to(shadow.dtype), 1.0 - d)  # d * shadow + (1-d) * p
            else:
                shadow.copy_(param)
        ema_buffers = dict(self.network.named_buffers())
        for name, buf in network.named_buffers():
            ema_buffers[name].copy_(buf)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, network: nn.Module) -> None:
        """Overwrite `network`'s weights with the averaged ones."""
        network.load_state_dict(self.network.state_dict())

    def train(self, mode: bool = True) -> "EMA":
        """The averaged copy always stays in eval mode (dropout off, norms frozen)."""
        super().train(mode)
        self.network.eval()
        return self

    def forward(self, *args, **kwargs):
        """Run the averaged network."""
        return self.network(*args, **kwargs)


class DiffusionModule(L.LightningModule):
    """Trains `network` under `process`; samples with the EMA weights.

    network:    the raw network (an nn.Module) the process wraps, net(x_in, c_noise, **cond).
    process:    has training_loss(network, batch, generator=None) -> [B] and
                generate(network, batch, *, sampler, steps, generator, callback) -> samples;
                a process with `bind_ema(network)` is handed the EMA network once (consistency
                distillation's target theta^-, `diffusekit.core.app.distill.StudentProcess`).
    optim:      `OptimSettings`.
    ema_decay:  EMA decay (see `EMA`); ema_warmup its warm-up.
    """

    def __init__(self, network: nn.Module, process: Any, optim: OptimSettings = OptimSettings(),
                 ema_decay: float = 0.999, ema_warmup: bool = True) -> None:
        super().__init__()
        self.network = network
        self.process = process
        self.optim = optim
        self.ema = EMA(network, ema_decay, ema_warmup)
        bind_ema = getattr(process, "bind_ema", None)
        if callable(bind_ema):  # a process that trains against the EMA weights (distillation)
            bind_ema(self.ema.network)

    # ---------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.process.training_loss(self.network, batch).mean()
        self._stop_if_not_finite(loss)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False,
                 batch_size=batch_size(batch))
        return loss

    def _stop_if_not_finite(self, loss: Tensor) -> None:
        """Raise `NonFiniteLossError` when the loss is NaN/Inf on any device (all ranks agree,
        so no rank is left waiting in a collective)."""
        bad = (~torch.isfinite(loss.detach())).float()
        if self._trainer is not None and self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce(bad, reduce_op="max")
        if bool(bad):  # one host sync per step: the price of stopping at the first bad step
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at step {self.global_step}; the run stops "
                "(try a lower optim.lr or a smaller optim.grad_clip, and check the data)")

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.ema.update(self.network)  # after every real optimiser step (accumulation aware)

    def configure_optimizers(self) -> dict:
        optimizer, scheduler = self.optim.build(self.network.parameters())
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    # -------------------------------------------------------------- validation
    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        """The loss of the EMA weights, with noise seeded by the batch index so that successive
        validations compare like with like."""
        generator = torch.Generator(device=batch["x0"].device).manual_seed(10_000 + batch_idx)
        loss = self.process.training_loss(self.ema.network, batch, generator=generator).mean()
        self.log("val/loss", loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=batch_size(batch))
        return loss

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(self, batch: dict, *, sampler: str | None = None, steps: int | None = None,
                 generator: torch.Generator | None = None,
                 callback: Callable[[dict], None] | None = None) -> Any:
        """Samples for `batch` (its shape, "cond" and "mask") from the EMA weights."""
        return self.process.generate(self.ema.network, batch, sampler=sampler, steps=steps,
                                     generator=generator, callback=callback)
