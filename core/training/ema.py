"""Exponential moving average of a network's weights (the weights used for sampling and export).

    w_ema <- d w_ema + (1 - d) w,   d = min(decay, (1 + n) / (10 + n)) with warm-up, else decay

at every optimiser step n (the warm-up form is TensorFlow's `ExponentialMovingAverage` with
`num_updates`, also used by the original DDPM code; it keeps early averages from being dominated by
the random initialisation). Buffers (e.g. normalisation statistics) are copied, not averaged.

`EMA` holds the averaged copy as an ordinary `nn.Module`, so it moves with `.to(device)`, is part
of the owner's `state_dict` (checkpoints and `--resume` keep it) and is never trained.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


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
