"""Uniform-noise discrete diffusion: D3PM-uniform (Austin et al. 2021, "Structured Denoising
Diffusion Models in Discrete State-Spaces"), with an x0-predicting network.

Forward process (Austin et al. 2021, section 3 / appendix A.1, with cumulative alpha_t):

    q(x_t | x_0) = Cat(x_t; alpha_t onehot(x_0) + (1 - alpha_t) / V),

and between two times s < t the transition keeps a token with probability a = alpha_t / alpha_s
and otherwise re-draws it uniformly: Q_{s->t} = a I + (1 - a) 11^T / V. alpha comes from a masking
schedule (`schedules.py`) evaluated at t = k / T for the T steps k = 0..T.

Posterior (Bayes, Austin et al. eq. 3), for a token with x_t = k:

    q(x_s = j | x_t = k, x_0 = i) = A_j B_ij / D_i,
        A_j  = q(x_t = k | x_s = j) = a [j = k] + (1 - a) / V,
        B_ij = q(x_s = j | x_0 = i) = alpha_s [i = j] + (1 - alpha_s) / V,
        D_i  = q(x_t = k | x_0 = i) = alpha_t [i = k] + (1 - alpha_t) / V.

The model's reverse step marginalises the posterior over the network's x_0 prediction
p~(x_0 | x_t) (Austin et al. eq. 4, Ho et al. 2020's x0-parameterisation):

    p_theta(x_s = j | x_t) = sum_i q(x_s = j | x_t, x_0 = i) p~(x_0 = i | x_t)
                           = A_j ( alpha_s r_j + (1 - alpha_s) / V sum_i r_i ),   r_i = p~_i / D_i,

an O(V) computation per token, normalised by construction. With the exact p~ = q(x_0 | x_t) it is
the exact reverse kernel q(x_s | x_t). (D3PM's eq. 5 drops the 1 / D_i factor, which changes what
the network has to predict; here the network predicts the true posterior over x_0.)

Loss: the discrete-time NELBO with T steps (Austin et al. eq. 1; Sohl-Dickstein et al. 2015):

    L = KL(q(x_T | x_0) || Uniform) + sum_{k=2}^T E_q KL(q(x_{k-1} | x_k, x_0) || p_theta(x_{k-1} | x_k))
        + E_q[-log p_theta(x_0 | x_1)],

where p_theta(x_0 | x_1) = p~(x_0 | x_1) is the k = 1 case of the same formula (alpha_0 = 1 makes
the posterior a one-hot on x_0, and the KL to it is the reconstruction term).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from diffusekit.core.discrete.sampling import (
    LogitsFn,
    StepCallback,
    check_logits,
    filtered_probs,
    low_discrepancy_steps,
    nats_to_bits,
    sample_categorical,
    uniform_time_grid,
)
from diffusekit.core.discrete.schedules import MaskingSchedule, resolve


def _column(x: Tensor) -> Tensor:
    """[B] or scalar -> broadcastable against [B, L, V]."""
    return x.reshape(-1, 1, 1) if x.dim() else x


class UniformDiffusion:
    """D3PM with uniform noise over V tokens and a discrete-time NELBO of `num_steps` steps.

    Args:
        vocab_size: V; tokens lie in [0, V) and the noise is uniform over the same V tokens.
        schedule: a masking-schedule name or instance giving alpha_t, the probability that a
            token has not been re-drawn by time t (default "cosine": alpha(1) = 0, so x_T is
            exactly uniform and the prior term vanishes).
        num_steps: T, the number of steps of the bound; step k sits at time t = k / T.
    """

    def __init__(
        self,
        vocab_size: int,
        schedule: str | MaskingSchedule = "cosine",
        num_steps: int = 1000,
    ) -> None:
        if not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"vocab_size must be an int >= 2, got {vocab_size!r}")
        if not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
        self.vocab_size = vocab_size
        self.schedule = resolve(schedule)
        self.num_steps = num_steps

    def __repr__(self) -> str:
        return (
            f"UniformDiffusion(vocab_size={self.vocab_size}, schedule={self.schedule}, "
            f"num_steps={self.num_steps})"
        )

    # -- forward process ------------------------------------------------------------------------

    def alpha(self, t: Tensor | float) -> Tensor:
        """alpha_t: probability that a token has not been re-drawn by time t."""
        return self.schedule.alpha(t)

    def q_probs(self, tokens: Tensor, t: Tensor | float) -> Tensor:
        """q(x_t | x_0) = alpha_t onehot(x_0) + (1 - alpha_t) / V.  tokens: [B, L]; t: [B] or
        scalar.  Returns [B, L, V] float64 (rows sum to 1)."""
        t = torch.as_tensor(t, dtype=torch.float64, device=tokens.device)
        alpha = _column(self.schedule.alpha(t).to(torch.float64))
        onehot = torch.nn.functional.one_hot(tokens, self.vocab_size).to(torch.float64)
        return alpha * onehot + (1.0 - alpha) / self.vocab_size

    def q_sample(
        self,
        tokens: Tensor,
        t: Tensor | float,
        generator: torch.Generator | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        """Draw x_t ~ q(x_t | x_0): with probability 1 - alpha_t a token is re-drawn uniformly
        (possibly landing on itself).  tokens: [B, L] long; t: [B] or scalar; padding (where
        attention_mask is 0) is never noised.  Returns [B, L] long in [0, V)."""
        t = torch.as_tensor(t, dtype=torch.float64, device=tokens.device)
        p_redraw = self.schedule.mask_prob(t).to(torch.float64)
        p_redraw = p_redraw.reshape(-1, 1) if p_redraw.dim() else p_redraw
        u = torch.rand(tokens.shape, generator=generator, device=tokens.device, dtype=torch.float64)
        fresh = torch.randint(
            0, self.vocab_size, tokens.shape, generator=generator, device=tokens.device
        )
        redraw = u < p_redraw
        if attention_mask is not None:
            redraw &= attention_mask.bool()
        return torch.where(redraw, fresh, tokens)

    # -- reverse kernel -------------------------------------------------------------------------

    def reverse_log_probs(self, z_t: Tensor, log_x0: Tensor, t: Tensor | float, s: Tensor | float) -> Tensor:
        """log p(x_s | x_t) = log sum_i q(x_s | x_t, x_0 = i) p~(x_0 = i | x_t) for s < t (module
        docstring). With log_x0 = log onehot(x_0) (0 / -inf) it is the posterior
        log q(x_s | x_t, x_0).

        z_t: [B, L] long; log_x0: [B, L, V] normalised log-probabilities (-inf allowed);
        t, s: [B] or scalars with 0 <= s < t <= 1.  Returns [B, L, V] in log_x0's dtype.
        """
        V = self.vocab_size
        dtype = log_x0.dtype
        t = torch.as_tensor(t, dtype=torch.float64, device=z_t.device)
        s = torch.as_tensor(s, dtype=torch.float64, device=z_t.device)
        alpha_t, alpha_s = self.schedule.alpha(t), self.schedule.alpha(s)
        # Scalars in float64; the per-token tensors only see their logs.
        keep = alpha_t / alpha_s  # a = alpha_t / alpha_s
        redraw = (self.schedule.mask_prob(t) - self.schedule.mask_prob(s)) / alpha_s  # 1 - a
        log_a_hit = _column(torch.log(keep + redraw / V)).to(dtype)  # log A_j at j = x_t
        log_a_off = _column(torch.log(redraw / V)).to(dtype)  # log A_j elsewhere
        log_d_hit = _column(torch.log(alpha_t + self.schedule.mask_prob(t) / V)).to(dtype)
        log_d_off = _column(torch.log(self.schedule.mask_prob(t) / V)).to(dtype)
        log_alpha_s = _column(torch.log(alpha_s)).to(dtype)
        log_rest_s = _column(torch.log((1.0 - alpha_s).clamp(min=0.0) / V)).to(dtype)

        hit = torch.nn.functional.one_hot(z_t, V).bool()
        log_a = torch.where(hit, log_a_hit, log_a_off)
        log_r = log_x0 - torch.where(hit, log_d_hit, log_d_off)  # r_i = p~_i / D_i
        log_r_sum = torch.logsumexp(log_r, dim=-1, keepdim=True)
        # p_j = A_j (alpha_s r_j + (1 - alpha_s) / V * sum_i r_i)
        return log_a + torch.logaddexp(log_alpha_s + log_r, log_rest_s + log_r_sum)

    def prior_kl(self, tokens: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """KL(q(x_T | x_0) || Uniform) summed over the real tokens of each sequence (nats).

        Per token: q_hit log(V q_hit) + (V - 1) q_off log(V q_off) with q_off = (1 - alpha_1) / V,
        q_hit = alpha_1 + q_off; zero when alpha(1) = 0.  tokens: [B, L].  Returns [B] float64.
        """
        V = self.vocab_size
        alpha_1 = float(self.schedule.alpha(1.0))
        q_off = (1.0 - alpha_1) / V
        q_hit = alpha_1 + q_off
        per_token = q_hit * math.log(V * q_hit) + ((V - 1) * q_off * math.log(V * q_off) if q_off > 0 else 0.0)
        n = tokens.shape[1] if attention_mask is None else attention_mask.bool().sum(-1)
        return per_token * torch.as_tensor(n, dtype=torch.float64, device=tokens.device).expand(tokens.shape[0])

    # -- the bound --------------------------------------------------------------------------------

    def loss(
        self,
        logits_fn: LogitsFn,
        tokens: Tensor,
        attention_mask: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        step: Tensor | None = None,
    ) -> Tensor:
        """One-sample Monte-Carlo estimate of the discrete-time NELBO (module docstring) in nats
        per token, for each sequence.

        One step k in {1..T} per sequence (stratified over the batch unless `step` is given),
        x_k ~ q(x_k | x_0), and

            nelbo_b = [ T * sum_l KL(q(x_{k-1} | x_k, x_0) || p_theta(x_{k-1} | x_k)) + prior ] / n_b

        (k = 1 gives the reconstruction term -log p~(x_0 | x_1)); n_b counts the real tokens.
        logits_fn receives x_k and t = k / T. Computed in float64 when the logits are float64,
        in float32 otherwise. Differentiable in the logits.

        tokens: [B, L] long in [0, V); attention_mask: optional [B, L]; step: optional [B] long.
        Returns [B] float.
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [B, L], got shape {tuple(tokens.shape)}")
        batch, length = tokens.shape
        T = self.num_steps
        if step is None:
            step = low_discrepancy_steps(batch, T, generator=generator, device=tokens.device)
        t = step.to(torch.float64) / T
        s = (step - 1).to(torch.float64) / T
        real = torch.ones_like(tokens, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        # Padding may use ids outside the vocabulary: the kernels below see token 0 there (and
        # drop it from the sum); the network sees the caller's padding ids unchanged.
        safe_tokens = torch.where(real, tokens, torch.zeros_like(tokens))
        x_t = self.q_sample(safe_tokens, t, generator, attention_mask)
        x_in = x_t if attention_mask is None else torch.where(real, x_t, tokens)
        logits = check_logits(logits_fn(x_in, t.float()), batch, length, self.vocab_size)
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32

        log_p = self.reverse_log_probs(x_t, torch.log_softmax(logits.to(dtype), dim=-1), t, s)
        x0_onehot = torch.nn.functional.one_hot(safe_tokens, self.vocab_size).bool()
        log_onehot = torch.zeros(x0_onehot.shape, dtype=dtype, device=tokens.device)
        log_onehot = log_onehot.masked_fill(~x0_onehot, float("-inf"))  # log onehot(x_0)
        log_q = self.reverse_log_probs(x_t, log_onehot, t, s)
        q = log_q.exp()
        # KL(q || p) = sum_j q_j (log q_j - log p_j), with 0 log 0 = 0
        kl = torch.where(q > 0, q * (log_q - log_p), torch.zeros_like(q)).sum(-1)  # [B, L]
        kl = torch.where(real, kl, torch.zeros_like(kl)).sum(-1)
        total = T * kl + self.prior_kl(tokens, attention_mask).to(dtype)
        return total / real.sum(-1).clamp(min=1).to(dtype)

    def bits_per_token(
        self,
        logits_fn: LogitsFn,
        tokens: Tensor,
        attention_mask: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        step: Tensor | None = None,
    ) -> Tensor:
        """`loss` in bits per token (nats / ln 2). Returns [B]."""
        return nats_to_bits(self.loss(logits_fn, tokens, attention_mask, generator=generator, step=step))

    # -- ancestral sampling -------------------------------------------------------------------

    def sample(
        self,
        logits_fn: LogitsFn,
        shape: tuple[int, int],
        steps: int | None = None,
        *,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        device: torch.device | str | None = None,
        callback: StepCallback | None = None,
    ) -> Tensor:
        """Ancestral sampling of D3PM's reverse process (Austin et al. 2021, section 3).

        Starts from x_1 ~ Uniform over [0, V) and, on a uniform grid of `steps` steps (default
        T = num_steps; any number works, the posterior holds for any s < t), draws
        x_s ~ p_theta(x_s | x_t) = sum_i q(x_s | x_t, x_0 = i) p~(x_0 = i | x_t), where p~ is
        the network's x_0 distribution after temperature and top-p. The last step (s = 0) draws
        x_0 from p~ itself. logits_fn receives x_t in [0, V) and t: [B].
        No host synchronisation in the loop.

        shape: (B, L).  Returns [B, L] long in [0, V).
        """
        batch, length = shape
        steps = self.num_steps if steps is None else steps
        grid = uniform_time_grid(steps)
        x = torch.randint(0, self.vocab_size, (batch, length), generator=generator, device=device)
        for i in range(steps):
            t, s = grid[i], grid[i + 1]
            t_batch = torch.full((batch,), t, device=x.device)
            logits = check_logits(logits_fn(x, t_batch), batch, length, self.vocab_size)
            log_x0 = torch.log(filtered_probs(logits, temperature, top_p))  # float64, -inf allowed
            probs = self.reverse_log_probs(x, log_x0, t, s).exp()
            x = sample_categorical(probs, generator)
            if callback is not None:
                callback({"step": i, "t": t, "s": s, "z": x, "block": 0})
        return x
