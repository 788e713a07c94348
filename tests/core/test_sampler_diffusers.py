"""Reference agreement: our samplers against diffusers' schedulers on the same problem.

Same discrete VP schedule (DDPM linear betas over 1000 steps, diffusers' own float32
alphas_cumprod), same timesteps (diffusers' timestep_spacing="trailing" <-> our
`time_grid(kind="trailing")`: t = (k + 1) / 1000 for diffusers' step k), same eps-network (the
exact eps of a 4-D Gaussian mixture as a function of diffusers' integer timestep; our Denoiser
feeds it that timestep through the "train_step" noise input), same start
x_T = sigma(t_max) * noise, and, for the stochastic ones, the same fresh noise. The final step
lands on alpha = 1 in both (set_alpha_to_one=True, final_sigmas_type="zero").

diffusers' DPM-Solver computes in float32 internally; the tolerance 1e-4 covers that.
"""

from __future__ import annotations

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffusekit.core import samplers, schedules  # noqa: E402
from diffusekit.core.analytic import GaussianMixture  # noqa: E402
from diffusekit.core.parameterization import Denoiser  # noqa: E402

DIM, BATCH, TOL = 4, 64, 1e-4
COMMON = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
              prediction_type="epsilon", timestep_spacing="trailing")


def make_eps_net(alphas_cumprod: torch.Tensor):
    """The exact eps-predictor of a fixed 4-D Gaussian mixture, as a network eps(x [B, D], k [B])
    of diffusers' timestep k (alpha_bar linearly interpolated between integer steps)."""
    mixture = GaussianMixture.random(dim=DIM, n_modes=4, seed=3)
    ab = alphas_cumprod.to(torch.float64)

    def eps_net(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        k = torch.as_tensor(k, dtype=torch.float64).expand(x.shape[0]).clamp(0, len(ab) - 1)
        lo = k.floor().long().clamp(max=len(ab) - 2)
        a_bar = torch.lerp(ab[lo], ab[lo + 1], k - lo)
        alpha, sigma = a_bar.sqrt(), (1.0 - a_bar).sqrt()
        x0 = mixture.posterior_mean(x, alpha, sigma)
        return (x - alpha[:, None] * x0) / sigma[:, None]

    return eps_net


class ReplayNoise:
    """A Euclidean noise space whose fresh noise is a given list, to share it with diffusers."""

    def __init__(self, noises: list[torch.Tensor]) -> None:
        self.noises, self.drawn = noises, 0

    def randn_like(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        z = self.noises[self.drawn]
        self.drawn += 1
        return z

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.fixture(scope="module")
def problem():
    ref = diffusers.DDIMScheduler(**COMMON)
    schedule = schedules.get("vp_discrete", alphas_cumprod=tuple(ref.alphas_cumprod.double().tolist()))
    net = make_eps_net(ref.alphas_cumprod)
    denoiser = Denoiser(net, schedule, prediction="eps", noise_input="train_step")
    noise = torch.randn(BATCH, DIM, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return schedule, net, denoiser, noise


def run_reference(scheduler, net, x: torch.Tensor, n: int, **step_kwargs) -> torch.Tensor:
    """The diffusers loop; step_kwargs values that are lists are indexed per step."""
    scheduler.set_timesteps(n)
    for i, t in enumerate(scheduler.timesteps):
        kwargs = {k: (v[i] if isinstance(v, list) else v) for k, v in step_kwargs.items()}
        x = scheduler.step(net(x, t), t, x, **kwargs).prev_sample
    return x


def ours(name: str, problem, n: int, **options) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    schedule, _, denoiser, noise = problem
    ts = schedules.time_grid(schedule, n, kind="trailing")
    x_start = schedule.sigma(ts[0]) * noise
    return samplers.get(name)(denoiser, noise, ts, schedule, **options), x_start, ts


def test_trailing_grid_matches_diffusers_timesteps(problem):
    schedule = problem[0]
    for n in (10, 25, 50):
        ref = diffusers.DPMSolverMultistepScheduler(**COMMON)
        ref.set_timesteps(n)
        ts = schedules.time_grid(schedule, n, kind="trailing")
        assert torch.equal(torch.round(ts[:-1] * 1000).long() - 1, ref.timesteps.long())
        assert ts[-1] == 0


@pytest.mark.parametrize("n", [10, 50])
def test_ddim_matches_diffusers(problem, n):
    _, net, _, _ = problem
    x, x_start, _ = ours("ddim", problem, n)
    ref = diffusers.DDIMScheduler(**COMMON, set_alpha_to_one=True, clip_sample=False)
    expected = run_reference(ref, net, x_start, n)
    assert (x - expected).abs().max() < TOL


def test_ddim_eta1_and_ddpm_match_diffusers_with_shared_noise(problem):
    _, net, _, _ = problem
    n = 20
    x, x_start, _ = ours("ddim", problem, n, eta=1.0, generator=torch.Generator().manual_seed(7))
    ref = diffusers.DDIMScheduler(**COMMON, set_alpha_to_one=True, clip_sample=False)
    expected = run_reference(ref, net, x_start, n, eta=1.0, generator=torch.Generator().manual_seed(7))
    assert (x - expected).abs().max() < TOL
    # DDPM's posterior (variance "fixed_small" = beta-tilde) is the same law, stepped directly
    x, _, _ = ours("ddpm", problem, n, generator=torch.Generator().manual_seed(7))
    ref = diffusers.DDPMScheduler(**COMMON, clip_sample=False, variance_type="fixed_small")
    expected = run_reference(ref, net, x_start, n, generator=torch.Generator().manual_seed(7))
    assert (x - expected).abs().max() < TOL


# dpmpp_3m ramps its order down to 2 on the second-to-last step; diffusers does that only for
# fewer than 15 steps (lower_order_final), so the 3M comparison uses n < 15.
@pytest.mark.parametrize(("name", "order", "n"), [("dpmpp_2m", 2, 10), ("dpmpp_2m", 2, 25),
                                                  ("dpmpp_3m", 3, 10), ("dpmpp_3m", 3, 14)])
def test_dpmpp_matches_diffusers(problem, name, order, n):
    _, net, _, _ = problem
    x, x_start, _ = ours(name, problem, n)
    ref = diffusers.DPMSolverMultistepScheduler(
        **COMMON, algorithm_type="dpmsolver++", solver_order=order, final_sigmas_type="zero",
        lower_order_final=True, euler_at_final=False, thresholding=False)
    expected = run_reference(ref, net, x_start, n)
    assert (x - expected).abs().max() < TOL
    assert (x - x_start).abs().max() > 0.1  # the comparison is not vacuous


def test_dpmpp_2m_sde_matches_diffusers_with_shared_noise(problem):
    schedule, net, denoiser, noise = problem
    n = 20
    g = torch.Generator().manual_seed(3)
    noises = [torch.randn(BATCH, DIM, generator=g, dtype=torch.float64) for _ in range(n)]
    ts = schedules.time_grid(schedule, n, kind="trailing")
    space = ReplayNoise(noises)
    x = samplers.get("dpmpp_2m_sde")(denoiser, noise, ts, schedule, space=space)
    assert space.drawn == n - 1  # no noise on the final, noise-free step to t = 0
    ref = diffusers.DPMSolverMultistepScheduler(
        **COMMON, algorithm_type="sde-dpmsolver++", solver_order=2, final_sigmas_type="zero",
        lower_order_final=True)
    expected = run_reference(ref, net, schedule.sigma(ts[0]) * noise, n, variance_noise=noises)
    assert (x - expected).abs().max() < TOL


@pytest.mark.parametrize(("order", "n"), [(1, 10), (2, 10), (2, 25), (3, 10), (3, 20)])
def test_unipc_matches_diffusers(problem, order, n):
    _, net, _, _ = problem
    x, x_start, _ = ours("unipc", problem, n, order=order)
    ref = diffusers.UniPCMultistepScheduler(
        **COMMON, solver_order=order, solver_type="bh2", predict_x0=True, final_sigmas_type="zero",
        lower_order_final=True)
    expected = run_reference(ref, net, x_start, n)
    assert (x - expected).abs().max() < TOL
