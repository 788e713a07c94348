"""Token sources whose exact denoisers are known: the discrete counterpart of `core/analytic.py`.

A model with no learning error isolates what the process and the sampler do themselves: its
NELBO must land on the source's entropy (the continuous-time masked-diffusion bound is tight for
exact conditionals: it equals the any-order autoregressive log-likelihood, Ou et al. 2024, "Your
Absorbing Discrete Diffusion Secretly Models the Conditional Distributions of Clean Data",
Shi et al. 2024 (MD4) section 4), and its samples must follow the source.

* `IIDSource(probs)`: tokens i.i.d. from probs [V]. Under masking, p(x_l | z_t) = probs for any
  masked l; under uniform noise, p(x_0 = i | x_t = k) is proportional to probs_i q(x_t = k | x_0 = i).
* `MarkovSource(initial, transition)`: an order-1 chain. Under masking, x_l given the observed
  tokens depends only on the nearest observed token on each side (Markov property):

      p(x_l = j | z) ∝ [P^(l-a)]_{x_a, j} [P^(b-l)]_{j, x_b}    (a < l < b the nearest observed),

  with the marginal (initial P^l)_j in place of the left factor when nothing is observed to the
  left, and 1 in place of the right factor when nothing is observed to the right.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from diffusekit.core.discrete.sampling import LogitsFn, sample_categorical


def _entropy(probs: Tensor) -> Tensor:
    """Shannon entropy in nats over the last dimension (0 log 0 = 0)."""
    return -(probs * torch.where(probs > 0, probs.log(), torch.zeros_like(probs))).sum(-1)


@dataclass(frozen=True, eq=False)
class IIDSource:
    """Tokens drawn i.i.d. from `probs` ([V], sums to 1)."""

    probs: Tensor

    def __post_init__(self) -> None:
        probs = self.probs.to(torch.float64)
        if probs.dim() != 1 or (probs < 0).any() or abs(float(probs.sum()) - 1.0) > 1e-9:
            raise ValueError("probs must be a [V] probability vector")
        object.__setattr__(self, "probs", probs)

    @property
    def vocab_size(self) -> int:
        return self.probs.shape[0]

    def entropy(self) -> float:
        """H(probs) in nats per token."""
        return float(_entropy(self.probs))

    def cross_entropy(self, model_probs: Tensor) -> float:
        """H(probs, model_probs) = -sum_i probs_i log model_probs_i: the expected NELBO per token
        of a model that predicts `model_probs` at every masked position."""
        return float(-(self.probs * model_probs.to(torch.float64).log()).sum())

    def sample(self, shape: tuple[int, int], generator: torch.Generator | None = None) -> Tensor:
        """[B, L] long."""
        flat = self.probs.expand(shape[0] * shape[1], -1)
        return sample_categorical(flat, generator).view(shape)

    def masked_logits_fn(self, model_probs: Tensor | None = None) -> LogitsFn:
        """logits_fn for masked diffusion: log probs at every position (ignores z_t and t).
        `model_probs` substitutes a deliberately wrong model."""
        log_p = (self.probs if model_probs is None else model_probs.to(torch.float64)).log()

        def logits_fn(z_t: Tensor, t: Tensor) -> Tensor:
            return log_p.to(z_t.device).expand(z_t.shape[0], z_t.shape[1], -1)

        return logits_fn

    def uniform_logits_fn(self, process) -> LogitsFn:
        """logits_fn for `UniformDiffusion`: the exact posterior
        log p(x_0 = i | x_t = k) = log probs_i + log q(x_t = k | x_0 = i) + const."""
        log_p = self.probs.log()

        def logits_fn(x_t: Tensor, t: Tensor) -> Tensor:
            # q(x_t = k | x_0 = i) = alpha [i = k] + (1 - alpha) / V is symmetric in (i, k), so
            # q_probs(x_t, t)[..., i] is the likelihood of x_t under x_0 = i.
            return log_p.to(x_t.device) + process.q_probs(x_t, t).log()

        return logits_fn


@dataclass(frozen=True, eq=False)
class MarkovSource:
    """An order-1 Markov chain: x_0 ~ initial [V], x_{l+1} ~ transition[x_l] ([V, V], rows sum
    to 1). With `initial` stationary the chain is shift-invariant, so the exact model below is
    also exact on any window of a longer sequence (semi-autoregressive sampling)."""

    initial: Tensor
    transition: Tensor

    def __post_init__(self) -> None:
        initial, transition = self.initial.to(torch.float64), self.transition.to(torch.float64)
        V = initial.shape[0]
        if transition.shape != (V, V):
            raise ValueError(f"transition must be [{V}, {V}], got {tuple(transition.shape)}")
        if (transition < 0).any() or (transition.sum(-1) - 1).abs().max() > 1e-9:
            raise ValueError("transition rows must be probability vectors")
        object.__setattr__(self, "initial", initial)
        object.__setattr__(self, "transition", transition)

    @classmethod
    def stationary(cls, transition: Tensor) -> "MarkovSource":
        """The chain started from its stationary distribution (left eigenvector for eigenvalue 1)."""
        transition = transition.to(torch.float64)
        vals, vecs = torch.linalg.eig(transition.T)
        pi = vecs[:, (vals - 1).abs().argmin()].real
        return cls(pi / pi.sum(), transition)

    @property
    def vocab_size(self) -> int:
        return self.initial.shape[0]

    def _powers(self, n: int) -> Tensor:
        """[n + 1, V, V]: P^0 = I, P^1, ..., P^n."""
        powers = [torch.eye(self.vocab_size, dtype=torch.float64)]
        for _ in range(n):
            powers.append(powers[-1] @ self.transition)
        return torch.stack(powers)

    def marginals(self, length: int) -> Tensor:
        """[L, V]: the distribution of x_l, initial P^l."""
        return self.initial @ self._powers(length - 1)

    def entropy(self, length: int) -> float:
        """H(x_0, ..., x_{L-1}) in nats = H(x_0) + sum_l sum_a pi_l(a) H(P[a])."""
        marginals = self.marginals(length)
        rate = _entropy(self.transition)  # [V]: H(x_{l+1} | x_l = a)
        return float(_entropy(self.initial) + (marginals[:-1] @ rate).sum())

    def sample(self, shape: tuple[int, int], generator: torch.Generator | None = None) -> Tensor:
        """[B, L] long, drawn left to right."""
        batch, length = shape
        x = torch.empty(shape, dtype=torch.long)
        x[:, 0] = sample_categorical(self.initial.expand(batch, -1), generator)
        for l in range(1, length):
            x[:, l] = sample_categorical(self.transition[x[:, l - 1]], generator)
        return x

    def masked_logits_fn(self, mask_id: int) -> LogitsFn:
        """The exact p(x_l | observed tokens of z_t) at every position (module docstring), as
        float64 logits; ignores t. Position 0 of the input is position 0 of the chain."""

        tables: dict[tuple[int, torch.device], tuple[Tensor, Tensor]] = {}

        def logits_fn(z_t: Tensor, t: Tensor) -> Tensor:
            batch, length = z_t.shape
            key = (length, z_t.device)
            if key not in tables:  # P^0..P^L and the marginals, once per length
                tables[key] = (self._powers(length).to(z_t.device), self.marginals(length).to(z_t.device))
            powers, marginals = tables[key]  # [L + 1, V, V], [L, V]
            pos = torch.arange(length, device=z_t.device).expand(batch, -1)
            observed = z_t != mask_id
            # nearest observed position strictly left / right of each l (-1 / L when none)
            last_seen = torch.where(observed, pos, -1).cummax(dim=1).values
            left = torch.cat([torch.full_like(pos[:, :1], -1), last_seen[:, :-1]], dim=1)
            next_seen = torch.where(observed, pos, length).flip(1).cummin(dim=1).values.flip(1)
            right = torch.cat([next_seen[:, 1:], torch.full_like(pos[:, :1], length)], dim=1)
            has_left, has_right = left >= 0, right < length
            tokens = z_t.clamp(0, self.vocab_size - 1)
            left_tok = tokens.gather(1, left.clamp(min=0))
            right_tok = tokens.gather(1, right.clamp(max=length - 1))
            d_left = (pos - left).clamp(0, length)
            d_right = (right - pos).clamp(0, length)
            left_factor = torch.where(
                has_left.unsqueeze(-1), powers[d_left, left_tok], marginals[pos]
            )  # [B, L, V]: [P^(l-a)]_{x_a, j} or the marginal of x_l
            right_factor = torch.where(
                has_right.unsqueeze(-1), powers[d_right, :, right_tok], torch.ones_like(left_factor)
            )  # [B, L, V]: [P^(b-l)]_{j, x_b} or 1
            return (left_factor * right_factor).log()

        return logits_fn
