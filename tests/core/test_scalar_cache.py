"""The per-grid cache of 0-dim coefficient tensors that samplers share across runs."""

from __future__ import annotations

import pytest
import torch

from diffusekit.core import samplers, schedules
from diffusekit.core.samplers import Grid, scalar_cache, step_scalars


def test_equal_tables_give_the_same_tensors_and_other_keys_do_not():
    scalar_cache.clear()
    a = step_scalars(torch.zeros(1), torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]))
    b = step_scalars(torch.zeros(1), torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]))
    assert a is b and [tuple(float(v) for v in row) for row in a] == [(1.0, 3.0), (2.0, 4.0)]
    assert step_scalars(torch.zeros(1), torch.tensor([1.0, 2.5]), torch.tensor([3.0, 4.0])) is not a
    half = step_scalars(torch.zeros(1, dtype=torch.float64), torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]))
    assert half is not a and half[0][0].dtype == torch.float64  # the compute dtype is part of the key


def test_scalars_are_at_least_float32_and_on_the_state_device():
    rows = step_scalars(torch.zeros(2, dtype=torch.bfloat16), torch.tensor([0.1, 0.2], dtype=torch.float64))
    assert [r[0].dtype for r in rows] == [torch.float32] * 2 and rows[0][0].dim() == 0
    assert float(rows[1][0]) == pytest.approx(0.2, rel=1e-7)  # rounded once, to float32


def test_the_cache_keeps_at_most_capacity_tables():
    scalar_cache.clear()
    for k in range(scalar_cache.CAPACITY + 5):
        step_scalars(torch.zeros(1), torch.tensor([float(k)]))
    assert scalar_cache.size() == scalar_cache.CAPACITY


def test_grid_times_are_shared_by_runs_of_an_equal_grid():
    sched = schedules.get("vp_cosine")
    like = torch.zeros(3, 2)
    first = Grid.build(sched, schedules.time_grid(sched, 5)).times(like)
    second = Grid.build(sched, schedules.time_grid(sched, 5)).times(like)
    assert first is second and len(first) == 6 and float(first[-1]) == 0.0


# every sampler and option set that takes its own path through the engine (churn, noise)
RUNS = [(name, {}) for name in samplers.names()] + [
    ("ddim", {"eta": 1.0}), ("euler", {"S_churn": 20.0}), ("heun", {"S_churn": 20.0, "S_tmin": 0.05, "S_tmax": 50.0})]


@pytest.mark.parametrize(("name", "options"), RUNS)
def test_sampling_results_do_not_depend_on_the_cache(name, options):
    """Cold (cache emptied) and warm runs agree exactly: the shared tensors are read-only, so a
    run that wrote to one in place would change the next run of the same grid and fail here."""
    sched = schedules.get("vp_linear")
    noise = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))

    def denoiser(x, t, **cond):
        return 0.5 * x

    def sample():
        return samplers.get(name)(denoiser, noise, schedules.time_grid(sched, 7), sched,
                                  generator=torch.Generator().manual_seed(1), **options)

    runs = []
    for _ in range(2):
        scalar_cache.clear()
        runs.append(sample())
    warm = [sample() for _ in range(2)]
    assert torch.equal(runs[0], runs[1]) and all(torch.equal(runs[0], w) for w in warm), name
