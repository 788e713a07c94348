"""GaussianDiffusion: built from a config section; training loss and generation on a mixture."""

import pytest
import torch
from omegaconf import OmegaConf

from diffusekit.core import schedules
from diffusekit.core.analytic import GaussianMixture, sliced_wasserstein
from diffusekit.core.process import GaussianDiffusion
from diffusekit.core.registry import UnknownNameError

SECTION = """
schedule: vp_discrete
schedule_options: {n_train_steps: 500}
prediction: v
noise_input: null
weighting: min_snr
weighting_options: {gamma: 5.0}
t_sampler: logit_normal
t_sampler_options: null
sampler: heun
steps: 7
grid: karras
sampler_options: {S_churn: 0.5}
domain_only_knob: 3
"""


def test_from_config_builds_every_field_from_an_omegaconf_section():
    process = GaussianDiffusion.from_config(OmegaConf.create(SECTION))
    assert process.schedule.n_train_steps == 500  # schedule_options reached the schedule
    assert (process.prediction, process.weighting, process.t_sampler) == ("v", "min_snr", "logit_normal")
    assert process.weighting_options == {"gamma": 5.0} and type(process.weighting_options) is dict
    assert process.t_sampler_options == {}  # null -> {}
    assert (process.sampler, process.steps, process.grid) == ("heun", 7, "karras")
    assert process.sampler_options == {"S_churn": 0.5}


def test_from_config_overrides_and_plain_dicts():
    process = GaussianDiffusion.from_config({"schedule": "vp_cosine", "steps": "12"}, space="zero_com")
    assert isinstance(process.schedule, type(schedules.get("vp_cosine")))
    assert process.steps == 12 and process.space == "zero_com"


def test_from_config_rejects_unknown_names_at_build_time():
    with pytest.raises(UnknownNameError):
        GaussianDiffusion.from_config({"schedule": "vp_cosine", "sampler": "eulr"})


def test_process_built_from_config_samples_the_mixture_with_its_exact_denoiser():
    """generate() with the exact E[x0|x_t] wrapped as an x0-predicting network reaches the
    mixture: the sliced W2 to true samples is within 2x of the two-sample noise floor."""
    process = GaussianDiffusion.from_config({"schedule": "vp_cosine", "prediction": "x0", "sampler": "dpmpp_2m",
                                             "steps": 25, "grid": "log_snr"})
    mixture = GaussianMixture.ring_2d()
    exact = mixture.denoiser(process.schedule)
    network = lambda x, c_noise: exact(x, c_noise)  # noise_input "t": c_noise is t itself  # noqa: E731
    gen = torch.Generator().manual_seed(0)
    batch = {"x0": torch.zeros(4000, 2)}
    samples = process.generate(network, batch, generator=gen)
    true_a, true_b = mixture.sample(4000, generator=gen), mixture.sample(4000, generator=gen)
    floor = sliced_wasserstein(true_a, true_b, 128, generator=torch.Generator().manual_seed(1))
    error = sliced_wasserstein(samples, true_a, 128, generator=torch.Generator().manual_seed(1))
    assert error < 2.0 * floor + 0.02, (error, floor)
    loss = process.training_loss(network, {"x0": true_a[:256]}, generator=gen)
    assert loss.shape == (256,) and torch.isfinite(loss).all()


def test_generate_starts_from_the_given_noise_at_the_given_time():
    """t_max shortens the grid (the first time the sampler sees is t_max) and `noise` replaces
    the drawn unit noise: equal noise gives equal samples, whatever the generator."""
    process = GaussianDiffusion.from_config({"schedule": "vp_cosine", "prediction": "x0", "sampler": "ddim",
                                             "steps": 4})
    network = lambda x, c_noise: 0.5 * x  # noqa: E731
    batch = {"x0": torch.zeros(3, 2)}
    noise = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    seen = []
    first = process.generate(network, batch, t_max=0.5, noise=noise,
                             callback=lambda info: seen.append(float(info["t"])))
    again = process.generate(network, batch, t_max=0.5, noise=noise.clone(),
                             generator=torch.Generator().manual_seed(7))
    assert seen[0] == pytest.approx(0.5) and len(seen) == 4
    assert torch.equal(first, again)
    drawn = process.generate(network, batch, generator=torch.Generator().manual_seed(0))
    assert torch.equal(drawn, process.generate(network, batch, noise=noise))  # same draw


@pytest.mark.parametrize("method", ["replace", "repaint"])
def test_inpaint_draws_the_exact_conditional_and_keeps_the_known_part(method):
    """inpaint() with the exact denoiser of a two-mode mixture: coordinate 0 known at +0.7 puts
    the samples in the + mode (the exact conditional), the known coordinate comes back exactly,
    the process's sampler and steps are used (RePaint redoes its segments)."""
    from diffusekit.core.inpainting import RePaint

    means = torch.tensor([[0.7, 0.7, 0.7], [-0.7, -0.7, -0.7]], dtype=torch.float64)
    mixture = GaussianMixture(means, torch.full((2,), 0.2, dtype=torch.float64),
                              torch.full((2,), 0.5, dtype=torch.float64))
    process = GaussianDiffusion.from_config({"schedule": "vp_cosine", "prediction": "x0",
                                             "sampler": "ddpm", "steps": 60})
    exact = mixture.denoiser(process.schedule)
    network = lambda x, c_noise: exact(x.double(), c_noise).float()  # noqa: E731
    known = torch.zeros(500, 3)
    known[:, 0] = 0.7
    mask = torch.tensor([True, False, False])
    chosen = RePaint(jump_length=10, resamplings=2) if method == "repaint" else method
    steps = []
    out = process.inpaint(network, {"x0": known}, mask, method=chosen, callback=steps.append,
                          generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 0], known[:, 0])
    # the exact conditional puts all in the + mode; replacement, which sees the known part only
    # through its noisy copy, gets most of the way (measured: 86% replace, 90% RePaint r = 2)
    assert float((out[:, 1:] > 0).float().mean()) > 0.8
    assert len(steps) == (60 if method == "replace" else 60 + 50)
