"""Discrete diffusion: masked (MDLM) and uniform (D3PM) processes over token sequences.

    from diffusekit.core.discrete import MaskedDiffusion, UniformDiffusion
    proc = MaskedDiffusion(vocab_size=V, mask_id=V, schedule="loglinear")
    nelbo = proc.loss(logits_fn, tokens)                       # [B] nats per token
    bits = proc.bits_per_token(logits_fn, tokens)              # [B] bits per token
    tokens = proc.sample(logits_fn, (B, L), steps=64, generator=g)

logits_fn(z_t [B, L] long, t [B]) -> [B, L, V] logits over the real vocabulary (never the mask).
Masking schedules are chosen by name: `schedules.names()`.
"""

from diffusekit.core.discrete import schedules
from diffusekit.core.discrete.masked import MaskedDiffusion
from diffusekit.core.discrete.sampling import (
    LogitsFn,
    filtered_probs,
    nats_to_bits,
    sample_categorical,
    top_p_filter,
)
from diffusekit.core.discrete.schedules import MaskingSchedule
from diffusekit.core.discrete.uniform import UniformDiffusion

__all__ = [
    "LogitsFn",
    "MaskedDiffusion",
    "MaskingSchedule",
    "UniformDiffusion",
    "filtered_probs",
    "nats_to_bits",
    "sample_categorical",
    "schedules",
    "top_p_filter",
]
