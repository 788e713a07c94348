"""MelDiffusion: the residual over the noisy log-mel and the start from the noisy input; StoRM's
predictor in front of it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from diffusekit.core.process import GaussianDiffusion
from diffusekit.domains.audio.baselines import RegressionProcess
from diffusekit.domains.audio.process import MelDiffusion, StochasticRegeneration


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


# --- StoRM: a one-step predictor in front of the diffusion ------------------------------------

class Pair(torch.nn.Module):
    """A PredictorDenoiser-shaped pair of callables."""

    def __init__(self, predictor, denoiser) -> None:
        super().__init__()
        self.predictor, self.denoiser = predictor, denoiser


def _storm(residual: bool = True, weight: float = 1.0, **options) -> StochasticRegeneration:
    return StochasticRegeneration(
        MelDiffusion(GaussianDiffusion(prediction="x0", weighting="x0"), residual=residual,
                     **options), RegressionProcess().predict, weight)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m"])
def test_storm_refines_around_the_predictor_estimate(sampler):
    """The denoiser is conditioned on the predictor's estimate and diffuses x0 - estimate: an
    exact denoiser gives back the clean mel whatever the estimate."""
    batch = _batch(4)
    estimate = batch["cond"]["noisy"] * 0.5
    seen = []

    def predictor(x, c_noise, noisy):
        assert torch.equal(noisy, batch["cond"]["noisy"]) and torch.all(c_noise == 0)
        return estimate

    def denoiser(x, c_noise, noisy):
        seen.append(noisy)
        return batch["x0"] - noisy  # the exact residual z0 = x0 - y_hat (scale 1)

    out = _storm().generate(Pair(predictor, denoiser), batch, sampler=sampler, steps=3,
                            generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, batch["x0"], atol=1e-5)
    assert seen and all(torch.equal(s, estimate) for s in seen)


def test_storm_from_a_late_start_keeps_the_estimate():
    """Started near t = 0 with a denoiser that returns its input, StoRM returns the predictor's
    estimate (the residual 0 plus almost no noise), not the noisy mixture."""
    batch = _batch(5)
    estimate = batch["x0"] + 0.01

    out = _storm(t_start=1e-3).generate(
        Pair(lambda x, c, noisy: estimate, lambda x, c, noisy: x), batch, sampler="ddim",
        steps=1, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, estimate, atol=5e-2)


def test_storm_loss_is_the_diffusion_loss_on_the_estimate_plus_the_predictor_mse():
    batch = _batch(6)
    predictor = torch.nn.Conv2d(1, 1, 1)

    def denoiser(x, c_noise, noisy):
        return 0.3 * x + 0.2 * noisy

    process = _storm(weight=0.5)
    got = process.training_loss(Pair(lambda x, c, noisy: predictor(noisy), denoiser), batch,
                                generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        estimate = predictor(batch["cond"]["noisy"])
    on_estimate = {**batch, "cond": {"noisy": estimate}}
    want_diffusion = process.diffusion.training_loss(denoiser, on_estimate,
                                                     generator=torch.Generator().manual_seed(1))
    want_mse = (estimate - batch["x0"]).pow(2).flatten(1).mean(1)
    assert got.shape == (3,)
    assert torch.allclose(got, want_diffusion + 0.5 * want_mse, atol=1e-6)
    # the diffusion loss does not train the predictor: its gradient is the MSE's alone
    got.sum().backward()
    grad = predictor.weight.grad.clone()
    predictor.zero_grad()
    (0.5 * (predictor(batch["cond"]["noisy"]) - batch["x0"]).pow(2).flatten(1).mean(1)).sum(
        ).backward()
    assert torch.allclose(grad, predictor.weight.grad, atol=1e-6)


def test_the_storm_objective_builds_a_network_pair(tiny_cfg):
    from omegaconf import OmegaConf

    from diffusekit.domains.audio.domain import AudioDomain
    from diffusekit.core.regeneration import PredictorDenoiser
    from diffusekit.domains.audio.network import MelUNet

    cfg = OmegaConf.merge(tiny_cfg, {"model": {"objective": "storm"}})
    network = AudioDomain().build_network(cfg)
    assert isinstance(network, PredictorDenoiser)
    assert isinstance(network.predictor, MelUNet) and isinstance(network.denoiser, MelUNet)
    assert isinstance(AudioDomain().process(cfg).inner, StochasticRegeneration)
    with pytest.raises(TypeError, match="predictor"):
        network(torch.zeros(1, 1, 8, 8), torch.zeros(1), torch.zeros(1, 1, 8, 8))


def test_storm_with_see_mixture_gives_the_denoiser_estimate_and_mixture():
    """With see_mixture the denoiser's condition is the estimate ("noisy") and the mixture."""
    batch = _batch(7)
    estimate = batch["cond"]["noisy"] * 0.5
    seen = []

    def denoiser(x, c_noise, noisy, mixture):
        seen.append((noisy, mixture))
        return batch["x0"] - noisy

    process = dataclasses.replace(_storm(), see_mixture=True)
    pair = Pair(lambda x, c, noisy: estimate, denoiser)
    out = process.generate(pair, batch, sampler="ddim", steps=2,
                           generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, batch["x0"], atol=1e-5)
    loss = process.training_loss(pair, batch, generator=torch.Generator().manual_seed(0))
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    assert len(seen) == 3  # two sampler steps, one training call
    assert all(torch.equal(e, estimate) and torch.equal(m, batch["cond"]["noisy"])
               for e, m in seen)


def test_see_mixture_builds_a_denoiser_with_two_conditioning_channels(tiny_cfg):
    from omegaconf import OmegaConf

    from diffusekit.domains.audio.domain import AudioDomain

    cfg = OmegaConf.merge(tiny_cfg, {"model": {"objective": "storm", "see_mixture": True}})
    network = AudioDomain().build_network(cfg)
    assert network.denoiser.conditions == ("noisy", "mixture")
    assert network.denoiser.stem.in_channels == 3 and network.predictor.stem.in_channels == 2
    x = torch.randn(2, 1, 8, 8)
    out = network.denoiser(x, torch.full((2,), 0.5), noisy=x, mixture=x)
    assert out.shape == x.shape
    with pytest.raises(TypeError, match="mixture"):
        network.denoiser(x, torch.full((2,), 0.5), noisy=x)
    # the mixture channel reaches the output
    network.denoiser.stem.weight.data.normal_()
    for p in network.denoiser.parameters():
        if p.dim() > 1:
            p.data.normal_(0, 0.1)
    a = network.denoiser(x, torch.full((2,), 0.5), noisy=x, mixture=x)
    b = network.denoiser(x, torch.full((2,), 0.5), noisy=x, mixture=x + 1)
    assert not torch.allclose(a, b)


def test_storm_with_predictor_power_1_trains_the_predictor_on_the_absolute_error(tiny_cfg):
    """model.predictor_power=1: the predictor's term is the mean |error| (its conditional
    median), the diffusion's term unchanged."""
    from omegaconf import OmegaConf

    from diffusekit.domains.audio.process import regeneration_process

    batch = _batch(8)
    estimate = batch["cond"]["noisy"] * 0.5

    def denoiser(x, c_noise, noisy, mixture=None):
        return 0.3 * x

    process = regeneration_process(OmegaConf.merge(
        tiny_cfg, {"model": {"objective": "storm", "predictor_power": 1}}))
    assert process.predictor_power == 1.0
    pair = Pair(lambda x, c, noisy: estimate, denoiser)
    got = process.training_loss(pair, batch, generator=torch.Generator().manual_seed(2))
    mse = dataclasses.replace(process, predictor_power=2.0).training_loss(
        pair, batch, generator=torch.Generator().manual_seed(2))
    error = estimate - batch["x0"]
    weight = process.predictor_weight
    assert torch.allclose(got - mse, weight * (error.abs() - error.pow(2)).flatten(1).mean(1),
                          atol=1e-5)


def test_time_context_starts_as_the_identity_and_reaches_along_frames_only():
    from diffusekit.domains.audio.network import MelUNet, TimeContext

    context = TimeContext(4, (1, 2, 4))
    h = torch.randn(2, 4, 6, 32)
    assert torch.equal(context(h), h)  # zero-initialised: a new network behaves as before
    for layer in context.layers:
        torch.nn.init.normal_(layer[-1].weight, std=0.3)
    h = torch.randn(1, 4, 6, 32, requires_grad=True)
    context(h)[0, :, 3, 16].sum().backward()
    reached = h.grad[0].abs().sum(0)  # [M, T]
    assert reached[3].nonzero().flatten().tolist() == list(range(16 - 7, 16 + 8))  # 1+2+4 frames
    assert reached[[0, 1, 2, 4, 5]].abs().sum() == 0  # no other mel bin
    net = MelUNet(channels=(8, 16), emb_dim=16, time_context=(1, 2))
    assert net(torch.randn(1, 1, 8, 16), torch.zeros(1), noisy=torch.randn(1, 1, 8, 16)).shape \
        == (1, 1, 8, 16)
    assert not any("time_context" in k for k in MelUNet(channels=(8, 16), emb_dim=16)
                   .state_dict())  # none asked: the checkpoints of before load as they were


def test_bad_concealer_options_are_config_errors(tiny_cfg):
    from omegaconf import OmegaConf

    from diffusekit.core.errors import ConfigError
    from diffusekit.domains.audio.network import mel_unet
    from diffusekit.domains.audio.process import regeneration_process

    with pytest.raises(ConfigError, match="predictor_power must be > 0"):
        regeneration_process(OmegaConf.merge(tiny_cfg, {"model": {"predictor_power": 0}}))
    with pytest.raises(ConfigError, match="time_context must list dilations >= 1"):
        mel_unet(OmegaConf.merge(tiny_cfg, {"network": {"time_context": [1, 0]}}))
