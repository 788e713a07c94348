"""What the diffusion model is compared with: a classic enhancer and a one-step regression.

    spectral_subtraction(noisy_wave, features)   power spectral subtraction with over-subtraction
                                                 and a spectral floor (Boll 1979; Berouti et al.
                                                 1979), noise PSD from the quietest frames
    RegressionProcess                            the same network trained to map the noisy log-mel
                                                 to the clean one in one step (MSE), with the
                                                 process interface (`training_loss`, `generate`)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from diffusekit.domains.audio.features import MelFeatures


def spectral_subtraction(noisy_wave: Tensor, features: MelFeatures, quiet_fraction: float = 0.1,
                         over: float = 2.0, floor: float = 0.05) -> Tensor:
    """Enhanced waveforms [B, L] of noisy waveforms [B, L].

    N(f) = mean over the `quiet_fraction` lowest-energy frames of |S(f, t)|^2 (noise estimate);
    G = sqrt(max(1 - over * N / |S|^2, floor^2)) (Berouti et al. 1979, power subtraction);
    y = ISTFT(G S)  (noisy phase)."""
    spec = features.stft(noisy_wave)                                   # [B, F, T]
    power = spec.abs() ** 2
    energy = power.sum(dim=-2)                                          # [B, T]
    k = max(1, int(round(quiet_fraction * energy.shape[-1])))
    quiet = energy.topk(k, dim=-1, largest=False).indices              # [B, k]
    noise = torch.gather(power, -1, quiet[:, None, :].expand(-1, power.shape[-2], -1)).mean(-1)
    gain = (1.0 - over * noise[..., None] / power.clamp_min(1e-12)).clamp_min(floor ** 2).sqrt()
    return features.istft(gain * spec, noisy_wave.shape[-1])


@dataclass(frozen=True, eq=False)
class RegressionProcess:
    """One-step regression with the diffusion model's network: x0_hat = net(x_noisy, 0,
    noisy=x_noisy), trained with the mean squared error to the clean log-mel. `generate`
    ignores sampler, steps and generator (there is nothing to sample)."""

    sampler: str = "regression"
    steps: int = 1

    def predict(self, network, batch: dict) -> Tensor:
        """x0_hat [B, 1, M, T] for batch["cond"]["noisy"]."""
        noisy = batch["cond"]["noisy"]
        c = torch.zeros(noisy.shape[0], device=noisy.device)
        return network(noisy, c, noisy=noisy)

    def training_loss(self, network, batch: dict, generator: torch.Generator | None = None,
                      ) -> Tensor:
        """[B] mean squared error of the one-step estimate."""
        return (self.predict(network, batch) - batch["x0"]).pow(2).flatten(1).mean(1)

    def generate(self, network, batch: dict, **_: object) -> Tensor:
        """The estimate (the sampler options are ignored)."""
        callback = _.get("callback")
        out = self.predict(network, batch)
        if callable(callback):
            callback({"step": 0})
        return out
