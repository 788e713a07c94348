"""The per-grid cache of 0-dim coefficient tensors that samplers share across runs."""

from __future__ import annotations

import torch

from diffusekit.core import samplers, schedules
from diffusekit.core.samplers import scalar_cache
from diffusekit.core.samplers.grid_coefficients import Grid, step_rows


def test_equal_tables_give_the_same_tensors_and_other_keys_do_not():
    scalar_cache.clear()
    a = step_rows([torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])], torch.zeros(1))
    b = step_rows([torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])], torch.zeros(1))
    assert a is b and [tuple(float(v) for v in row) for row in a] == [(1.0, 3.0), (2.0, 4.0)]
    assert step_rows([torch.tensor([1.0, 2.5]), torch.tensor([3.0, 4.0])], torch.zeros(1)) is not a
    half = step_rows([torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])], torch.zeros(1, dtype=torch.float64))
    assert half is not a and half[0][0].dtype == torch.float64  # the compute dtype is part of the key


def test_a_tensor_written_in_place_is_never_handed_out_again():
    scalar_cache.clear()
    rows = step_rows([torch.tensor([1.0, 2.0])], torch.zeros(1))
    rows[0][0].mul_(10)  # a caller misbehaves
    again = step_rows([torch.tensor([1.0, 2.0])], torch.zeros(1))
    assert again is not rows and float(again[0][0]) == 1.0


def test_the_cache_keeps_at_most_capacity_tables():
    scalar_cache.clear()
    for k in range(scalar_cache.CAPACITY + 5):
        step_rows([torch.tensor([float(k)])], torch.zeros(1))
    assert scalar_cache.size() == scalar_cache.CAPACITY


def test_grid_times_are_shared_by_runs_of_an_equal_grid():
    sched = schedules.get("vp_cosine")
    like = torch.zeros(3, 2)
    first = Grid.build(sched, schedules.time_grid(sched, 5)).times(like)
    second = Grid.build(sched, schedules.time_grid(sched, 5)).times(like)
    assert first is second and len(first) == 6 and float(first[-1]) == 0.0


def test_sampling_results_do_not_depend_on_the_cache():
    sched = schedules.get("vp_linear")
    noise = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))

    def denoiser(x, t, **cond):
        return 0.5 * x

    for name in ("heun", "euler", "ddim", "ddpm", "dpmpp_2m", "unipc"):
        runs = []
        for _ in range(2):
            scalar_cache.clear()
            runs.append(samplers.get(name)(denoiser, noise, schedules.time_grid(sched, 7), sched,
                                           generator=torch.Generator().manual_seed(1)))
        warm = samplers.get(name)(denoiser, noise, schedules.time_grid(sched, 7), sched,
                                  generator=torch.Generator().manual_seed(1))
        assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], warm), name
