"""Metrics of the text domain (torch only):

    bits_per_char          test bits per character of a per-token loss: sum_b loss_b L ln2^-1 / sum_b chars_b
    diffusion_bits_per_char  the MDLM bound (NELBO, Sahoo et al. 2024 eq. 10-11) on test chunks,
                           averaged over `repeats` draws of (t, z_t) per chunk
    autoregressive_bits_per_char  the exact NLL of the left-to-right baseline on the same chunks
    bound_gap_percent      100 (bpc_diffusion - bpc_ar) / bpc_ar
    generative_perplexity  exp of the baseline's mean NLL per token of generated samples (the
                           "Gen PPL" of MDLM / SEDD, here under the trained AR baseline)
    NgramJudge, ngram_bits_per_char  bits per character of samples under a smoothed token
                           n-gram model of the training text: a judge that needs no trained
                           network, so every model (base, adapter, fine-tune, scratch) is
                           scored by the same one
    sample_entropy         mean over samples of the entropy (bits) of each sample's token
                           histogram; degenerate, repetitive samples score low (Zheng et al. 2024)
    kept_fraction          share of positions that generation had to keep and did keep
    sampling_throughput    tokens per second and network calls of a sampler run
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Iterable
from typing import Any, Callable

import torch
from torch import Tensor

LN2 = math.log(2.0)


def bits_per_char(nats_per_token: Tensor, n_tokens: int, n_chars: Tensor) -> float:
    """Bits per character of chunks: sum_b nats_b * n_tokens / ln 2 / sum_b chars_b.

    nats_per_token: [B] per-chunk loss in nats per token; n_chars: [B] characters per chunk."""
    total_bits = nats_per_token.double().sum() * n_tokens / LN2
    return float(total_bits / n_chars.double().sum())


@torch.no_grad()
def diffusion_bits_per_char(network: Callable[..., Tensor], process: Any, batches: Iterable[dict],
                            repeats: int = 4, seed: int = 0) -> float:
    """The test bound in bits per character: the MDLM NELBO estimate of every chunk, averaged over
    `repeats` independent (t, z_t) draws (its expectation is the bound; the draws only cut the
    Monte-Carlo noise). process: a `MaskedTextProcess`."""
    generator = torch.Generator().manual_seed(seed)
    losses, chars, length = [], [], 0
    for batch in batches:
        x0 = batch["x0"]
        draws = [process.diffusion.loss(network, x0, generator=generator) for _ in range(repeats)]
        losses.append(torch.stack(draws).mean(0))
        chars.append(batch["n_chars"])
        length = x0.shape[1]
    return bits_per_char(torch.cat(losses), length, torch.cat(chars))


@torch.no_grad()
def autoregressive_bits_per_char(network: Callable[..., Tensor], process: Any,
                                 batches: Iterable[dict]) -> float:
    """The baseline's exact test NLL in bits per character. process: `AutoregressiveProcess`."""
    losses, chars, length = [], [], 0
    for batch in batches:
        losses.append(process.training_loss(network, batch))
        chars.append(batch["n_chars"])
        length = batch["x0"].shape[1]
    return bits_per_char(torch.cat(losses), length, torch.cat(chars))


def bound_gap_percent(bpc_diffusion: float, bpc_autoregressive: float) -> float:
    """100 (bpc_diffusion - bpc_ar) / bpc_ar: how far the bound lies above the baseline."""
    return 100.0 * (bpc_diffusion - bpc_autoregressive) / bpc_autoregressive


@torch.no_grad()
def generative_perplexity(ar_network: Callable[..., Tensor], ar_process: Any,
                          samples: Tensor) -> float:
    """exp(mean_{b,l} -log p_AR(x_l | x_<l)) of samples [B, L] under the baseline."""
    nll = ar_process.token_nll(ar_network, samples)
    return float(torch.exp(nll.double().mean()))


class NgramJudge:
    """A token n-gram language model with interpolated Witten-Bell smoothing (Witten and Bell
    1991; Chen and Goodman 1999, section 2.7), counted on one token stream:

        P_k(w | h) = (c(h w) + T(h) P_{k-1}(w | h')) / (c(h) + T(h))

    for the last k - 1 tokens h before w (h' drops h's first token), c the counts in the stream,
    T(h) the number of distinct tokens seen after h, and P_0 uniform over the vocabulary; a
    context never seen (c(h) = 0) leaves P_{k-1}. Counts are sorted code tables (an n-gram's
    code is its tokens in base `vocab_size`), looked up with searchsorted."""

    def __init__(self, stream: Tensor, vocab_size: int, order: int = 5) -> None:
        if order < 1 or vocab_size ** order >= 2 ** 62:
            raise ValueError(f"an n-gram judge of order {order} over {vocab_size} tokens does "
                             "not fit int64 codes")
        self.vocab_size, self.order = int(vocab_size), int(order)
        stream = stream.long().flatten()
        self.tables = []  # per order k: n-gram codes, counts, context codes, c(h), T(h)
        for k in range(1, self.order + 1):
            codes, counts = torch.unique(self._codes(stream[None], k)[0], return_counts=True)
            contexts, inverse, types = torch.unique_consecutive(
                codes // self.vocab_size, return_inverse=True, return_counts=True)
            context_counts = torch.zeros(len(contexts), dtype=torch.long).index_add_(
                0, inverse, counts)
            self.tables.append((codes, counts.double(), contexts, context_counts.double(),
                                types.double()))

    def _codes(self, tokens: Tensor, k: int) -> Tensor:
        """[B, L - k + 1] codes of the k-grams ending at positions k - 1 .. L - 1."""
        length = tokens.shape[1] - k + 1
        codes = torch.zeros(tokens.shape[0], max(0, length), dtype=torch.long)
        for j in range(k):
            codes = codes * self.vocab_size + tokens[:, j: j + length]
        return codes

    @staticmethod
    def _lookup(keys: Tensor, values: Tensor, queries: Tensor) -> Tensor:
        """values[keys == query] per query, 0 where the query is not among the sorted keys."""
        if len(keys) == 0:  # a stream shorter than the order has no n-gram of it
            return torch.zeros(queries.shape, dtype=torch.double)
        index = torch.searchsorted(keys, queries).clamp(max=len(keys) - 1)
        return torch.where(keys[index] == queries, values[index], torch.zeros(()).double())

    @torch.no_grad()
    def token_nll(self, tokens: Tensor) -> Tensor:
        """[B, L] -ln P(x_l | the up to order - 1 tokens before it, within the row)."""
        tokens = tokens.long()
        p = torch.full(tokens.shape, 1.0 / self.vocab_size, dtype=torch.double)
        for k, (codes, counts, contexts, context_counts, types) in enumerate(self.tables, 1):
            if tokens.shape[1] < k:
                break
            grams = self._codes(tokens, k)
            c_hw = self._lookup(codes, counts, grams)
            c_h = self._lookup(contexts, context_counts, grams // self.vocab_size)
            t_h = self._lookup(contexts, types, grams // self.vocab_size)
            lower = p[:, k - 1:]
            p[:, k - 1:] = torch.where(c_h > 0, (c_hw + t_h * lower) / (c_h + t_h).clamp(min=1),
                                       lower)
        return -p.log()


@functools.lru_cache(maxsize=2)
def ngram_judge(stream_file: str, vocab_size: int, order: int) -> NgramJudge:
    """The judge counted on the token stream saved (torch.save) in `stream_file`, kept for the
    next call (evaluation scores batch after batch with the same one)."""
    return NgramJudge(torch.load(stream_file), vocab_size, order)


def ngram_bits_per_char(judge: NgramJudge, tokens: Tensor, char_lengths: Tensor) -> float:
    """Bits per character of token rows [B, L] under the judge: sum -log2 P_judge(x_l | x_<l)
    / the characters the tokens stand for (`char_lengths`: [V], a tokenizer's). Low for text
    the judge's corpus makes likely (and, like any generative perplexity, for dull repetitive
    text too: read it beside the entropy)."""
    tokens = tokens.cpu().long()
    bits = judge.token_nll(tokens).sum() / LN2
    return float(bits / char_lengths.double()[tokens].sum())


def sample_entropy(samples: Tensor) -> float:
    """Mean over samples [B, L] of H(histogram of the sample's tokens) in bits."""
    entropies = []
    for row in samples:
        counts = torch.bincount(row.flatten()).double()
        p = counts[counts > 0] / counts.sum()
        entropies.append(float(-(p * p.log2()).sum()))
    return sum(entropies) / max(1, len(entropies))


def kept_fraction(samples: Tensor, reference: Tensor, keep: Tensor) -> float:
    """Share of the kept positions ([B, L] bool `keep`) where samples equal reference (1.0 when
    nothing is kept)."""
    if not bool(keep.any()):
        return 1.0
    return float((samples == reference)[keep].double().mean())


@torch.no_grad()
def sampling_throughput(process: Any, network: torch.nn.Module, shape: tuple[int, int],
                        steps: int, cache: bool, seed: int = 0) -> dict[str, float]:
    """Generate one batch of `shape` unconditionally with `steps` steps, with or without the
    sampler's cache; returns tokens_per_s (B L / seconds), seconds and network_calls."""
    calls = []
    hook = network.register_forward_hook(lambda *_: calls.append(1))
    batch = {"x0": torch.zeros(shape, dtype=torch.long)}
    keep = torch.zeros(shape, dtype=torch.bool)
    generator = torch.Generator().manual_seed(seed)
    try:
        started = time.perf_counter()
        process.generate(network, batch, steps=steps, generator=generator, cache=cache, keep=keep)
        seconds = time.perf_counter() - started
    finally:
        hook.remove()
    return {"tokens_per_s": shape[0] * shape[1] / seconds, "seconds": seconds,
            "network_calls": float(len(calls))}
