"""UniformDiffusion (D3PM uniform): the posterior against brute-force Bayes, the discrete-time
NELBO of the exact model against the entropy, samples against the marginal.

With the exact x0-posterior p~(x0 | x_t) = q(x0 | x_t), the model's reverse kernel is the exact
q(x_{t-1} | x_t), so for a schedule with alpha(1) = 0 (x_T exactly uniform) the discrete-time
NELBO equals H exactly, for any number of steps T; tolerances are 4 measured standard errors
of replicate batches (see test_discrete_masked.py).
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from diffusekit.core.discrete import UniformDiffusion
from diffusekit.core.discrete.analytic import IIDSource

V = 5
P_IID = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08], dtype=torch.float64)


def brute_force_posterior(proc: UniformDiffusion, x_t: int, x0: int, t: float, s: float) -> torch.Tensor:
    """q(x_s | x_t, x0) from explicit transition matrices and Bayes' rule."""
    a_t, a_s = float(proc.alpha(t)), float(proc.alpha(s))
    eye, flat = torch.eye(V, dtype=torch.float64), torch.full((V, V), 1 / V, dtype=torch.float64)
    q_s0 = a_s * eye + (1 - a_s) * flat  # [x0, x_s]
    q_ts = (a_t / a_s) * eye + (1 - a_t / a_s) * flat  # [x_s, x_t]
    joint = q_s0[x0] * q_ts[:, x_t]  # q(x_s | x0) q(x_t | x_s)
    return joint / joint.sum()


def test_posterior_matches_bayes_and_model_kernel_is_normalised():
    proc = UniformDiffusion(V, "cosine", num_steps=10)
    for t, s in [(1.0, 0.9), (0.6, 0.3), (0.2, 0.1), (0.1, 0.0)]:
        x_t = torch.arange(V).repeat_interleave(V).view(1, -1)  # every (x_t, x0) pair
        x0 = torch.arange(V).repeat(V).view(1, -1)
        log_onehot = torch.zeros(1, V * V, V, dtype=torch.float64).masked_fill(
            ~torch.nn.functional.one_hot(x0, V).bool(), float("-inf"))
        post = proc.reverse_log_probs(x_t, log_onehot, t, s).exp()[0]
        for k in range(V * V):
            expected = brute_force_posterior(proc, int(x_t[0, k]), int(x0[0, k]), t, s)
            torch.testing.assert_close(post[k], expected, rtol=1e-10, atol=1e-12)
        # the model kernel mixes posteriors: normalised for any x0 prediction
        logits = torch.randn(3, 7, V, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        z = torch.randint(0, V, (3, 7), generator=torch.Generator().manual_seed(1))
        kernel = proc.reverse_log_probs(z, logits.log_softmax(-1), t, s).exp()
        torch.testing.assert_close(kernel.sum(-1), torch.ones(3, 7, dtype=torch.float64))
        assert (kernel >= 0).all()
    # at s = 0 the kernel is the x0 prediction itself
    pred = logits.log_softmax(-1)
    torch.testing.assert_close(proc.reverse_log_probs(z, pred, 0.3, 0.0), pred)


def test_q_sample_keeps_token_at_rate():
    proc = UniformDiffusion(V, "linear")
    g = torch.Generator().manual_seed(2)
    tokens = IIDSource(P_IID).sample((200, 100), g)
    for t in (0.2, 0.7, 1.0):
        same = (proc.q_sample(tokens, t, g) == tokens).double().mean()
        expected = float(proc.alpha(t)) + float(1 - proc.alpha(t)) / V
        assert abs(float(same) - expected) < 4 * math.sqrt(0.25 / tokens.numel())
    q = proc.q_probs(tokens[:2], torch.tensor([0.3, 0.8]))
    torch.testing.assert_close(q.sum(-1), torch.ones(2, 100, dtype=torch.float64))


def _replicates(proc, fn, source, replicates, batch, g):
    means = torch.stack([proc.loss(fn, source.sample((batch, 32), g), generator=g).mean() for _ in range(replicates)])
    return float(means.mean()), float(means.std() / math.sqrt(replicates))


@pytest.mark.parametrize("schedule", ["cosine", "loglinear"])
def test_exact_model_nelbo_is_entropy(schedule):
    source = IIDSource(P_IID)
    proc = UniformDiffusion(V, schedule, num_steps=50)
    g = torch.Generator().manual_seed(3)
    mean, se = _replicates(proc, source.uniform_logits_fn(proc), source, 16, 2048, g)
    H = source.entropy()
    prior = float(proc.prior_kl(torch.zeros(1, 1, dtype=torch.long)))  # 0 for cosine
    assert se < 1e-2 * H
    assert mean >= H - 4 * se  # an upper bound
    assert abs(mean - H) < 4 * se + prior  # and a tight one for the exact model


def test_uninformed_model_pays_more():
    # Predicting the marginal whatever x_t is (ignoring the evidence in x_t) is a worse model.
    source = IIDSource(P_IID)
    proc = UniformDiffusion(V, "cosine", num_steps=50)
    g = torch.Generator().manual_seed(4)
    mean, se = _replicates(proc, source.masked_logits_fn(), source, 8, 1024, g)
    assert mean > source.entropy() + 10 * se


def test_loss_padding_bits_and_gradients():
    source = IIDSource(P_IID)
    proc = UniformDiffusion(V, "cosine", num_steps=20)
    g = torch.Generator().manual_seed(5)
    tokens = source.sample((64, 16), g)
    attention = torch.ones(64, 16, dtype=torch.bool)
    attention[:, 10:] = False
    padded = torch.where(attention, tokens, torch.full_like(tokens, 77))
    exact = source.uniform_logits_fn(proc)
    seen = []

    def fn(z, t):  # the network sees the caller's padding ids; this model ignores them
        seen.append(z)
        return exact(torch.where(z == 77, 0, z), t)

    nats = proc.loss(fn, padded, attention, generator=torch.Generator().manual_seed(6))
    bits = proc.bits_per_token(fn, padded, attention, generator=torch.Generator().manual_seed(6))
    assert torch.isfinite(nats).all() and nats.shape == (64,)
    assert (seen[0][:, 10:] == 77).all() and (seen[0][:, :10] < V).all()
    torch.testing.assert_close(bits, nats / math.log(2.0))
    # k = 1 is the reconstruction term -log p~(x0 | x1)
    recon = proc.loss(fn, tokens, step=torch.ones(64, dtype=torch.long), generator=g)
    assert (recon >= 0).all()
    logits = torch.zeros(V, requires_grad=True)
    proc.loss(lambda z, t: logits.expand(z.shape[0], z.shape[1], V), tokens, generator=g).mean().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def _chisquare_p(samples: torch.Tensor) -> float:
    counts = torch.bincount(samples.flatten(), minlength=V).double()
    return float(stats.chisquare(counts.numpy(), (P_IID * counts.sum()).numpy()).pvalue)


def test_samples_follow_marginal_and_wrong_model_rejected():
    source = IIDSource(P_IID)
    proc = UniformDiffusion(V, "cosine", num_steps=1000)
    out = proc.sample(source.uniform_logits_fn(proc), (64, 32), steps=10, generator=torch.Generator().manual_seed(7))
    assert out.shape == (64, 32) and out.dtype == torch.long
    assert _chisquare_p(out) > 0.01
    wrong = IIDSource(P_IID.flip(0))
    bad = proc.sample(wrong.uniform_logits_fn(proc), (64, 32), steps=10, generator=torch.Generator().manual_seed(7))
    assert _chisquare_p(bad) < 1e-6


def test_sampler_top_p_temperature_and_bad_arguments():
    source = IIDSource(P_IID)
    proc = UniformDiffusion(V, "cosine", num_steps=100)
    # a model whose x0 prediction is always the marginal: the last step draws from it directly
    fn = source.masked_logits_fn()
    for kw in [{"top_p": 0.05}, {"temperature": 0.0}]:
        out = proc.sample(fn, (16, 16), steps=5, generator=torch.Generator().manual_seed(8), **kw)
        assert (out == 0).all(), kw
    a = proc.sample(fn, (4, 8), steps=5, generator=torch.Generator().manual_seed(9))
    b = proc.sample(fn, (4, 8), steps=5, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="vocab_size"):
        UniformDiffusion(1)
    with pytest.raises(ValueError, match="num_steps"):
        UniformDiffusion(V, num_steps=0)
    with pytest.raises(ValueError, match="expected"):
        proc.loss(lambda z, t: torch.zeros(2, 3, V + 1), torch.zeros(2, 3, dtype=torch.long))
