"""Pieces shared by the discrete processes: the logits contract, temperature / nucleus filtering,
exact categorical draws, low-discrepancy training times, sampling grids and semi-AR blocks.

Everything here is a pure function of its arguments (randomness only through an explicit
`torch.Generator`), so samplers built on it are reproducible, and none of it synchronises with
the host.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

LN2 = math.log(2.0)

LogitsFn = Callable[[Tensor, Tensor], Tensor]
"""logits_fn(z_t: [B, L] long, t: [B] float) -> [B, L, V] logits of p_theta(x0 | z_t).

The logits cover the V real tokens only: masked diffusion never assigns probability to the mask
(SUBS parameterisation, MDLM section 3.2), and uniform diffusion has no extra token.
"""

StepCallback = Callable[[dict], None]
"""callback({"step": i, "t": t, "s": s, "z": z_s, "block": b}) after every sampler step."""


def nats_to_bits(nats: Tensor) -> Tensor:
    """bits = nats / ln 2."""
    return nats / LN2


def check_logits(logits: Tensor, batch: int, length: int, vocab_size: int) -> Tensor:
    """Raise a clear error unless `logits` is [batch, length, vocab_size] floating point.

    Shape checks cost nothing on the device (no host synchronisation).
    """
    expected = (batch, length, vocab_size)
    if tuple(logits.shape) != expected:
        hint = ""
        if logits.dim() == 3 and logits.shape[-1] == vocab_size + 1:
            hint = " (logits include the mask token; return logits over the real vocabulary only)"
        raise ValueError(f"logits_fn returned shape {tuple(logits.shape)}, expected {expected}{hint}")
    if not logits.is_floating_point():
        raise TypeError(f"logits_fn returned dtype {logits.dtype}; expected floating point logits")
    return logits


# ---------------------------------------------------------------------------------------------
# Temperature and nucleus (top-p) filtering, and categorical draws
# ---------------------------------------------------------------------------------------------


def top_p_filter(probs: Tensor, top_p: float) -> Tensor:
    """Nucleus filtering (Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration").

    Keeps the smallest set of most probable tokens whose total mass reaches `top_p` (the most
    probable token is always kept), zeroes the rest and renormalises.
    probs: [..., V] (rows sum to 1) -> [..., V] (rows sum to 1).
    """
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_p.cumsum(dim=-1) - sorted_p  # mass of the strictly more probable tokens
    keep_sorted = mass_before < top_p  # position 0 has mass_before = 0, so it is always kept
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    filtered = probs * keep
    return filtered / filtered.sum(dim=-1, keepdim=True)


def filtered_probs(logits: Tensor, temperature: float = 1.0, top_p: float = 1.0) -> Tensor:
    """Probabilities to sample from: softmax(logits / temperature), then nucleus filtering.

    Computed in float64, since sampling from float32 probabilities over large vocabularies
    measurably distorts the distribution (Zheng et al. 2024, "Masked Diffusion Models are
    Secretly Time-Agnostic Masked Models and Exploit Inaccurate Categorical Sampling").
    temperature = 0 is greedy: a one-hot on the argmax.  logits: [..., V] -> probs [..., V].
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    logits = logits.to(torch.float64)
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(torch.float64)
    probs = torch.softmax(logits / temperature, dim=-1)
    return top_p_filter(probs, top_p)


def sample_categorical(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One draw per row of `probs` by inverting the CDF with one float64 uniform per row.

    Consumes exactly prod(probs.shape[:-1]) uniforms from `generator` whatever the probabilities
    are, so two runs with the same generator stay in lock-step even when one of them skips a
    network call. Tokens of probability zero are never drawn.
    probs: [..., V] (rows sum to ~1, non-negative) -> [...] long.
    """
    cdf = probs.to(torch.float64).cumsum(dim=-1)
    u = torch.rand(probs.shape[:-1], generator=generator, device=probs.device, dtype=torch.float64)
    # Scale u by the row total: u * total < cdf[last non-zero], so rounding never picks a
    # trailing zero-probability token.
    target = (u * cdf[..., -1]).unsqueeze(-1)
    index = torch.searchsorted(cdf.contiguous(), target.contiguous(), right=True).squeeze(-1)
    return index.clamp_(max=probs.shape[-1] - 1)


# ---------------------------------------------------------------------------------------------
# Training times and sampling grids
# ---------------------------------------------------------------------------------------------


def low_discrepancy_times(
    n: int,
    *,
    t_min: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """n training times that cover [t_min, 1] evenly: t_i = t_min + (1 - t_min) ((u + i/n) mod 1)
    with one u ~ U[0, 1) (the antithetic / low-discrepancy sampler of Kingma et al. 2021, VDM,
    appendix I.1, used by MDLM). Each t_i is marginally uniform, so estimates stay unbiased;
    the batch covers the interval in n strata, which cuts the variance of the batch mean.
    Returns [n].
    """
    if not 0.0 <= t_min < 1.0:
        raise ValueError(f"t_min must lie in [0, 1), got {t_min}")
    u = torch.rand((), generator=generator, device=device, dtype=torch.float64)
    offsets = torch.arange(n, device=device, dtype=torch.float64) / n
    t = torch.remainder(u + offsets, 1.0)
    return (t_min + (1.0 - t_min) * t).to(dtype)


def low_discrepancy_steps(
    n: int,
    num_steps: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """n integer steps in {1, ..., num_steps}, each marginally uniform and jointly stratified
    (the discrete counterpart of `low_discrepancy_times`). Returns [n] long."""
    t = low_discrepancy_times(n, generator=generator, device=device, dtype=torch.float64)
    return (torch.floor(t * num_steps).long() + 1).clamp_(1, num_steps)


def uniform_time_grid(steps: int) -> list[float]:
    """steps + 1 descending times 1 = t_0 > t_1 > ... > t_steps = 0 (Python floats, so a sampler
    loop never reads a device tensor back)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [1.0 - i / steps for i in range(steps)] + [0.0]


# ---------------------------------------------------------------------------------------------
# Semi-autoregressive blocks
# ---------------------------------------------------------------------------------------------


def block_spans(length: int, block_size: int | None) -> list[tuple[int, int]]:
    """[(start, end), ...] covering [0, length) in consecutive blocks of `block_size`
    (the last may be shorter); a single block when block_size is None."""
    if block_size is None:
        return [(0, length)]
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    return [(start, min(start + block_size, length)) for start in range(0, length, block_size)]


def context_start(end: int, block_len: int, context_size: int | None) -> int:
    """First position the network sees while generating a block that ends at `end`.

    Without `context_size` the network sees everything before the block's end; with it, a
    window of `context_size` tokens that ends at `end` (it must hold at least the block), as in
    MDLM's semi-autoregressive generation of sequences longer than the training context.
    """
    if context_size is None:
        return 0
    if context_size < block_len:
        raise ValueError(
            f"context_size ({context_size}) must be at least the block length ({block_len})"
        )
    return max(0, end - context_size)
