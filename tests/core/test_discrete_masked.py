"""MaskedDiffusion (MDLM): the NELBO against exact entropies and the sampler against exact
distributions, with models that have no learning error (diffusekit.core.discrete.analytic).

Tolerances are statistical. Each NELBO figure is the mean of R independent replicate batches,
its standard error (SE) is measured from the spread of the replicates, and a test asserts
|mean - expected| < 4 SE (a 6e-5 false-alarm rate under normality) together with a cap on the SE
itself, so a test cannot pass merely by being noisy. The MDLM estimator is intrinsically noisy:
the weight -alpha'/(1 - alpha) ~ 1/t times a Binomial(L, t) count of masked tokens gives a
per-token variance ~ E[CE^2] log(1/t_min): the default test's 8.4e6 tokens buy an SE of ~0.15%
of H (the bound resolved to ~0.6%), the `slow` variant's 6.7e7 tokens ~0.05% (~0.2%).
The O(1e-3) factors ((1 - eps) for loglinear, the t_min clamp) are below that resolution and are
checked exactly instead: `expected` below is exact, and the schedules' weights are integrated
deterministically in test_discrete_schedules.py. With the exact i.i.d. model the integrand of the
bound is -alpha'(t) H, so the estimator (uniform t on [t_min, 1]) has mean
H (alpha(t_min) - alpha(1)) / (1 - t_min): exactly (1 - eps) H for loglinear, H for linear,
H (1 - 0.57 t_min + ...) for cosine.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from diffusekit.core.discrete import MaskedDiffusion
from diffusekit.core.discrete.analytic import IIDSource, MarkovSource

V = 5
P_IID = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08], dtype=torch.float64)
P_WRONG = P_IID.flip(0)  # a deliberately wrong model: the same numbers on the wrong tokens
TRANSITION = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]], dtype=torch.float64)


def replicate_nelbo(proc, logits_fn, draw, replicates: int, generator, **kw) -> tuple[float, float]:
    """Mean and standard error of the batch-mean NELBO over independent replicate batches."""
    means = torch.stack([proc.loss(logits_fn, draw(), generator=generator, **kw).mean() for _ in range(replicates)])
    return float(means.mean()), float(means.std() / math.sqrt(replicates))


def expected_iid_nelbo(proc: MaskedDiffusion, per_token: float) -> float:
    s, t_min = proc.schedule, proc.t_min
    return per_token * float(s.alpha(t_min) - s.alpha(1.0)) / (1 - t_min)


# -- construction -----------------------------------------------------------------------------


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"mask_id=3 collides with the vocabulary \[0, 5\)"):
        MaskedDiffusion(vocab_size=5, mask_id=3)
    with pytest.raises(ValueError, match="collides"):
        MaskedDiffusion(vocab_size=5, mask_id=0)
    with pytest.raises(ValueError, match="non-negative"):
        MaskedDiffusion(vocab_size=5, mask_id=-1)
    with pytest.raises(ValueError, match="vocab_size"):
        MaskedDiffusion(vocab_size=0)
    with pytest.raises(ValueError, match="t_min"):
        MaskedDiffusion(vocab_size=5, t_min=0.0)
    assert MaskedDiffusion(vocab_size=5).mask_id == 5
    assert MaskedDiffusion(vocab_size=5, mask_id=7).mask_id == 7


def test_logits_over_mask_token_rejected():
    proc = MaskedDiffusion(V, V)
    tokens = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="real vocabulary only"):
        proc.loss(lambda z, t: torch.zeros(2, 4, V + 1), tokens)


# -- forward process --------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["loglinear", "linear", "cosine"])
def test_q_sample_masks_at_rate_one_minus_alpha(schedule):
    proc = MaskedDiffusion(V, V, schedule)
    g = torch.Generator().manual_seed(0)
    tokens = IIDSource(P_IID).sample((400, 100), g)
    t = torch.tensor([0.1, 0.5, 0.9, 1.0]).repeat_interleave(100)
    z = proc.q_sample(tokens, t, g)
    assert torch.equal(z[z != V], tokens[z != V])  # only ever replaced by the mask
    rate = (z == V).double().view(4, -1).mean(-1)
    expected = proc.schedule.mask_prob(torch.tensor([0.1, 0.5, 0.9, 1.0], dtype=torch.float64))
    assert torch.allclose(rate, expected, atol=4 * math.sqrt(0.25 / 10_000))


# -- the bound against exact entropies --------------------------------------------------------


def _check_iid_nelbo(schedule: str, batch: int, replicates: int, se_cap: float) -> None:
    source = IIDSource(P_IID)
    proc = MaskedDiffusion(V, V, schedule)
    g = torch.Generator().manual_seed(1)
    draw = lambda: source.sample((batch, 64), g)  # noqa: E731
    mean, se = replicate_nelbo(proc, source.masked_logits_fn(), draw, replicates, g)
    H = source.entropy()
    expected = expected_iid_nelbo(proc, H)
    assert abs(expected - H) <= 1.1e-3 * H  # (1 - eps) H for loglinear, H within O(t_min) else
    assert se < se_cap * H, f"estimator too noisy to be a tight test (SE {se:.2e})"
    assert abs(mean - expected) < 4 * se, f"{schedule}: NELBO {mean:.5f} vs {expected:.5f} (H {H:.5f}) SE {se:.1e}"


@pytest.mark.parametrize("schedule", ["loglinear", "linear", "cosine"])
def test_iid_nelbo_equals_entropy(schedule):
    _check_iid_nelbo(schedule, batch=4096, replicates=32, se_cap=3e-3)


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["loglinear", "linear", "cosine"])
def test_iid_nelbo_equals_entropy_precise(schedule):
    _check_iid_nelbo(schedule, batch=4096, replicates=256, se_cap=1e-3)


def test_wrong_model_costs_the_cross_entropy():
    # E[NELBO] of a model predicting q at every masked position is H(p, q) = H(p) + KL(p || q).
    source = IIDSource(P_IID)
    proc = MaskedDiffusion(V, V, "linear")
    g = torch.Generator().manual_seed(2)
    fn = source.masked_logits_fn(P_WRONG)
    mean, se = replicate_nelbo(proc, fn, lambda: source.sample((1024, 64), g), 8, g)
    cross = source.cross_entropy(P_WRONG)
    assert cross > source.entropy() + 0.5
    assert abs(mean - cross) < 4 * se
    assert mean > source.entropy() + 50 * se


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_markov_nelbo_is_tight_upper_bound(schedule):
    # For exact conditionals the continuous-time bound equals the any-order-autoregressive
    # log-likelihood, i.e. -log p(x) itself: E[NELBO] = H(x_0..x_{L-1}) / L exactly. It must sit
    # at the entropy rate of the sequence, not at the (larger) marginal entropy.
    source = MarkovSource.stationary(TRANSITION)
    L = 12
    proc = MaskedDiffusion(3, 3, schedule)
    g = torch.Generator().manual_seed(3)
    fn = source.masked_logits_fn(3)
    mean, se = replicate_nelbo(proc, fn, lambda: source.sample((1024, L), g), 16, g)
    H = source.entropy(L) / L
    marginal_H = float(-(source.initial * source.initial.log()).sum())
    assert se < 1e-2
    assert mean >= H - 4 * se  # an upper bound
    assert abs(mean - H) < 4 * se  # and a tight one for the exact model
    assert mean < marginal_H - 10 * se  # the model uses the context


def test_padding_is_excluded_and_normalised_by_count():
    source = IIDSource(P_IID)
    proc = MaskedDiffusion(V, V, "linear")
    g = torch.Generator().manual_seed(4)
    lengths = torch.randint(8, 65, (2048,), generator=g)
    attention = torch.arange(64).expand(2048, -1) < lengths[:, None]
    pad_id = 99  # outside the vocabulary: must never reach the gather

    def draw():
        return torch.where(attention, source.sample((2048, 64), g), torch.full((2048, 64), pad_id))

    tokens = draw()
    z = proc.q_sample(tokens, torch.full((2048,), 0.9), g, attention_mask=attention)
    assert torch.equal(z[~attention], tokens[~attention])  # padding is never masked
    mean, se = replicate_nelbo(proc, source.masked_logits_fn(), draw, 8, g, attention_mask=attention)
    assert abs(mean - source.entropy()) < 4 * se  # per real token, not per padded position


def test_bits_per_token_and_gradients():
    source = IIDSource(P_IID)
    proc = MaskedDiffusion(V, V)
    tokens = source.sample((64, 16), torch.Generator().manual_seed(5))
    nats = proc.loss(source.masked_logits_fn(), tokens, generator=torch.Generator().manual_seed(6))
    bits = proc.bits_per_token(source.masked_logits_fn(), tokens, generator=torch.Generator().manual_seed(6))
    assert nats.shape == bits.shape == (64,)
    torch.testing.assert_close(bits, nats / math.log(2.0))
    # the loss is differentiable in the network's output, with finite gradients
    logits = torch.zeros(V, requires_grad=True)
    loss = proc.loss(lambda z, t: logits.expand(z.shape[0], z.shape[1], V), tokens).mean()
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    # fixed t is honoured: at t = 1 every token is masked, the weight is 1/t = 1, and the
    # NELBO of a uniform model is exactly log V
    linear = MaskedDiffusion(V, V, "linear")
    flat = linear.loss(lambda z, t: torch.zeros(z.shape[0], z.shape[1], V), tokens, t=torch.ones(64))
    torch.testing.assert_close(flat, torch.full((64,), math.log(V)))


# -- samples against the exact distributions --------------------------------------------------


def _chisquare_p(samples: torch.Tensor, probs: torch.Tensor) -> float:
    counts = torch.bincount(samples.flatten(), minlength=len(probs)).double()
    return float(stats.chisquare(counts.numpy(), (probs * counts.sum()).numpy()).pvalue)


@pytest.mark.parametrize("schedule", ["loglinear", "cosine"])
def test_iid_samples_follow_marginal_and_wrong_model_rejected(schedule):
    source = IIDSource(P_IID)
    proc = MaskedDiffusion(V, V, schedule)
    samples = proc.sample(source.masked_logits_fn(), (64, 32), steps=16, generator=torch.Generator().manual_seed(7))
    assert samples.dtype == torch.long and samples.shape == (64, 32)
    assert ((samples >= 0) & (samples < V)).all()  # no mask left
    assert _chisquare_p(samples, P_IID) > 0.01
    wrong = proc.sample(source.masked_logits_fn(P_WRONG), (64, 32), steps=16, generator=torch.Generator().manual_seed(7))
    assert _chisquare_p(wrong, P_IID) < 1e-6


def _bigram_p_value(samples: torch.Tensor, transition: torch.Tensor) -> float:
    """Chi-square test of the transitions x_l -> x_{l+1} against the chain's rows."""
    V = transition.shape[0]
    pairs = samples[:, :-1] * V + samples[:, 1:]
    counts = torch.bincount(pairs.flatten(), minlength=V * V).view(V, V).double()
    expected = counts.sum(-1, keepdim=True) * transition
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    return float(stats.chi2.sf(chi2, df=V * (V - 1)))


def test_markov_samples_follow_the_chain():
    # Many steps: tokens are mostly unmasked one at a time, each from its exact conditional, so
    # the joint (here, the transition statistics) is right. One step draws every token from its
    # marginal independently and must fail the same test (the test has power).
    source = MarkovSource.stationary(TRANSITION)
    proc = MaskedDiffusion(3, 3, "linear")
    fn = source.masked_logits_fn(3)
    g = torch.Generator().manual_seed(8)
    good = proc.sample(fn, (256, 12), steps=128, generator=g)
    assert _bigram_p_value(good, source.transition) > 0.01
    one_step = proc.sample(fn, (256, 12), steps=1, generator=g)
    assert _bigram_p_value(one_step, source.transition) < 1e-6
