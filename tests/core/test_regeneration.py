"""core.regeneration: the joint predictor + diffusion loss and the network pair."""

from __future__ import annotations

import pytest
import torch

from diffusekit.core.regeneration import PredictorDenoiser, regeneration_loss


def test_the_loss_adds_the_weighted_predictor_mse_to_the_diffusion_loss_on_the_estimate():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 2, 3, generator=g)
    estimate = torch.randn(4, 2, 3, generator=g)
    bases = []

    def diffusion_loss(base):
        bases.append(base)
        return base.abs().flatten(1).sum(1)

    got = regeneration_loss(estimate, x0, diffusion_loss, predictor_weight=0.5, scale=2.0)
    want = estimate.abs().flatten(1).sum(1) + 0.5 * ((estimate - x0) / 2.0).pow(2).mean((1, 2))
    assert got.shape == (4,) and torch.allclose(got, want)
    assert torch.equal(bases[0], estimate)


def test_only_the_mse_trains_the_predictor():
    """The diffusion sees the estimate through a stop-gradient (StoRM eq. 10)."""
    x0 = torch.ones(2, 3)
    weight = torch.tensor(2.0, requires_grad=True)
    estimate = weight * torch.arange(6.0).reshape(2, 3)
    loss = regeneration_loss(estimate, x0, lambda base: 100.0 * base.pow(2).sum(1), 1.0)
    assert loss.requires_grad
    loss.sum().backward()
    a = torch.arange(6.0).reshape(2, 3)
    want = (2.0 * (2.0 * a - 1.0) * a / 3.0).sum()  # d/dw of sum_b mean_j (w a - 1)^2
    assert torch.isclose(weight.grad, want)


def test_the_pair_holds_both_networks_and_refuses_to_be_called():
    pair = PredictorDenoiser(torch.nn.Linear(2, 2), torch.nn.Linear(2, 3))
    assert pair.denoiser(torch.zeros(1, 2)).shape == (1, 3)
    assert {name.split(".")[0] for name in pair.state_dict()} == {"predictor", "denoiser"}
    with pytest.raises(TypeError, match="predictor"):
        pair(torch.zeros(1, 2))
