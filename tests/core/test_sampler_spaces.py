"""Noise spaces through whole sampling runs: every sampler keeps ZeroCoM states centred and padding
exactly zero after every step, even with a denoiser that does neither (the sampler's
`space.project` and `space.randn_like` do the work)."""

from __future__ import annotations

import pytest
import torch

from diffusekit.core import samplers, schedules, spaces

B, N, F = 4, 7, 2  # 4 molecules of up to 7 atoms: 3 position channels + 2 features
N_STEPS = 8
OPTIONS = [(name, {}) for name in samplers.names()] + [
    ("ddim", {"eta": 1.0}), ("heun", {"S_churn": 20.0}), ("euler", {"S_churn": 20.0})]


def node_mask() -> torch.Tensor:
    """[B, N]: molecules of 7, 5, 3 and 6 atoms; the rest is padding."""
    sizes = torch.tensor([7, 5, 3, 6])
    return (torch.arange(N)[None, :] < sizes[:, None]).float()


def uncentred_denoiser():
    """D(x, t, node_mask): a fixed non-linear map that shifts positions off-centre and writes into
    padding, so only the sampler's projection can keep the state in the space."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3 + F, 3 + F, generator=g) / 3.0

    def denoiser(x, t, node_mask):
        assert node_mask.shape == (B, N)
        return torch.tanh(x @ w.to(x.dtype)) + 0.3 + 0.1 * torch.as_tensor(t, dtype=x.dtype)

    return denoiser


@pytest.mark.parametrize("schedule_name", ["vp_linear", "flow"])
@pytest.mark.parametrize(("name", "options"), OPTIONS)
def test_zero_com_stays_centred_and_padding_zero_at_every_step(name, options, schedule_name):
    mask = node_mask()
    space = spaces.ZeroCoM(mask, n_dims=3)
    schedule = schedules.get(schedule_name)
    ts = schedules.time_grid(schedule, N_STEPS, "uniform")
    noise = torch.randn(B, N, 3 + F, generator=torch.Generator().manual_seed(1))
    states = []
    x = samplers.get(name)(uncentred_denoiser(), noise, ts, schedule, space=space,
                           generator=torch.Generator().manual_seed(2), cond={"node_mask": mask},
                           callback=lambda info: states.append(info["x"]), **options)
    assert len(states) == N_STEPS and states[-1] is x
    padding = mask == 0
    for i, state in enumerate(states):
        assert space.centre_of_mass(state).abs().max() < 1e-5, f"step {i}"
        assert torch.all(state[padding] == 0), f"step {i}"
    assert torch.isfinite(x).all()
    assert x[mask.bool()].abs().max() > 0.1  # real atoms carry a non-trivial sample


@pytest.mark.parametrize(("name", "options"), OPTIONS)
def test_masked_space_keeps_padding_exactly_zero(name, options):
    mask = node_mask()
    space = spaces.Masked(mask)
    schedule = schedules.get("vp_cosine")
    ts = schedules.time_grid(schedule, N_STEPS, "log_snr")
    noise = torch.randn(B, N, 3 + F, generator=torch.Generator().manual_seed(3))
    states = []
    samplers.get(name)(uncentred_denoiser(), noise, ts, schedule, space=space,
                       generator=torch.Generator().manual_seed(4), cond={"node_mask": mask},
                       callback=lambda info: states.append(info["x"]), **options)
    for state in states:
        assert torch.all(state[mask == 0] == 0)
        assert state[mask == 1].abs().max() > 0


def test_stochastic_noise_comes_from_the_space():
    """Fresh noise is drawn through space.randn_like (here: counted), never torch.randn directly."""

    class CountingSpace(spaces.Euclidean):
        draws = 0

        def randn_like(self, x, generator=None):
            type(self).draws += 1
            return super().randn_like(x, generator)

    schedule = schedules.get("vp_linear")
    ts = schedules.time_grid(schedule, N_STEPS, "uniform")
    noise = torch.randn(B, N, 3 + F)
    for name, options in [("ddpm", {}), ("dpmpp_2m_sde", {}), ("ddim", {"eta": 0.5}), ("consistency", {})]:
        CountingSpace.draws = 0
        samplers.get(name)(lambda x, t: torch.zeros_like(x), noise, ts, schedule, space=CountingSpace(),
                           generator=torch.Generator().manual_seed(0), **options)
        assert CountingSpace.draws == N_STEPS - 1, name  # every step but the noise-free last one
