"""Masked (absorbing-state) diffusion: MDLM (Sahoo et al. 2024, "Simple and Effective Masked
Diffusion Language Models"), with the schedules of MD4 (Shi et al. 2024).

Forward process (MDLM eq. 2 with the absorbing prior pi = onehot(mask)): every token is kept with
probability alpha_t and replaced by the mask token otherwise, independently,

    q(z_t | x) = Cat(z_t; alpha_t onehot(x) + (1 - alpha_t) onehot(mask)).

SUBS parameterisation (MDLM section 3.2): the network's logits cover the V real tokens only (zero
mass on the mask), and a position that is not masked is carried over: its model distribution is
a one-hot on the observed token. Hence only masked positions enter the bound, and no sampler step
ever changes an unmasked token.

Continuous-time NELBO (MDLM eq. 10-11, MD4 eq. 5), per sequence:

    L = int_0^1  alpha'_t / (1 - alpha_t) * E_q[ sum_{l : z_t^l = mask} log p_theta(x^l | z_t) ] dt.

Reverse step from t to s < t (MDLM eq. 7 under SUBS): a masked token stays masked with probability
(1 - alpha_s) / (1 - alpha_t), otherwise becomes a token drawn from p_theta(x^l | z_t), so it is
unmasked with probability (alpha_s - alpha_t) / (1 - alpha_t).
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffusekit.core.discrete.sampling import (
    LogitsFn,
    StepCallback,
    block_spans,
    check_logits,
    context_start,
    filtered_probs,
    low_discrepancy_times,
    nats_to_bits,
    sample_categorical,
    uniform_time_grid,
)
from diffusekit.core.discrete.schedules import MaskingSchedule, resolve

DEFAULT_T_MIN = 1e-4  # lower end of the training times; the integrand's weight is ~ 1/t


class MaskedDiffusion:
    """A masked diffusion process over V tokens plus one mask token (MDLM).

    Args:
        vocab_size: V, the number of real tokens; data tokens lie in [0, V).
        mask_id: the id of the mask token; must lie outside [0, V) (default V).
        schedule: a masking-schedule name (`schedules.names()`: "loglinear", "linear", "cosine",
            ...) or a `MaskingSchedule`.
        t_min: training times are drawn from [t_min, 1] (the weight -alpha'/(1-alpha) ~ 1/t
            diverges at 0). The estimator averages over [t_min, 1] as MDLM does, so it estimates
            the full integral when the integrand is flat near 0 and drops a share O(t_min)
            otherwise.
    """

    def __init__(
        self,
        vocab_size: int,
        mask_id: int | None = None,
        schedule: str | MaskingSchedule = "loglinear",
        *,
        t_min: float = DEFAULT_T_MIN,
    ) -> None:
        if not isinstance(vocab_size, int) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
        mask_id = vocab_size if mask_id is None else mask_id
        if not isinstance(mask_id, int) or 0 <= mask_id < vocab_size:
            raise ValueError(
                f"mask_id={mask_id!r} collides with the vocabulary [0, {vocab_size}): the mask "
                f"must be an extra token, e.g. mask_id={vocab_size}"
            )
        if mask_id < 0:
            raise ValueError(f"mask_id must be a non-negative token id, got {mask_id}")
        if not 0.0 < t_min < 1.0:
            raise ValueError(f"t_min must lie in (0, 1), got {t_min}")
        self.vocab_size = vocab_size
        self.mask_id = mask_id
        self.schedule = resolve(schedule)
        self.t_min = t_min

    def __repr__(self) -> str:
        return (
            f"MaskedDiffusion(vocab_size={self.vocab_size}, mask_id={self.mask_id}, "
            f"schedule={self.schedule}, t_min={self.t_min})"
        )

    # -- forward process ------------------------------------------------------------------------

    def alpha(self, t: Tensor | float) -> Tensor:
        """alpha_t: probability that a token is still unmasked at time t."""
        return self.schedule.alpha(t)

    def q_sample(
        self,
        tokens: Tensor,
        t: Tensor,
        generator: torch.Generator | None = None,
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        """Draw z_t ~ q(z_t | x): each token masked independently with probability 1 - alpha_t.

        tokens: [B, L] long in [0, V); t: [B] (or a scalar) in [0, 1];
        attention_mask: optional [B, L], true/1 on real tokens; padding is never masked.
        Returns z_t: [B, L] long in [0, V) + {mask_id}.
        """
        t = torch.as_tensor(t, device=tokens.device)
        p_mask = self.schedule.mask_prob(t).to(torch.float64)
        p_mask = p_mask.reshape(-1, 1) if p_mask.dim() else p_mask
        u = torch.rand(tokens.shape, generator=generator, device=tokens.device, dtype=torch.float64)
        masked = u < p_mask
        if attention_mask is not None:
            masked &= attention_mask.bool()
        return torch.where(masked, torch.full_like(tokens, self.mask_id), tokens)

    # -- the bound --------------------------------------------------------------------------------

    def loss(
        self,
        logits_fn: LogitsFn,
        tokens: Tensor,
        attention_mask: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        t: Tensor | None = None,
    ) -> Tensor:
        """One-sample Monte-Carlo estimate of the continuous-time NELBO (MDLM eq. 10-11), in nats
        per token, for each sequence.

        t (one per sequence) is drawn by the low-discrepancy sampler on [t_min, 1] unless given;
        z_t ~ q(z_t | x); then

            nelbo_b = -alpha'(t_b) / (1 - alpha(t_b)) * sum_{l masked} -log p_theta(x_l | z_t) / n_b

        with n_b the number of real (non-padding) tokens of sequence b (L without a mask).
        Differentiable in the logits. The mean over a batch is a training loss; its expectation
        is an upper bound on -log p(x) / n (up to the O(t_min) and alpha(1) shares noted in the
        class docstring).

        tokens: [B, L] long in [0, V); attention_mask: optional [B, L] (1 = token, 0 = padding);
        t: optional [B]. Returns [B] float.
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be [B, L], got shape {tuple(tokens.shape)}")
        batch, length = tokens.shape
        if t is None:
            t = low_discrepancy_times(batch, t_min=self.t_min, generator=generator, device=tokens.device)
        z_t = self.q_sample(tokens, t, generator, attention_mask)
        logits = check_logits(logits_fn(z_t, t), batch, length, self.vocab_size)
        real = torch.ones_like(tokens, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        # Padding may use ids outside the vocabulary; gather at a safe index and drop it below.
        safe_tokens = torch.where(real, tokens, torch.zeros_like(tokens))
        log_p = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe_tokens.unsqueeze(-1)).squeeze(-1)
        masked = z_t == self.mask_id  # padding is never masked (q_sample)
        # SUBS: unmasked positions carry their token over, log p = log 1 = 0 there.
        nll = torch.where(masked, -log_p, torch.zeros_like(log_p)).sum(dim=-1)  # [B]
        weight = self.schedule.loss_weight(t.to(torch.float64)).to(nll.dtype)  # -alpha'/(1-alpha)
        n_tokens = real.sum(dim=-1).clamp(min=1).to(nll.dtype)
        return weight * nll / n_tokens

    def bits_per_token(
        self,
        logits_fn: LogitsFn,
        tokens: Tensor,
        attention_mask: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        t: Tensor | None = None,
    ) -> Tensor:
        """`loss` in bits per token (nats / ln 2). Returns [B]."""
        return nats_to_bits(self.loss(logits_fn, tokens, attention_mask, generator=generator, t=t))

    # -- ancestral sampling -------------------------------------------------------------------

    def sample(
        self,
        logits_fn: LogitsFn,
        shape: tuple[int, int],
        steps: int = 64,
        *,
        generator: torch.Generator | None = None,
        init: Tensor | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        block_size: int | None = None,
        context_size: int | None = None,
        cache: bool = True,
        device: torch.device | str | None = None,
        callback: StepCallback | None = None,
    ) -> Tensor:
        """Ancestral sampling of MDLM's reverse process (MDLM section 3.3 / Algorithm 2), on a
        uniform grid of `steps` steps from t = 1 to t = 0 (per block).

        Each step from t to s < t draws, for every position, a candidate x ~ p_theta(. | z_t)
        (after temperature and top-p) and unmasks each masked position with probability
        (alpha_s - alpha_t) / (1 - alpha_t); unmasked positions never change (SUBS carry-over).
        At the last step every remaining mask is filled, so the result holds no mask.

        Args:
            shape: (B, L).
            init: optional [B, L] long: mask_id where tokens are to be generated, fixed tokens
                elsewhere. Prefix prompting (a fixed prefix, masks after it) and infilling (masked
                spans between fixed tokens) both go through it; fixed tokens are returned as given.
            temperature, top_p: applied to p_theta before drawing (temperature 0 is greedy).
            block_size: semi-autoregressive generation (as in MDLM / SSD-LM): the sequence is made
                block by block, left to right, `steps` steps per block; while a block is made the
                network sees the finished blocks before it and the block itself, never the
                blocks after it (nor their fixed `init` tokens). None: one block (the whole
                sequence, fixed tokens on both sides visible).
            context_size: with blocks, the network sees at most the last `context_size`
                positions up to the block's end (sequences longer than the network's context).
            cache: when a step unmasks nothing, the next step reuses the previous step's
                probabilities instead of calling the network. z is then unchanged, so this is
                exact for a time-independent network (MDLM's SUBS network ignores t; the
                masked-diffusion posterior does not depend on t, Ou et al. 2024); for a
                network that uses t it reuses the output of the same z at a slightly later t.
                The draws do not depend on the cache, so the same generator gives the same
                sample with and without it when logits_fn ignores t.
            callback: called after every step with {"step", "t", "s", "z", "block"}.

        Host synchronisation: one read of `init` before the loop (which blocks hold masks, and a
        range check); with `cache=True` one bool per step (did the step change any token?);
        none otherwise.

        Returns: [B, L] long in [0, V).
        """
        batch, length = shape
        V, mask_id = self.vocab_size, self.mask_id
        if init is None:
            z = torch.full((batch, length), mask_id, dtype=torch.long, device=device)
        else:
            if tuple(init.shape) != (batch, length):
                raise ValueError(f"init has shape {tuple(init.shape)}, expected {(batch, length)}")
            z = init.to(device=device or init.device, dtype=torch.long).clone()
        device = z.device
        spans = block_spans(length, block_size)
        for start, end in spans:
            context_start(end, end - start, context_size)  # validates context_size early

        # The only reads of device data before the loop: which blocks hold masks; a range check.
        is_mask = z == mask_id
        out_of_range = (~is_mask & ((z < 0) | (z >= V))).any()
        block_has_mask = torch.stack([is_mask[:, a:b].any() for a, b in spans] + [out_of_range])
        *todo, bad = block_has_mask.tolist()
        if bad:
            raise ValueError(f"init holds tokens outside [0, {V}) that are not mask_id={mask_id}")

        grid = uniform_time_grid(steps)
        # (alpha_s - alpha_t) / (1 - alpha_t) per step, as Python floats; the last step fills all.
        t_now = torch.tensor(grid[:-1], dtype=torch.float64)
        p_unmask = self.schedule.unmask_prob(t_now, torch.tensor(grid[1:], dtype=torch.float64))
        p_unmask = p_unmask.clamp(0.0, 1.0).tolist()
        p_unmask[-1] = 1.0

        for block, ((start, end), needed) in enumerate(zip(spans, todo)):
            if not needed:
                continue
            lo = context_start(end, end - start, context_size)
            probs: Tensor | None = None  # [B, end - start, V] float64, reused while z is unchanged
            for i in range(steps):
                t, s = grid[i], grid[i + 1]
                if probs is None:
                    t_batch = torch.full((batch,), t, device=device)
                    logits = check_logits(logits_fn(z[:, lo:end], t_batch), batch, end - lo, V)
                    probs = filtered_probs(logits[:, start - lo :], temperature, top_p)
                current = z[:, start:end]
                u = torch.rand(current.shape, generator=generator, device=device, dtype=torch.float64)
                candidate = sample_categorical(probs, generator)
                unmask = (current == mask_id) & (u < p_unmask[i])
                z[:, start:end] = torch.where(unmask, candidate, current)
                if not cache or (i < steps - 1 and bool(unmask.any())):  # the one host sync
                    probs = None
                if callback is not None:
                    callback({"step": i, "t": t, "s": s, "z": z, "block": block})
        return z
