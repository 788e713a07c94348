"""MelDiffusion: the residual over the noisy log-mel and the start from the noisy input."""

from __future__ import annotations

import pytest
import torch

from diffusekit.core.process import GaussianDiffusion
from diffusekit.domains.audio.diffusion import MelDiffusion


def _batch(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn(3, 1, 8, 16, generator=g)
    noisy = clean + 0.5 * torch.randn(3, 1, 8, 16, generator=g) + 0.3
    return {"x0": clean, "cond": {"noisy": noisy}}


class Oracle(torch.nn.Module):
    """An x0-predicting network that knows the answer z0 (whatever its input)."""

    def __init__(self, z0: torch.Tensor) -> None:
        super().__init__()
        self.z0 = z0

    def forward(self, x, c_noise, noisy):
        return self.z0


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "euler"])
def test_an_exact_denoiser_gives_back_the_clean_mel(residual, sampler):
    batch = _batch()
    process = MelDiffusion(GaussianDiffusion(prediction="x0"), residual=residual,
                           residual_scale=0.7)
    z0 = process.to_z(batch["x0"], batch["cond"]["noisy"])
    if residual:  # z0 = (x0 - y) / s
        assert torch.allclose(z0, (batch["x0"] - batch["cond"]["noisy"]) / 0.7)
    out = process.generate(Oracle(z0), batch, sampler=sampler, steps=4,
                           generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, batch["x0"], atol=1e-5)


@pytest.mark.parametrize("residual", [False, True])
def test_a_start_near_t0_returns_the_noisy_input(residual):
    """From t_start ~ 0 the start state is the noisy input (z_y) plus almost no noise, and an
    x0 network that returns its input keeps it there."""
    batch = _batch(1)
    process = MelDiffusion(GaussianDiffusion(prediction="x0"), residual=residual, t_start=1e-3)

    def identity(x, c_noise, noisy):
        return x

    out = process.generate(identity, batch, sampler="ddim", steps=1,
                           generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, batch["cond"]["noisy"], atol=5e-2)
    assert not torch.allclose(out, batch["cond"]["noisy"], atol=1e-7)  # the start noise is there


def test_residual_loss_is_the_engine_loss_on_the_residual():
    batch = _batch(2)
    inner = GaussianDiffusion(prediction="v", weighting="v")
    process = MelDiffusion(inner, residual=True, residual_scale=2.0)

    def net(x, c_noise, noisy):
        return 0.5 * x - 0.1 * noisy

    got = process.training_loss(net, batch, generator=torch.Generator().manual_seed(3))
    residual = {**batch, "x0": (batch["x0"] - batch["cond"]["noisy"]) / 2.0}
    want = inner.training_loss(net, residual, generator=torch.Generator().manual_seed(3))
    assert got.shape == (3,) and torch.allclose(got, want)


def test_from_config_reads_its_keys_and_passes_the_rest_on():
    process = MelDiffusion.from_config({"schedule": "vp_cosine", "prediction": "x0",
                                        "weighting": "x0", "steps": 5, "residual": True,
                                        "residual_scale": 0.5, "t_start": 0.6})
    assert (process.residual, process.residual_scale, process.t_start) == (True, 0.5, 0.6)
    assert process.inner.prediction == "x0" and process.steps == 5
    with pytest.raises(ValueError, match="residual_scale"):
        MelDiffusion.from_config({"residual": True, "residual_scale": 0.0})
