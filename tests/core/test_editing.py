"""SDEdit (core/editing.py): its start state, its checks, and its distribution under an exact
denoiser (a guide drawn from the data, perturbed to t0 and carried back by an exact reverse
process, is again a draw from the data; Meng et al. 2022, Sec. 3)."""

from __future__ import annotations

import pytest
import torch

from diffusekit.core import samplers, schedules
from diffusekit.core.analytic import GaussianMixture, sliced_wasserstein
from diffusekit.core.editing import sdedit, sdedit_noise
from diffusekit.core.spaces import Euclidean, ZeroCoM

SCHEDULE = schedules.get("vp_linear")


def test_the_start_state_is_the_guide_perturbed_to_t0():
    guide = torch.randn(6, 3, 4, dtype=torch.float64)
    t0 = 0.4
    noise = sdedit_noise(guide, t0, SCHEDULE, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(guide.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    alpha, sigma = SCHEDULE.alpha_sigma(torch.tensor(t0, dtype=torch.float64))
    grid = samplers.Grid.build(SCHEDULE, schedules.time_grid(SCHEDULE, 5, "uniform", t_max=t0))
    start = grid.start_state(noise, Euclidean())
    torch.testing.assert_close(start, alpha * guide + sigma * eps, rtol=1e-12, atol=1e-12)


def test_the_start_state_stays_in_the_zero_com_space():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    space = ZeroCoM(mask)
    guide = space.project(torch.randn(2, 4, 5, dtype=torch.float64))  # 3 positions + 2 features
    noise = sdedit_noise(guide, 0.5, SCHEDULE, space=space, generator=torch.Generator().manual_seed(0))
    start = 0.5 * space.project(noise)
    torch.testing.assert_close(start[..., :3].mul(mask[..., None]).sum(1),
                               torch.zeros(2, 3, dtype=torch.float64), rtol=0, atol=1e-12)
    assert start[0, 3].abs().max() == 0  # padding stays zero


@pytest.mark.parametrize("t0", [0.0, -0.2, 1.5])
def test_a_start_time_outside_the_schedule_is_refused(t0):
    with pytest.raises(ValueError, match="start time"):
        sdedit_noise(torch.zeros(2, 2), t0, SCHEDULE)


@pytest.mark.parametrize("name", samplers.names())
def test_every_registered_sampler_edits(name):
    mixture = GaussianMixture.ring_2d()
    guide = mixture.sample(64, torch.Generator().manual_seed(0))
    ts = schedules.time_grid(SCHEDULE, 8, "uniform", t_max=0.1)
    out = sdedit(samplers.get(name), mixture.denoiser(SCHEDULE), guide, ts, SCHEDULE,
                 generator=torch.Generator().manual_seed(1))
    assert out.shape == guide.shape and torch.isfinite(out).all()
    # t0 = 0.1 on vp_linear (alpha 0.95, sigma 0.32) keeps most of the signal: nearly every edit
    # stays on its guide's mode of the ring (modes 1.5 apart)
    mode = lambda x: (x[:, None] - mixture.means[None]).norm(dim=-1).argmin(1)  # noqa: E731
    assert (mode(out) == mode(guide)).double().mean() > 0.9


def test_an_exact_reverse_process_returns_the_data_distribution():
    """Guides from the mixture, t0 = 0.6, the exact denoiser, ddim at 100 steps: the edits are
    mixture samples again, as close (sliced W2) to fresh samples as the two-sample floor."""
    mixture = GaussianMixture.ring_2d()
    n = 4000
    guide = mixture.sample(n, torch.Generator().manual_seed(0))
    ts = schedules.time_grid(SCHEDULE, 100, "uniform", t_max=0.6)
    out = sdedit(samplers.get("ddim"), mixture.denoiser(SCHEDULE), guide, ts, SCHEDULE,
                 generator=torch.Generator().manual_seed(1))
    fresh = mixture.sample(n, torch.Generator().manual_seed(2))
    other = mixture.sample(n, torch.Generator().manual_seed(3))
    projections = lambda: torch.Generator().manual_seed(4)  # noqa: E731 - the same directions
    floor = sliced_wasserstein(other, fresh, 64, projections())
    distance = sliced_wasserstein(out, fresh, 64, projections())
    assert distance < 2.0 * floor + 0.02, (float(distance), float(floor))


def test_a_later_start_moves_further_from_the_guide():
    """Faithfulness falls as t0 grows (SDEdit Fig. 3): the mean distance to the guide rises."""
    mixture = GaussianMixture.ring_2d()
    guide = mixture.sample(2000, torch.Generator().manual_seed(0))
    distances = []
    for t0 in (0.05, 0.3, 0.6, 1.0):
        ts = schedules.time_grid(SCHEDULE, 50, "uniform", t_max=t0)
        out = sdedit(samplers.get("ddim"), mixture.denoiser(SCHEDULE), guide, ts, SCHEDULE,
                     generator=torch.Generator().manual_seed(1))
        distances.append(float((out - guide).norm(dim=1).mean()))
    assert distances == sorted(distances), distances
    assert distances[0] < 0.25 and distances[-1] > 1.0, distances
