"""The uniform_terminal time sampler: a share of draws exactly at t_max, the rest uniform."""

from __future__ import annotations

import pytest
import torch

from diffusekit.core import losses, schedules


@pytest.mark.parametrize("schedule", ["vp_cosine", "vp_linear", "flow"])
def test_terminal_share_and_uniform_rest(schedule):
    sched = schedules.get(schedule)
    t = losses.TIME_SAMPLERS.get("uniform_terminal")(20000, sched, torch.Generator().manual_seed(0),
                                                      p_terminal=0.3)
    assert t.shape == (20000,) and t.min() >= losses.T_EPS and t.max() <= sched.t_max
    at_end = t == sched.t_max
    assert at_end.float().mean().item() == pytest.approx(0.3, abs=0.015)
    rest = t[~at_end] / sched.t_max
    assert rest.mean().item() == pytest.approx(0.5, abs=0.01)  # U(0, 1): mean 1/2, var 1/12
    assert rest.var().item() == pytest.approx(1 / 12, abs=0.005)


def test_terminal_extremes_and_bad_share():
    sched = schedules.get("vp_cosine")
    g = torch.Generator().manual_seed(1)
    assert (losses.time_uniform_terminal(64, sched, g, p_terminal=1.0) == sched.t_max).all()
    assert (losses.time_uniform_terminal(64, sched, g, p_terminal=0.0) < sched.t_max).all()
    with pytest.raises(ValueError, match="p_terminal"):
        losses.time_uniform_terminal(4, sched, g, p_terminal=1.5)


def test_terminal_draws_train_the_posterior_mean():
    """With every draw at t_max and v weighting, the loss of a conditional model is (up to w ~ 1)
    the squared error of D(x_t, t_max) to x0: a denoiser that returns the data mean scores the
    data variance."""
    sched = schedules.get("vp_cosine")
    x0 = torch.randn(4096, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    mean_denoiser = lambda x, t: torch.zeros_like(x)  # noqa: E731  (E[x0] = 0)
    loss = losses.denoising_loss(mean_denoiser, x0, sched, "uniform_terminal", "v",
                                 generator=torch.Generator().manual_seed(3),
                                 t_sampler_options={"p_terminal": 1.0})
    w = float(losses.weight_v(sched.log_snr(torch.tensor(sched.t_max, dtype=torch.float64))))
    assert loss.mean().item() == pytest.approx(w * x0.pow(2).mean().item(), rel=1e-9)
    assert w == pytest.approx(1.0, abs=1e-3)
