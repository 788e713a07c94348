"""The text processes: the bound of an exact model equals the entropy, generation keeps what it
must keep (prompt, context around an infilled span), the cache changes nothing but the calls."""

from __future__ import annotations

import math

import pytest
import torch

from diffusekit.core.discrete import MaskedDiffusion
from diffusekit.core.errors import ConfigError
from diffusekit.domains.text import metrics
from diffusekit.domains.text.network import (BidirectionalDenoiser, CausalBaseline,
                                             exact_marginal_logits)
from diffusekit.domains.text.process import AutoregressiveProcess, Generation, MaskedTextProcess

V, L = 12, 64
PROBS = torch.softmax(torch.linspace(2.0, -1.5, V, dtype=torch.float64), 0)
ENTROPY_BITS = float(-(PROBS * PROBS.log2()).sum())


def iid_batches(n_batches: int, batch: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{"x0": torch.multinomial(PROBS, batch * L, replacement=True, generator=g).view(batch, L),
             "n_chars": torch.full((batch,), float(L))} for _ in range(n_batches)]


def test_bound_of_the_exact_marginal_model_equals_its_entropy():
    """With logits = log p (exact i.i.d. marginals), E[NELBO] = H per token for the linear
    schedule (alpha(1) = 0); bits per character of char tokens = bits per token. 2.1e6 tokens
    give a standard error of about 0.3% of H; the tolerance is 1.5%."""
    proc = MaskedTextProcess(MaskedDiffusion(V, V, "linear"))
    logits_fn = exact_marginal_logits(PROBS, L)
    bpc = metrics.diffusion_bits_per_char(logits_fn, proc, iid_batches(16, 512), repeats=4)
    assert bpc == pytest.approx(ENTROPY_BITS, rel=0.015)
    wrong = exact_marginal_logits(PROBS.flip(0), L)
    assert metrics.diffusion_bits_per_char(wrong, proc, iid_batches(2, 256), repeats=1) > 1.3 * ENTROPY_BITS
    ar = AutoregressiveProcess(bos_id=V)
    exact_ar = metrics.autoregressive_bits_per_char(logits_fn, ar, iid_batches(4, 512))
    assert exact_ar == pytest.approx(ENTROPY_BITS, rel=0.005)  # the exact NLL has little noise


@pytest.mark.parametrize("schedule", ["loglinear", "linear", "cosine"])
def test_bound_of_a_uniform_model_is_log2_of_the_vocabulary(schedule):
    """Uniform logits cost log V per masked token whatever z_t is, so E[NELBO] = log2 V bits per
    token (times 1 - eps = 0.999 for the log-linear schedule, whose alpha(1) = eps). The weight
    -alpha'/(1 - alpha) times the masked share 1 - alpha must integrate to alpha(0) - alpha(1)."""
    proc = MaskedTextProcess(MaskedDiffusion(V, V, schedule))
    uniform = exact_marginal_logits(torch.full((V,), 1.0 / V, dtype=torch.float64), L)
    bpc = metrics.diffusion_bits_per_char(uniform, proc, iid_batches(8, 256), repeats=2)
    assert bpc == pytest.approx(math.log2(V), rel=0.01)


def test_denoiser_is_bidirectional_time_free_and_the_size_of_the_baseline():
    """The denoiser sees the whole sequence (a later token changes an earlier logit), ignores t
    (which keeps the sampler's cache exact), and has the baseline's parameter count (within 1%)
    at the domain's sizes."""
    from diffusekit.domains.text.network import parameter_count

    torch.manual_seed(0)
    net = BidirectionalDenoiser(V, L, hidden=16, layers=1, heads=2, intermediate=32).eval()
    z = torch.randint(0, V + 1, (2, L))
    later = z.clone()
    later[:, -1] = (z[:, -1] + 1) % (V + 1)
    with torch.no_grad():
        out = net(z, torch.tensor([0.1, 0.9]))
        assert out.shape == (2, L, V)
        assert torch.equal(out, net(z, torch.tensor([0.7, 0.2])))
        assert not torch.allclose(out[:, 0], net(later, torch.tensor([0.1, 0.9]))[:, 0])
    sizes = dict(hidden=128, layers=4, heads=4, intermediate=512)
    mdlm, ar = BidirectionalDenoiser(96, 64, **sizes), CausalBaseline(96, 64, **sizes)
    assert parameter_count(mdlm) == pytest.approx(parameter_count(ar), rel=0.01)


def test_mask_draws_average_estimates_of_the_same_bound():
    """K draws per sequence: one loss per sequence, the same expectation (the uniform model's
    log V, exactly), about 1/K of the variance, each sequence's times spread over K strata."""
    uniform = exact_marginal_logits(torch.full((V,), 1.0 / V, dtype=torch.float64), L)
    seen = []

    def recording(z, t):
        seen.append(t)
        return uniform(z, t)

    x0 = iid_batches(1, 512)[0]
    spread = {}
    for draws in (1, 4):
        proc = MaskedTextProcess(MaskedDiffusion(V, V, "linear"), mask_draws=draws)
        losses = torch.stack([proc.training_loss(recording, x0, torch.Generator().manual_seed(s))
                              for s in range(8)])  # [8, B]
        assert losses.shape == (8, 512)
        assert float(losses.mean()) == pytest.approx(math.log(V), rel=0.02)
        spread[draws] = float(losses.var())
    assert spread[4] < 0.4 * spread[1]
    times = seen[-1].view(4, 512)  # the last call: K B times, copies stacked draw by draw
    gaps = times.sort(dim=0).values.diff(dim=0)  # one sequence's 4 times lie 1/4 apart
    assert torch.allclose(gaps, torch.full_like(gaps, 0.25 * (1 - 1e-4)), atol=1e-5)
    with pytest.raises(ConfigError, match="mask_draws"):
        MaskedTextProcess(MaskedDiffusion(V, V), mask_draws=0)


def test_bits_per_char_counts_characters_not_tokens():
    nats = torch.tensor([math.log(2.0), math.log(2.0)])  # one bit per token
    assert metrics.bits_per_char(nats, 10, torch.tensor([20.0, 20.0])) == pytest.approx(0.5)
    assert metrics.bound_gap_percent(1.1, 1.0) == pytest.approx(10.0)


@pytest.fixture(scope="module")
def denoiser():
    torch.manual_seed(0)
    return BidirectionalDenoiser(V, L, hidden=16, layers=1, heads=2, intermediate=32).eval()


def test_prompted_generation_keeps_the_prompt(denoiser):
    proc = MaskedTextProcess(MaskedDiffusion(V, V), Generation("prefix", prompt_tokens=20), steps=8)
    x0 = iid_batches(1, 3)[0]["x0"]
    for block_size in (None, 16):  # one block and semi-autoregressive blocks
        out = proc.generate(denoiser, {"x0": x0}, generator=torch.Generator().manual_seed(1),
                            block_size=block_size)
        assert out.shape == x0.shape and bool((out[:, :20] == x0[:, :20]).all())
        assert bool((out >= 0).all() and (out < V).all())  # no mask left
        assert not bool((out[:, 20:] == x0[:, 20:]).all())


def test_infilling_keeps_everything_outside_the_span(denoiser):
    g = Generation("infill", infill_start=0.25, infill_length=0.5)
    proc = MaskedTextProcess(MaskedDiffusion(V, V), g, steps=8)
    x0 = iid_batches(1, 3)[0]["x0"]
    keep = g.keep(x0)
    assert keep[:, :16].all() and keep[:, 48:].all() and not keep[:, 16:48].any()
    out = proc.generate(denoiser, {"x0": x0}, generator=torch.Generator().manual_seed(2))
    assert bool((out[keep] == x0[keep]).all()) and metrics.kept_fraction(out, x0, keep) == 1.0
    assert bool((out[:, 16:48] != x0[:, 16:48]).any())


def test_cache_changes_calls_not_samples(denoiser):
    """The network ignores t, so reusing its output while z is unchanged is exact."""
    proc = MaskedTextProcess(MaskedDiffusion(V, V), steps=128)
    batch = {"x0": torch.zeros(1, L, dtype=torch.long)}
    out = {}
    for cache in (True, False):
        calls = []
        hook = denoiser.register_forward_hook(lambda *_: calls.append(1))
        out[cache] = (proc.generate(denoiser, batch, cache=cache,
                                    generator=torch.Generator().manual_seed(3)), len(calls))
        hook.remove()
    assert torch.equal(out[True][0], out[False][0])
    assert out[False][1] == 128 and out[True][1] <= L + 1 < 128


def test_autoregressive_keeps_a_prefix_and_refuses_to_infill():
    torch.manual_seed(0)
    net = CausalBaseline(V, L, hidden=16, layers=1, heads=2, intermediate=32).eval()
    x0 = iid_batches(1, 2)[0]["x0"]
    proc = AutoregressiveProcess(V, Generation("prefix", prompt_tokens=10))
    out = proc.generate(net, {"x0": x0}, generator=torch.Generator().manual_seed(0))
    assert bool((out[:, :10] == x0[:, :10]).all()) and out.shape == x0.shape
    with pytest.raises(ConfigError, match="cannot infill"):
        AutoregressiveProcess(V, Generation("infill")).generate(net, {"x0": x0})
    loss = proc.training_loss(net, {"x0": x0})
    assert loss.shape == (2,) and bool(torch.isfinite(loss).all())


def test_a_causal_network_does_not_look_ahead():
    torch.manual_seed(0)
    net = CausalBaseline(V, L, hidden=16, layers=1, heads=2, intermediate=32).eval()
    x = iid_batches(1, 1)[0]["x0"]
    y = x.clone()
    y[:, 40:] = (y[:, 40:] + 1) % V
    with torch.no_grad():
        assert torch.allclose(net(x)[:, :40], net(y)[:, :40], atol=1e-5)


def test_fixed_tokens_of_a_text_with_mask_spans():
    from diffusekit.core.errors import ConfigError as Err
    from diffusekit.domains.text.generation import fixed_tokens, marked
    from diffusekit.domains.text.tokenization import CharTokenizer

    tok = CharTokenizer()
    tokens, keep = fixed_tokens(tok, "O Romeo, [MASK] art thou", span=5, length=40)
    assert tokens.shape == keep.shape == (40,)
    assert keep[:9].all() and not keep[9:14].any() and keep[14:23].all() and not keep[23:].any()
    assert tok.decode(tokens[:9].tolist()) == "O Romeo, " and tok.decode(tokens[14:23].tolist()) == " art thou"
    filled = tokens.clone()
    filled[~keep] = tok.encode("x")[0]
    assert marked(tok, filled, keep).startswith("O Romeo, [[xxxxx]] art thou[[x")
    with pytest.raises(Err, match="shorten"):
        fixed_tokens(tok, "x" * 50, span=5, length=40)
