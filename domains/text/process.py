"""The processes the toolkit's trainer runs for text, over the engine's discrete pieces:

    MaskedTextProcess      the engine's `MaskedDiffusion` (MDLM NELBO, SUBS, cached ancestral
                           sampling, semi-autoregressive blocks) behind the trainer's seam
                           training_loss(network, batch) / generate(network, batch, ...)
    AutoregressiveProcess  the left-to-right baseline under the same seam: exact NLL, ancestral
                           next-token sampling (temperature / top-p from the engine)

Both losses are per sequence, in nats per token. What is kept fixed while generating is chosen
by name (`MODES`): "unconditional" (nothing), "prefix" (the first `generate.prompt_tokens` tokens
of the batch's text) or "infill" (everything outside one span). A left-to-right model cannot
infill; asking it to is a `ConfigError`.

`PROCESSES[model.kind](cfg)` builds the process of a config ("mdlm" or "ar");
`generation_settings(cfg)` reads the `generate` section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from omegaconf import DictConfig
from torch import Tensor

from diffusekit.core.discrete import MaskedDiffusion, filtered_probs, sample_categorical
from diffusekit.core.discrete import schedules as masking_schedules
from diffusekit.core.errors import ConfigError
from diffusekit.core.inpainting import Replace
from diffusekit.core.registry import Registry
from diffusekit.domains.text.tokenization import tokenizer_vocab_size

SAMPLER_NAME = {"mdlm": "mdlm", "ar": "autoregressive"}


@dataclass(frozen=True)
class Generation:
    """What `generate` keeps fixed: `mode` (a `MODES` name), the prompt length in tokens, and the
    infilled span as fractions of the sequence (start, length)."""

    mode: str = "unconditional"
    prompt_tokens: int = 32
    infill_start: float = 0.25
    infill_length: float = 0.5

    def keep(self, x0: Tensor) -> Tensor:
        """[B, L] bool: the positions of `x0` [B, L] that generation keeps as given."""
        return MODES.get(self.mode)(self, x0)


MODES: Registry[Callable[[Generation, Tensor], Tensor]] = Registry("text generation mode")


@MODES.register("unconditional")
def _keep_nothing(g: Generation, x0: Tensor) -> Tensor:
    return torch.zeros_like(x0, dtype=torch.bool)


@MODES.register("prefix")
def _keep_prefix(g: Generation, x0: Tensor) -> Tensor:
    keep = torch.zeros_like(x0, dtype=torch.bool)
    keep[:, : min(int(g.prompt_tokens), x0.shape[1] - 1)] = True
    return keep


@MODES.register("infill")
def _keep_outside_span(g: Generation, x0: Tensor) -> Tensor:
    length = x0.shape[1]
    start = min(int(g.infill_start * length), length - 1)
    stop = max(start + 1, min(length, start + int(round(g.infill_length * length))))
    keep = torch.ones_like(x0, dtype=torch.bool)
    keep[:, start:stop] = False
    return keep


def _check_sampler(sampler: str | None, own: str) -> None:
    if sampler not in (None, own):
        raise ConfigError(f"the text domain samples with its {own!r} sampler; the Gaussian "
                          f"sampler {sampler!r} does not apply (leave --sampler out)")


class MaskedTextProcess:
    """Masked diffusion language model (MDLM, Sahoo et al. 2024) for the toolkit's trainer.

    diffusion: the engine's `MaskedDiffusion` (mask id = V); mask_draws: independent (t, z_t)
    draws per training sequence whose NELBO estimates are averaged (see `training_loss`); steps,
    temperature, top_p, block_size (semi-AR), context_size and cache are the defaults of
    `generate`.
    """

    sampler = "mdlm"

    def __init__(self, diffusion: MaskedDiffusion, generation: Generation = Generation(), *,
                 mask_draws: int = 1, steps: int = 128, temperature: float = 1.0,
                 top_p: float = 1.0, block_size: int | None = None,
                 context_size: int | None = None, cache: bool = True) -> None:
        if int(mask_draws) < 1:
            raise ConfigError(f"process.mask_draws must be a positive int, got {mask_draws!r}")
        self.diffusion, self.generation, self.mask_draws = diffusion, generation, int(mask_draws)
        self.steps, self.temperature, self.top_p = int(steps), float(temperature), float(top_p)
        self.block_size, self.context_size, self.cache = block_size, context_size, bool(cache)

    @property
    def mask_id(self) -> int:
        return self.diffusion.mask_id

    def training_loss(self, network: Callable[..., Tensor], batch: dict,
                      generator: torch.Generator | None = None) -> Tensor:
        """[B] NELBO estimate (MDLM eq. 10-11) in nats per token of batch["x0"] [B, L]: the mean
        of `mask_draws` = K one-sample estimates, each with its own t and z_t.

        The K B times are drawn together by the engine's low-discrepancy sampler, and the K
        copies of the batch are stacked so that sequence b gets t at offsets b / (K B) + k / K,
        k < K: its draws are spread over [t_min, 1] (K strata each). Every draw is unbiased, so
        the mean estimates the same bound with about 1 / K of the Monte-Carlo variance, for K
        times the network work per step; the tokens and the step count do not change."""
        x0, draws = batch["x0"], self.mask_draws
        loss = self.diffusion.loss(network, x0.repeat(draws, 1), generator=generator)  # [K B]
        return loss.view(draws, x0.shape[0]).mean(0)

    def init_tokens(self, x0: Tensor, keep: Tensor | None = None) -> Tensor:
        """[B, L]: x0 where kept, the mask token elsewhere (the sampler's `init`)."""
        keep = self.generation.keep(x0) if keep is None else keep
        return torch.where(keep, x0, torch.full_like(x0, self.mask_id))

    def generate(self, network: Callable[..., Tensor], batch: dict, *, sampler: str | None = None,
                 steps: int | None = None, generator: torch.Generator | None = None,
                 callback: Callable[[dict], None] | None = None, cache: bool | None = None,
                 keep: Tensor | None = None, **options: Any) -> Tensor:
        """[B, L] tokens shaped like batch["x0"], keeping what the generation mode (or `keep`,
        [B, L] bool) fixes; cached ancestral sampling (MDLM section 3.3) with the defaults of
        this process unless `options` (temperature, top_p, block_size, context_size) say
        otherwise."""
        _check_sampler(sampler, self.sampler)
        x0 = batch["x0"]
        settings = {"temperature": self.temperature, "top_p": self.top_p,
                    "block_size": self.block_size, "context_size": self.context_size, **options}
        return self.diffusion.sample(
            network, tuple(x0.shape), steps=int(steps or self.steps), generator=generator,
            init=self.init_tokens(x0, keep), cache=self.cache if cache is None else cache,
            device=x0.device, callback=callback, **settings)


    def inpaint(self, network: Callable[..., Tensor], batch: dict, known: Tensor, *,
                method: Any = "replace", sampler: str | None = None, steps: int | None = None,
                generator: torch.Generator | None = None,
                callback: Callable[[dict], None] | None = None, **options: Any) -> Tensor:
        """[B, L] tokens keeping batch["x0"] where `known` ([B, L] bool) is True: the masked
        diffusion's own infilling (`generate` with `keep`: the known tokens are never masked,
        the sampler unmasks the rest). Only "replace" applies: a kept token is held at every
        step already, and RePaint's going back up in time and reconstruction guidance (a
        gradient in the state) are for Gaussian processes."""
        if isinstance(method, Replace) and method.reconstruction:
            raise ConfigError("inpaint.reconstruction: reconstruction guidance takes a gradient in a "
                              "continuous state; the text model infills tokens (set it to 0)")
        if not (method == "replace" or isinstance(method, Replace)):
            name = method if isinstance(method, str) else type(method).__name__.lower()
            raise ConfigError(f"--method {name}: the text model infills by keeping the known "
                              "tokens at every step (replace); RePaint's resampling is for the "
                              "Gaussian domains")
        keep = torch.as_tensor(known, device=batch["x0"].device).bool().expand_as(batch["x0"])
        return self.generate(network, batch, sampler=sampler, steps=steps, generator=generator,
                             callback=callback, keep=keep, **options)


class AutoregressiveProcess:
    """Left-to-right language model: p(x) = prod_l p(x_l | x_<l) (the baseline).

    bos_id: the input id that starts every sequence (V); temperature, top_p: sampling defaults.
    """

    sampler = "autoregressive"

    def __init__(self, bos_id: int, generation: Generation = Generation(), *,
                 temperature: float = 1.0, top_p: float = 1.0) -> None:
        self.bos_id, self.generation = int(bos_id), generation
        self.temperature, self.top_p = float(temperature), float(top_p)

    def shifted(self, x0: Tensor) -> Tensor:
        """[B, L]: BOS followed by x0[:, :-1] (the inputs that predict x0)."""
        bos = torch.full_like(x0[:, :1], self.bos_id)
        return torch.cat([bos, x0[:, :-1]], dim=1)

    def token_nll(self, network: Callable[..., Tensor], x0: Tensor) -> Tensor:
        """[B, L] -log p(x_l | x_<l) in nats (exact, one network call)."""
        logits = network(self.shifted(x0), None).float()
        return torch.nn.functional.cross_entropy(logits.transpose(1, 2), x0, reduction="none")

    def training_loss(self, network: Callable[..., Tensor], batch: dict,
                      generator: torch.Generator | None = None) -> Tensor:
        """[B] negative log-likelihood in nats per token of batch["x0"] (exact)."""
        return self.token_nll(network, batch["x0"]).mean(dim=1)

    def generate(self, network: Callable[..., Tensor], batch: dict, *, sampler: str | None = None,
                 steps: int | None = None, generator: torch.Generator | None = None,
                 callback: Callable[[dict], None] | None = None, keep: Tensor | None = None,
                 **options: Any) -> Tensor:
        """[B, L] tokens, left to right (one network call per generated position; `steps` does
        not apply); kept positions (a prefix) are copied from batch["x0"]."""
        _check_sampler(sampler, self.sampler)
        x0 = batch["x0"]
        keep = self.generation.keep(x0) if keep is None else keep
        if self.generation.mode == "infill" and keep is not None and not bool(keep.all()):
            suffix_kept = keep.flip(1).cummax(1).values.flip(1) & ~keep  # a gap before a kept token
            if bool(suffix_kept.any()):
                raise ConfigError("a left-to-right model cannot infill a span "
                                  "(generate.mode=infill needs model.kind=mdlm)")
        temperature = float(options.get("temperature", self.temperature))
        top_p = float(options.get("top_p", self.top_p))
        z = x0.clone()
        for i in range(x0.shape[1]):
            logits = network(self.shifted(z)[:, : i + 1], None)[:, -1]
            probs = filtered_probs(logits, temperature, top_p)
            z[:, i] = torch.where(keep[:, i], x0[:, i], sample_categorical(probs, generator))
            if callback is not None:
                callback({"step": i, "z": z})
        return z


def generation_settings(cfg: DictConfig) -> Generation:
    """`Generation` from the `generate` config section."""
    g = cfg.generate
    return Generation(mode=str(g.mode), prompt_tokens=int(g.prompt_tokens),
                      infill_start=float(g.infill_start), infill_length=float(g.infill_length))


def _mdlm_process(cfg: DictConfig) -> MaskedTextProcess:
    p, vocab = cfg.process, tokenizer_vocab_size(cfg.tokenizer)
    diffusion = MaskedDiffusion(vocab, vocab, masking_schedules.get(str(p.schedule)),
                                t_min=float(p.t_min))
    return MaskedTextProcess(diffusion, generation_settings(cfg),
                             mask_draws=int(p.get("mask_draws", 1)), steps=int(p.steps),
                             temperature=float(p.temperature), top_p=float(p.top_p),
                             block_size=None if p.block_size is None else int(p.block_size),
                             context_size=None if p.context_size is None else int(p.context_size),
                             cache=bool(p.cache))


def _ar_process(cfg: DictConfig) -> AutoregressiveProcess:
    p = cfg.process
    return AutoregressiveProcess(tokenizer_vocab_size(cfg.tokenizer), generation_settings(cfg),
                                 temperature=float(p.temperature), top_p=float(p.top_p))


# model.kind -> factory(cfg) -> the process that kind trains and samples with
PROCESSES: Registry[Callable[[DictConfig], Any]] = Registry("text model kind")
PROCESSES.register("mdlm", _mdlm_process)
PROCESSES.register("ar", _ar_process)
