"""Losses: each weighting is the MSE of its own network target, time samplers hit their laws,
and minimising the loss actually trains a network."""

import math

import pytest
import torch

from diffusekit.core import losses, schedules
from diffusekit.core.analytic import GaussianMixture
from diffusekit.core.parameterization import Denoiser
from diffusekit.core.spaces import ZeroCoM

F64 = torch.float64


class RandomNet(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.lin = torch.nn.Linear(dim + 1, dim).double()

    def forward(self, x, c):
        return self.lin(torch.cat([x, c[:, None].to(x.dtype)], dim=1))


# (prediction, weighting, schedule): the weighted x0 error equals the plain MSE of the target.
PAIRS = [
    ("eps", "eps_mse", "vp_cosine"),
    ("v", "v", "vp_linear"),
    ("x0", "x0", "vp_cosine"),
    ("edm", "edm", "edm"),
    ("edm", "edm", "vp_cosine"),
    ("flow", "flow", "flow"),
]


@pytest.mark.parametrize("prediction,weighting,schedule_name", PAIRS)
def test_weighting_equals_target_mse(prediction, weighting, schedule_name):
    torch.manual_seed(0)
    sched = schedules.get(schedule_name)
    net = RandomNet(4)
    D = Denoiser(net, sched, prediction)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(256, 4, generator=g, dtype=F64)
    eps = torch.randn(256, 4, generator=g, dtype=F64)
    t = losses.time_uniform(256, sched, g)
    loss = losses.denoising_loss(D, x0, sched, weighting=weighting, t=t, noise=eps)
    a, s = sched.alpha_sigma(t)
    xt = a[:, None] * x0 + s[:, None] * eps
    out = net(xt * D.prediction.input_scale(a[:, None], s[:, None]), D.noise_input(t, sched))
    direct = ((out - D.target(x0, eps, t)) ** 2).mean(1)
    if prediction == "edm":  # EDM eq. 8: lambda c_out^2 = 1, so the weighted loss is |F - F_target|^2
        assert torch.allclose(loss, direct, rtol=1e-8)
    else:
        assert torch.allclose(loss, direct, rtol=1e-6)


def test_min_snr_and_truncated_snr():
    lam = torch.tensor([-4.0, 0.0, 1.0, 4.0], dtype=F64)
    assert torch.allclose(losses.WEIGHTINGS.get("min_snr")(lam, gamma=5.0), torch.exp(lam).clamp(max=5))
    assert torch.allclose(losses.WEIGHTINGS.get("snr")(lam), torch.tensor([1, 1, math.e, math.e**4], dtype=F64))


@pytest.mark.parametrize("name", ["uniform", "log_normal", "logit_normal"])
def test_time_samplers_stay_in_range(name):
    sched = schedules.get("vp_cosine")
    t = losses.TIME_SAMPLERS.get(name)(10000, sched, torch.Generator().manual_seed(0))
    assert t.shape == (10000,) and t.min() >= losses.T_EPS and t.max() <= sched.t_max


def test_log_normal_follows_edm_law():
    sched = schedules.get("edm")
    t = losses.time_log_normal(50000, sched, torch.Generator().manual_seed(0))
    log_sigma = torch.log(sched.sigma(t))
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.02)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.02)


def test_stratified_uniform_covers_every_stratum():
    sched = schedules.get("vp_linear")
    t = losses.time_uniform(64, sched, torch.Generator().manual_seed(0))
    strata = torch.sort((t * 64).floor())[0]
    assert torch.equal(strata, torch.arange(64, dtype=F64))


def test_exact_denoiser_beats_any_other():
    """E[x0|x_t] minimises the x0 error: the exact mixture denoiser has lower loss than a shrunk one."""
    gm = GaussianMixture.ring_2d()
    sched = schedules.get("vp_cosine")
    x0 = gm.sample(8192, torch.Generator().manual_seed(0))
    exact = gm.denoiser(sched)
    shrunk = lambda x, t: 0.9 * exact(x, t)  # noqa: E731
    kw = dict(schedule=sched, weighting="x0", generator=torch.Generator().manual_seed(1))
    l_exact = losses.denoising_loss(exact, x0, **kw).mean()
    kw["generator"] = torch.Generator().manual_seed(1)
    l_shrunk = losses.denoising_loss(shrunk, x0, **kw).mean()
    assert l_exact < l_shrunk


def test_zero_com_loss_ignores_translation_and_padding():
    mask = torch.ones(2, 5)
    mask[1, 3:] = 0
    space = ZeroCoM(mask)
    sched = schedules.get("vp_cosine")
    x0 = space.project(torch.randn(2, 5, 3, dtype=F64))

    def translated(x, t):
        return x0 + torch.tensor([1.0, 2.0, 3.0], dtype=F64) + 100 * (1 - mask[..., None])

    loss = losses.denoising_loss(translated, x0, sched, weighting="x0", space=space)
    assert torch.allclose(loss, torch.zeros(2, dtype=F64), atol=1e-12)


def test_training_with_the_loss_learns_a_mixture():
    """A small MLP trained for a few hundred steps approaches the exact denoiser's loss."""
    torch.manual_seed(0)
    gm = GaussianMixture.ring_2d(n_modes=4)
    sched = schedules.get("vp_cosine")
    net = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64),
                              torch.nn.SiLU(), torch.nn.Linear(64, 2))
    D = Denoiser(lambda x, c: net(torch.cat([x, c[:, None]], 1)), sched, "eps")
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)

    def loss_of(d, gen):
        x0 = gm.sample(512, gen).float()
        return losses.denoising_loss(d, x0, sched, weighting="min_snr", generator=gen).mean()

    first = loss_of(D, torch.Generator().manual_seed(99)).item()
    for _ in range(400):
        opt.zero_grad()
        loss_of(D, g).backward()
        opt.step()
    with torch.no_grad():
        trained = loss_of(D, torch.Generator().manual_seed(99)).item()
        exact = loss_of(gm.denoiser(sched), torch.Generator().manual_seed(99)).item()
    assert trained < 0.5 * first
    assert trained < 1.5 * exact, (trained, exact)
