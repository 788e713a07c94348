"""The text networks, built from `transformers` configs (random initialisation, no pretrained
weights), chosen by `model.kind` through `NETWORKS`:

    mdlm  `BidirectionalDenoiser`: a ModernBERT encoder (Warner et al. 2024) over z_t, where
          masked positions hold the extra token V; logits over the V real tokens (SUBS: the mask
          is never predicted). Pre-LayerNorm blocks, rotary positions and a gated (GeGLU)
          feed-forward, every layer attending to the whole sequence: close to MDLM's own DiT
          backbone (pre-LN, rotary), minus the time conditioning. Like MDLM's network it does not
          see t: the masked-diffusion posterior does not depend on t (Ou et al. 2024), which also
          makes the sampler's cache exact.
          (A post-LN BERT encoder of the same size stayed on the unigram plateau, about 4.6 test
          bits per character, for the whole 400-step quick budget at lr 1e-3 and 3e-4, while this
          pre-LN encoder reaches 3.8; see the README's text section.)
    ar    `CausalBaseline`: a GPT-2 decoder (Radford et al. 2019) of the same width, depth, heads
          and parameter count; its input is the sequence shifted right behind a BOS token (id V).

Both have the toolkit's network signature net(tokens [B, L] long, t [B]) -> logits [B, L, V];
the causal one ignores t as well.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from diffusekit.core.registry import Registry


def _prepare_transformers() -> None:
    """Quiet transformers' logging, and keep it from importing torchaudio, which the text
    networks never use: transformers' audio helpers import torchaudio whenever it is installed,
    and the torchaudio wheel (a CUDA build, for the audio domain) fails to import beside the CPU
    torch of this project. Where torchaudio is already imported (it loaded fine), nothing
    changes."""
    import sys

    import transformers.utils as hf_utils
    import transformers.utils.import_utils as hf_import_utils
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if "torchaudio" not in sys.modules:
        hf_utils.is_torchaudio_available = hf_import_utils.is_torchaudio_available = (
            lambda: False)


def gated_width(intermediate: int) -> int:
    """Width of a gated (GLU) feed-forward with the parameters of a plain one of width
    `intermediate`: the gated one has three hidden x width matrices instead of two, so 2/3 of the
    width (as LLaMA does, Touvron et al. 2023)."""
    return max(1, round(2 * intermediate / 3))


class BidirectionalDenoiser(nn.Module):
    """ModernBERT encoder with its MLM head over V + 1 input ids (V = mask); outputs V logits.

    `intermediate` is the width of a plain feed-forward; the gated one gets `gated_width` of it,
    so that the denoiser has the parameter count of the GPT-2 baseline of the same sizes."""

    def __init__(self, vocab_size: int, seq_len: int, hidden: int, layers: int, heads: int,
                 intermediate: int, dropout: float = 0.0) -> None:
        super().__init__()
        _prepare_transformers()
        from transformers import ModernBertConfig, ModernBertForMaskedLM

        self.vocab_size = vocab_size
        # No special ids: the mask (id V) is the only extra token; no padding, so no frozen row.
        no_ids = dict.fromkeys(("pad_token_id", "bos_token_id", "eos_token_id", "cls_token_id",
                                "sep_token_id"))
        config = ModernBertConfig(vocab_size=vocab_size + 1, hidden_size=hidden,
                                  num_hidden_layers=layers, num_attention_heads=heads,
                                  intermediate_size=gated_width(intermediate),
                                  max_position_embeddings=seq_len,
                                  layer_types=["full_attention"] * layers,
                                  attention_dropout=dropout, embedding_dropout=dropout,
                                  mlp_dropout=dropout, attn_implementation="sdpa", **no_ids)
        self.model = ModernBertForMaskedLM(config)

    def forward(self, tokens: Tensor, t: Tensor | None = None) -> Tensor:
        """tokens [B, L] in [0, V] (V = mask) -> logits [B, L, V]; `t` is not used."""
        logits = self.model(input_ids=tokens).logits
        return logits[..., : self.vocab_size]


class CausalBaseline(nn.Module):
    """GPT-2 decoder over V + 1 input ids (V = BOS); outputs V logits of the next token."""

    def __init__(self, vocab_size: int, seq_len: int, hidden: int, layers: int, heads: int,
                 intermediate: int, dropout: float = 0.0) -> None:
        super().__init__()
        _prepare_transformers()
        from transformers import GPT2Config, GPT2LMHeadModel

        self.vocab_size = vocab_size
        self.bos_id = vocab_size
        config = GPT2Config(vocab_size=vocab_size + 1, n_positions=seq_len, n_embd=hidden,
                            n_layer=layers, n_head=heads, n_inner=intermediate,
                            resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                            bos_token_id=vocab_size, eos_token_id=vocab_size)
        self.model = GPT2LMHeadModel(config)

    def forward(self, tokens: Tensor, t: Tensor | None = None) -> Tensor:
        """tokens [B, L] (inputs, BOS first) -> logits [B, L, V] of the following tokens."""
        logits = self.model(input_ids=tokens, use_cache=False).logits
        return logits[..., : self.vocab_size]


NETWORKS: Registry[Callable[..., nn.Module]] = Registry("text network")
NETWORKS.register("mdlm", BidirectionalDenoiser)
NETWORKS.register("ar", CausalBaseline)


def build_text_network(kind: str, vocab_size: int, seq_len: int, model_cfg: Any) -> nn.Module:
    """The network registered as `kind` with the sizes of the `model` config section."""
    return NETWORKS.get(kind)(vocab_size, seq_len, int(model_cfg.hidden), int(model_cfg.layers),
                              int(model_cfg.heads), int(model_cfg.intermediate),
                              float(model_cfg.dropout))


def parameter_count(network: nn.Module) -> int:
    """Parameters of `network` (tied weights counted once)."""
    return sum(p.numel() for p in network.parameters())


@torch.no_grad()
def exact_marginal_logits(probs: Tensor, length: int) -> Callable[[Tensor, Tensor], Tensor]:
    """logits_fn of a model that knows the exact i.i.d. token marginals `probs` [V]: the same
    log-probabilities at every position whatever z_t is (used by the tests and as a check)."""
    log_p = probs.clamp_min(1e-30).log()

    def logits_fn(z: Tensor, t: Tensor) -> Tensor:
        return log_p.to(z.device).expand(z.shape[0], z.shape[1], -1).clone()

    return logits_fn
