"""Analytic tests: samplers driven by the exact denoiser E[x0 | x_t] of a Gaussian mixture.

With no learning error, the sliced Wasserstein distance (SW) between a sampler's output and true
mixture samples measures the sampler's own discretisation error, down to a sampling-noise floor
(the SW between two independent true sample sets of the same size). All samplers share the same
start noise and the same true reference set, so comparisons between them are paired.

Setting: vp_linear schedule, float64, the time-uniform grid (Lu et al. 2022 recommend it for
low-dimensional data) for all samplers but Heun, which walks its own paper's grid (Karras et al.
2022, rho = 7): on the uniform grid its final Euler step, from sigma/alpha ~ 0.14 at 25 steps,
would dominate its error. Torch runs on one thread here (the test machine has two shared cores). NFE is counted honestly: Heun with n steps costs 2n - 1 evaluations, so a budget
of k NFE gives it n = (k + 1) // 2 steps (at most k evaluations).
"""

from __future__ import annotations

import functools

import pytest
import torch

from diffusekit.core import samplers, schedules
from diffusekit.core.analytic import GaussianMixture, sliced_wasserstein

DETERMINISTIC = ["ddim", "euler", "heun", "dpmpp_2m", "dpmpp_3m", "unipc"]
NFES = (5, 10, 20, 50)
SCHEDULE = schedules.get("vp_linear")
GRID_KINDS = {"heun": "karras"}  # every other sampler: "uniform"
# name -> (mixture, number of samples, projections); the ring is cheap, so it gets more samples
MIXTURES = {
    "ring_2d": (GaussianMixture.ring_2d(), 6_000, 64),
    "random_16d": (GaussianMixture.random(dim=16), 4_000, 128),
}


def steps_for(name: str, nfe: int) -> int:
    """Steps that fit in an NFE budget: Heun evaluates twice per step except on the last."""
    return (nfe + 1) // 2 if name == "heun" else nfe


def sw(mixture_name: str, a: torch.Tensor, b: torch.Tensor) -> float:
    _, _, n_projections = MIXTURES[mixture_name]
    return float(sliced_wasserstein(a, b, n_projections, torch.Generator().manual_seed(0)))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@functools.cache
def reference(mixture_name: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(true samples [n, D], start noise [n, D], noise floor): the floor is the mean SW between
    three pairs of independent true sample sets of size n."""
    mixture, n, _ = MIXTURES[mixture_name]
    true = mixture.sample(n, torch.Generator().manual_seed(1))
    noise = torch.randn(n, mixture.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    floors = [sw(mixture_name, mixture.sample(n, torch.Generator().manual_seed(10 + k)),
                 mixture.sample(n, torch.Generator().manual_seed(20 + k))) for k in range(3)]
    return true, noise, sum(floors) / len(floors)


@functools.cache
def sampled(mixture_name: str, name: str, nfe: int) -> torch.Tensor:
    mixture = MIXTURES[mixture_name][0]
    _, noise, _ = reference(mixture_name)
    ts = schedules.time_grid(SCHEDULE, steps_for(name, nfe), GRID_KINDS.get(name, "uniform"))
    return samplers.get(name)(mixture.denoiser(SCHEDULE), noise, ts, SCHEDULE)


@functools.cache
def distance(mixture_name: str, name: str, nfe: int) -> float:
    true, _, _ = reference(mixture_name)
    return sw(mixture_name, sampled(mixture_name, name, nfe), true)


@pytest.mark.parametrize("mixture_name", list(MIXTURES))
def test_euler_is_ddim_eta0(mixture_name):
    """Karras' Euler step in VE coordinates is DDIM (eta = 0): the same outputs."""
    torch.testing.assert_close(sampled(mixture_name, "euler", 10), sampled(mixture_name, "ddim", 10),
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", DETERMINISTIC)
@pytest.mark.parametrize("mixture_name", list(MIXTURES))
def test_error_decreases_with_nfe_down_to_the_noise_floor(mixture_name, name):
    _, _, floor = reference(mixture_name)
    d = {nfe: distance(mixture_name, name, nfe) for nfe in NFES}
    assert d[5] > 1.5 * d[50], d  # 5 -> 50 NFE: clearly better
    assert d[5] > d[10] > d[50], d  # and better at every budget short of the floor
    assert d[20] < d[5], d
    assert d[50] < 1.3 * floor, (d, floor)  # 50 NFE: at the sampling-noise floor


@pytest.mark.parametrize("mixture_name", list(MIXTURES))
def test_dpmpp_2m_beats_first_order_samplers_at_10_nfe(mixture_name):
    d2m = distance(mixture_name, "dpmpp_2m", 10)
    assert d2m < distance(mixture_name, "ddim", 10)
    assert d2m < distance(mixture_name, "euler", 10)


@pytest.mark.parametrize("mixture_name", list(MIXTURES))
def test_noise_floor_is_small_against_a_bad_sampler(mixture_name):
    """Sanity of the yardstick: the floor is far below the error of a 1-step sampler."""
    _, _, floor = reference(mixture_name)
    assert distance(mixture_name, "ddim", 1) > 3 * floor


def exact_consistency_function(mixture: GaussianMixture, n_ode: int = 50):
    """f(x, t): the probability-flow ODE of the exact denoiser solved from t to 0 (dpmpp_2m, n_ode
    uniform steps): the mixture's consistency function, up to that solver's error (at the floor)."""
    D = mixture.denoiser(SCHEDULE)

    def consistency_function(x, t, **cond):
        t = float(t)  # a host read: this test denoiser runs a whole sampler per call
        sigma = SCHEDULE.sigma(torch.tensor(t, dtype=torch.float64)).to(x.dtype)
        ts = schedules.time_grid(SCHEDULE, n_ode, "uniform", t_max=t)
        return samplers.get("dpmpp_2m")(D, x / sigma, ts, SCHEDULE)

    return consistency_function


@pytest.mark.parametrize("mixture_name", list(MIXTURES))
def test_the_consistency_sampler_of_the_exact_consistency_function_is_exact_at_any_nfe(mixture_name):
    """Consistency Models, Algorithm 1: with the exact consistency function, one step is already a
    sample, and re-noising a sample to t_i and mapping it back again gives a sample too, so 1, 2
    and 4 steps all land at the floor. The same loop with the plain denoiser E[x0 | x_t] at 4 steps
    does not (it collapses every step onto posterior means)."""
    true, noise, floor = reference(mixture_name)
    mixture = MIXTURES[mixture_name][0]
    sample = samplers.get("consistency")
    for n in (1, 2, 4):
        ts = schedules.time_grid(SCHEDULE, n, "uniform")
        x = sample(exact_consistency_function(mixture), noise, ts, SCHEDULE, generator=torch.Generator().manual_seed(3))
        assert sw(mixture_name, x, true) < 1.3 * floor, (n, sw(mixture_name, x, true), floor)
    plain = sample(mixture.denoiser(SCHEDULE), noise, schedules.time_grid(SCHEDULE, 4, "uniform"), SCHEDULE,
                   generator=torch.Generator().manual_seed(3))
    assert sw(mixture_name, plain, true) > 2 * floor
