"""Masking schedules and the shared sampling pieces of diffusekit.core.discrete: analytic truths
(alpha(0) = 1, derivatives, closed forms), registry behaviour, filtering and categorical draws."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from diffusekit.core.discrete import (
    MaskedDiffusion,
    UniformDiffusion,
    filtered_probs,
    nats_to_bits,
    sample_categorical,
    schedules,
    top_p_filter,
)
from diffusekit.core.discrete.sampling import (
    block_spans,
    check_logits,
    low_discrepancy_steps,
    low_discrepancy_times,
    uniform_time_grid,
)
from diffusekit.core.registry import UnknownNameError

BUILTINS = ["cosine", "linear", "loglinear", "polynomial"]
T_GRID = torch.linspace(1e-3, 1.0, 257, dtype=torch.float64)


def test_builtins_registered():
    assert set(BUILTINS) <= set(schedules.names())


@pytest.mark.parametrize("name", BUILTINS)
def test_alpha_endpoints_and_monotone(name):
    s = schedules.get(name)
    assert float(s.alpha(0.0)) == pytest.approx(1.0, abs=1e-12)  # t = 0 is the data
    alpha = s.alpha(T_GRID)
    assert (alpha.diff() < 0).all()  # strictly decreasing
    assert ((alpha >= 0) & (alpha <= 1)).all()


def test_terminal_alpha():
    assert float(schedules.get("loglinear").alpha(1.0)) == pytest.approx(schedules.MDLM_EPS)
    assert float(schedules.get("loglinear", eps=0.01).alpha(1.0)) == pytest.approx(0.01)
    for name in ("linear", "cosine", "polynomial"):
        assert float(schedules.get(name).alpha(1.0)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", BUILTINS)
def test_derivative_matches_autograd(name):
    s = schedules.get(name)
    t = T_GRID.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(s.alpha(t).sum(), t)
    torch.testing.assert_close(s.alpha_prime(T_GRID), grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", BUILTINS)
def test_closed_forms_agree_with_definitions(name):
    s = schedules.get(name)
    torch.testing.assert_close(s.mask_prob(T_GRID), 1 - s.alpha(T_GRID), rtol=1e-9, atol=1e-12)
    weight = -s.alpha_prime(T_GRID) / (1 - s.alpha(T_GRID))
    torch.testing.assert_close(s.loss_weight(T_GRID), weight, rtol=1e-8, atol=1e-10)
    assert (s.loss_weight(T_GRID) >= 0).all()


@pytest.mark.parametrize("name", BUILTINS)
def test_weight_integrates_to_terminal_mass(name):
    # int_0^1 w(t) (1 - alpha_t) dt = alpha(0) - alpha(1): the share of the unmasking the bound
    # covers (1 - eps for loglinear, 1 otherwise). Midpoint rule on a fine grid.
    s = schedules.get(name)
    n = 200_000
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    integral = float((s.loss_weight(t) * s.mask_prob(t)).mean())
    assert integral == pytest.approx(float(s.alpha(0.0) - s.alpha(1.0)), abs=1e-6)


@pytest.mark.parametrize("name", BUILTINS)
def test_unmask_prob_is_a_probability_and_composes(name):
    s = schedules.get(name)
    t, m, r = torch.tensor(0.9, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64), 0.2
    for a, b in [(t, m), (m, r), (t, r)]:
        assert 0.0 <= float(s.unmask_prob(a, b)) <= 1.0
    # Staying masked from t to r = staying masked t -> m, then m -> r.
    stay = lambda a, b: 1 - s.unmask_prob(a, b)  # noqa: E731
    assert float(stay(t, r)) == pytest.approx(float(stay(t, m) * stay(m, r)), rel=1e-12)
    assert float(s.unmask_prob(t, 0.0)) == pytest.approx(1.0)  # reaching t = 0 unmasks all


def test_unknown_schedule_lists_known_names():
    with pytest.raises(UnknownNameError) as info:
        schedules.get("cosin")
    message = str(info.value)
    assert "did you mean 'cosine'" in message
    for name in BUILTINS:
        assert name in message
    with pytest.raises(KeyError, match="known: cosine, linear, loglinear"):
        MaskedDiffusion(vocab_size=4, mask_id=4, schedule="sqrt")
    with pytest.raises(KeyError, match="known:"):
        UniformDiffusion(vocab_size=4, schedule="nope")
    with pytest.raises(TypeError, match="MaskingSchedule"):
        MaskedDiffusion(vocab_size=4, schedule=3)


def test_bad_schedule_parameters():
    with pytest.raises(ValueError, match="eps"):
        schedules.get("loglinear", eps=1.5)
    with pytest.raises(ValueError, match="exponent"):
        schedules.get("polynomial", w=0)


# -- filtering and draws ----------------------------------------------------------------------


def test_top_p_keeps_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3]], dtype=torch.float64)
    out = top_p_filter(probs, 0.6)  # {0.5, 0.3} is the smallest set with mass >= 0.6
    torch.testing.assert_close(out, torch.tensor([[0.625, 0.375, 0.0], [0.0, 0.625, 0.375]], dtype=torch.float64))
    torch.testing.assert_close(top_p_filter(probs, 0.5)[0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert top_p_filter(probs, 1.0) is probs
    torch.testing.assert_close(top_p_filter(probs, 1e-9).argmax(-1), probs.argmax(-1))


def test_filtered_probs_normalised_and_greedy_limits():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 7, 11, generator=g)
    for temperature, top_p in [(1.0, 1.0), (0.7, 0.9), (2.0, 0.3)]:
        probs = filtered_probs(logits, temperature, top_p)
        assert probs.dtype == torch.float64
        torch.testing.assert_close(probs.sum(-1), torch.ones(64, 7, dtype=torch.float64))
        assert (probs >= 0).all()
    argmax = torch.nn.functional.one_hot(logits.argmax(-1), 11).double()
    torch.testing.assert_close(filtered_probs(logits, 0.0), argmax)
    assert torch.equal(filtered_probs(logits, 1e-3).argmax(-1), logits.argmax(-1))
    with pytest.raises(ValueError, match="temperature"):
        filtered_probs(logits, -1.0)
    with pytest.raises(ValueError, match="top_p"):
        filtered_probs(logits, 1.0, 0.0)


def test_sample_categorical_follows_probs_and_skips_zeros():
    probs = torch.tensor([0.0, 0.45, 0.05, 0.0, 0.3, 0.2, 0.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    draws = sample_categorical(probs.expand(20_000, -1), g)
    counts = torch.bincount(draws, minlength=7)
    assert counts[probs == 0].sum() == 0
    keep = probs > 0
    p_value = stats.chisquare(counts[keep].numpy(), (probs[keep] * 20_000).numpy()).pvalue
    assert p_value > 0.01
    # same generator state -> same draws, and exactly one uniform per row is consumed
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a = sample_categorical(torch.rand(3, 4, 9, generator=torch.Generator().manual_seed(0)).softmax(-1), g1)
    b = sample_categorical(torch.full((3, 4, 9), 1 / 9, dtype=torch.float64), g2)
    assert a.shape == b.shape == (3, 4)
    assert torch.equal(torch.rand(5, generator=g1), torch.rand(5, generator=g2))


def test_low_discrepancy_times_cover_strata():
    g = torch.Generator().manual_seed(0)
    t = low_discrepancy_times(64, t_min=1e-3, generator=g, dtype=torch.float64)
    assert t.shape == (64,) and (t >= 1e-3).all() and (t < 1).all()
    # one time per stratum of width (1 - t_min) / n
    strata = torch.floor((t - 1e-3) / (1 - 1e-3) * 64).long()
    assert sorted(strata.tolist()) == list(range(64))
    # each t_i is marginally uniform: the mean over many draws is (1 + t_min) / 2
    firsts = torch.cat([low_discrepancy_times(2, generator=g, dtype=torch.float64)[:1] for _ in range(2000)])
    assert float(firsts.mean()) == pytest.approx(0.5, abs=4 * math.sqrt(1 / 12 / 2000))
    steps = low_discrepancy_steps(10, 10, generator=g)
    assert sorted(steps.tolist()) == list(range(1, 11))


def test_grids_blocks_and_checks():
    grid = uniform_time_grid(4)
    assert grid == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert block_spans(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert block_spans(10, None) == [(0, 10)]
    with pytest.raises(ValueError, match="steps"):
        uniform_time_grid(0)
    with pytest.raises(ValueError, match="mask token"):
        check_logits(torch.zeros(2, 3, 6), 2, 3, 5)
    assert float(nats_to_bits(torch.tensor(math.log(2.0)))) == pytest.approx(1.0)
