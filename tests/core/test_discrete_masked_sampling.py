"""MaskedDiffusion.sample: network-call caching, SUBS carry-over, prompts and infilling through
`init`, semi-autoregressive blocks, temperature and top-p."""

from __future__ import annotations

import pytest
import torch

from diffusekit.core.discrete import MaskedDiffusion
from diffusekit.core.discrete.analytic import IIDSource, MarkovSource

V = 5
P_IID = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08], dtype=torch.float64)  # argmax: token 0
CYCLE = 4  # a deterministic chain x_{l+1} = x_l + 1 (mod 4): every fill is checkable exactly
CHAIN = MarkovSource.stationary(torch.roll(torch.eye(CYCLE, dtype=torch.float64), 1, dims=1))


class Counted:
    """Wraps a logits_fn; records every call's input."""

    def __init__(self, fn):
        self.fn, self.inputs = fn, []

    def __call__(self, z, t):
        self.inputs.append(z.clone())
        return self.fn(z, t)

    @property
    def calls(self) -> int:
        return len(self.inputs)


def is_chain(x: torch.Tensor) -> bool:
    return bool(((x[:, 1:] - x[:, :-1]) % CYCLE == 1).all())


@pytest.mark.parametrize("batch", [1, 4])
def test_cache_skips_network_and_keeps_samples(batch):
    proc = MaskedDiffusion(V, V, "loglinear")
    source = IIDSource(P_IID)
    steps, L = 256, 32
    cached, plain = Counted(source.masked_logits_fn()), Counted(source.masked_logits_fn())
    changed = []

    def record(info):
        changed.append(int(info["step"]))

    a = proc.sample(cached, (batch, L), steps, generator=torch.Generator().manual_seed(0), callback=record)
    b = proc.sample(plain, (batch, L), steps, generator=torch.Generator().manual_seed(0), cache=False)
    assert torch.equal(a, b)  # draws do not depend on the cache; logits_fn ignores t
    assert plain.calls == steps
    # a call happens at step 0 and after every step that unmasked something; at most one
    # unmasking step per token, so at most B * L + 1 calls (33 for one sequence of 32)
    assert cached.calls <= batch * L + 1
    assert cached.calls < steps // 2
    # every call saw a z that differs from the previous call's
    for before, after in zip(cached.inputs, cached.inputs[1:]):
        assert not torch.equal(before, after)
    assert len(changed) == steps


def test_carry_over_and_no_mask_left():
    proc = MaskedDiffusion(V, V, "cosine")
    snapshots = []
    out = proc.sample(
        IIDSource(P_IID).masked_logits_fn(), (8, 24), 20,
        generator=torch.Generator().manual_seed(1), callback=lambda info: snapshots.append(info["z"].clone()),
    )
    assert len(snapshots) == 20
    for before, after in zip(snapshots, snapshots[1:]):
        kept = before != V
        assert torch.equal(after[kept], before[kept])  # an unmasked token never changes
        assert ((after == V) <= (before == V)).all()  # masks only ever disappear
    assert torch.equal(snapshots[-1], out)
    assert ((out >= 0) & (out < V)).all()


def test_masks_disappear_at_the_schedule_rate():
    # After step i of n (from t = 1 to s = 1 - i/n) a token is still masked with probability
    # (1 - alpha_s) / (1 - alpha_1).
    proc = MaskedDiffusion(V, V, "cosine")
    fractions = []
    proc.sample(
        IIDSource(P_IID).masked_logits_fn(), (64, 64), 8, generator=torch.Generator().manual_seed(2),
        callback=lambda info: fractions.append((float(info["s"]), float((info["z"] == V).double().mean()))),
    )
    for s, frac in fractions:
        expected = float(proc.schedule.mask_prob(s) / proc.schedule.mask_prob(1.0))
        assert abs(frac - expected) < 4 * (0.25 / 4096) ** 0.5


def test_prefix_prompt_and_infilling_through_init():
    proc = MaskedDiffusion(CYCLE, CYCLE, "linear")
    fn = CHAIN.masked_logits_fn(CYCLE)
    truth = CHAIN.sample((6, 20), torch.Generator().manual_seed(3))
    # prefix prompt: the first 5 tokens fixed, the rest generated; the chain forces the rest
    prompt = truth.clone()
    prompt[:, 5:] = CYCLE
    out = proc.sample(fn, (6, 20), 16, init=prompt, generator=torch.Generator().manual_seed(4))
    assert torch.equal(out[:, :5], truth[:, :5]) and torch.equal(out, truth)
    # infilling: two masked spans between fixed tokens; the fill must agree with both sides
    holes = truth.clone()
    holes[:, 3:8] = CYCLE
    holes[:, 12:15] = CYCLE
    out = proc.sample(fn, (6, 20), 16, init=holes, generator=torch.Generator().manual_seed(5))
    fixed = holes != CYCLE
    assert torch.equal(out[fixed], holes[fixed])
    assert torch.equal(out, truth)
    # the same with a stochastic source: fixed tokens preserved, only the holes filled
    iid = MaskedDiffusion(V, V)
    init = torch.full((4, 30), V)
    init[:, ::3] = 2
    out = iid.sample(IIDSource(P_IID).masked_logits_fn(), (4, 30), 8, init=init, generator=torch.Generator().manual_seed(6))
    assert (out[:, ::3] == 2).all() and ((out >= 0) & (out < V)).all()


def test_semi_autoregressive_blocks_condition_on_previous_blocks():
    # Only the first token is given; under the deterministic chain it fixes the whole sequence,
    # so every block is right only if the network saw the blocks before it. (Without a given
    # token, a coarse step could unmask two tokens of a block at once, each from its marginal:
    # the sampler's usual factorisation error, not what this test is about.)
    proc = MaskedDiffusion(CYCLE, CYCLE, "loglinear")
    start = torch.arange(5) % CYCLE
    init = torch.full((5, 40), CYCLE)
    init[:, 0] = start
    truth = (start[:, None] + torch.arange(40)) % CYCLE
    fn = Counted(CHAIN.masked_logits_fn(CYCLE))
    out = proc.sample(fn, (5, 40), 6, init=init, block_size=8, context_size=16, generator=torch.Generator().manual_seed(7))
    assert out.shape == (5, 40) and is_chain(out) and torch.equal(out, truth)
    lengths = [z.shape[1] for z in fn.inputs]
    assert max(lengths) == 16 and set(lengths) <= {8, 16}  # the window: block + what precedes it
    for z in fn.inputs:  # while a block is made, everything before it is finished
        if z.shape[1] == 16:
            assert (z[:, :8] != CYCLE).all()
    # with the previous blocks out of view (context = the block only) the blocks are independent
    alone = proc.sample(CHAIN.masked_logits_fn(CYCLE), (64, 40), 6, init=init.repeat(13, 1)[:64],
                        block_size=8, context_size=8, generator=torch.Generator().manual_seed(8))
    assert not is_chain(alone)


def test_blocks_with_prompt_and_uneven_last_block():
    proc = MaskedDiffusion(CYCLE, CYCLE, "cosine")
    truth = CHAIN.sample((3, 21), torch.Generator().manual_seed(9))
    init = truth.clone()
    init[:, 6:] = CYCLE
    calls = Counted(CHAIN.masked_logits_fn(CYCLE))
    out = proc.sample(calls, (3, 21), 4, init=init, block_size=5, generator=torch.Generator().manual_seed(10))
    assert torch.equal(out, truth)
    # block 0 (fully given) is skipped; the others see the whole prefix (no context_size)
    assert sorted({z.shape[1] for z in calls.inputs}) == [10, 15, 20, 21]


def test_top_p_and_temperature_limits_are_argmax():
    proc = MaskedDiffusion(V, V)
    fn = IIDSource(P_IID).masked_logits_fn()
    for kw in [{"top_p": 0.05}, {"temperature": 0.0}, {"temperature": 1e-3}]:
        out = proc.sample(fn, (16, 32), 8, generator=torch.Generator().manual_seed(11), **kw)
        assert (out == 0).all(), kw
    # top-p = 0.7 keeps {0, 1, 2} (0.4 + 0.25 < 0.7 <= 0.8): no token outside the nucleus
    out = proc.sample(fn, (64, 32), 8, top_p=0.7, generator=torch.Generator().manual_seed(12))
    assert out.max() <= 2 and len(out.unique()) == 3
    # a high temperature flattens the distribution toward uniform
    hot = proc.sample(fn, (64, 32), 8, temperature=100.0, generator=torch.Generator().manual_seed(13))
    share = torch.bincount(hot.flatten(), minlength=V).double() / hot.numel()
    assert (share - 1 / V).abs().max() < 0.03


def test_same_seed_same_sample_and_bad_arguments():
    proc = MaskedDiffusion(V, V)
    fn = IIDSource(P_IID).masked_logits_fn()
    a = proc.sample(fn, (3, 10), 5, generator=torch.Generator().manual_seed(14))
    b = proc.sample(fn, (3, 10), 5, generator=torch.Generator().manual_seed(14))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="init has shape"):
        proc.sample(fn, (3, 10), 5, init=torch.full((3, 11), V))
    with pytest.raises(ValueError, match="outside"):
        proc.sample(fn, (3, 10), 5, init=torch.full((3, 10), V + 3))
    with pytest.raises(ValueError, match="context_size"):
        proc.sample(fn, (3, 10), 5, block_size=4, context_size=2)
    with pytest.raises(ValueError, match="block_size"):
        proc.sample(fn, (3, 10), 5, block_size=0)
    with pytest.raises(ValueError, match="steps"):
        proc.sample(fn, (3, 10), 0)
    with pytest.raises(ValueError, match="expected"):
        proc.sample(lambda z, t: torch.zeros(3, 10, V + 1), (3, 10), 5)
