"""Generation from a user's text (`toolkit text-generate`): a prompt, or a text with [MASK]
spans to infill, turned into the sampler's fixed tokens.

    "To be, or not to be"            -> the prompt is kept, the rest of the sequence is generated
    "O Romeo, [MASK] art thou Romeo" -> each [MASK] is `span` tokens to infill (the diffusion
                                        model only); the rest of the sequence after the text is
                                        generated too
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from diffusekit.core.errors import ConfigError
from diffusekit.domains.text.tokenization import Tokenizer

MASK_MARK = "[MASK]"


def fixed_tokens(tokenizer: Tokenizer, text: str, span: int, length: int) -> tuple[Tensor, Tensor]:
    """(tokens [L] long, keep [L] bool): the text's tokens kept, `span` free tokens for every
    [MASK], free tokens after the text up to `length`. `ConfigError` when it does not fit."""
    pieces = text.split(MASK_MARK)
    tokens: list[int] = []
    keep: list[bool] = []
    for i, piece in enumerate(pieces):
        ids = tokenizer.encode(piece) if piece else []
        tokens += ids
        keep += [True] * len(ids)
        if i < len(pieces) - 1:
            tokens += [0] * span
            keep += [False] * span
    if len(tokens) >= length:
        raise ConfigError(f"the text takes {len(tokens)} tokens with its spans; the model's "
                          f"sequences hold {length} (shorten the text or --span)")
    free = length - len(tokens)
    return (torch.tensor(tokens + [0] * free, dtype=torch.long),
            torch.tensor(keep + [False] * free, dtype=torch.bool))


def marked(tokenizer: Tokenizer, row: Tensor, keep: Tensor) -> str:
    """Decode `row` [L] with the generated stretches (keep = False) inside [[ ]]."""
    parts, start = [], 0
    for i in range(1, len(row) + 1):
        if i == len(row) or bool(keep[i]) != bool(keep[start]):
            piece = tokenizer.decode(row[start:i].tolist())
            parts.append(piece if bool(keep[start]) else f"[[{piece}]]")
            start = i
    return "".join(parts)


def generate_from_text(run_dir: str | Path, text: str, *, span: int = 16, steps: int | None = None,
                       n: int = 4, block_size: int | None = None, seed: int = 0) -> list[str]:
    """Generate `n` completions of `text` with a run's EMA weights; write them with the domain's
    `write_samples` into RUN/samples/generate-<steps>/ and return printable lines."""
    from diffusekit.core.app.training.inference import load_run
    from diffusekit.core.app.training.runs import RunDir
    from diffusekit.domains.text.domain import TextDomain

    domain, run = TextDomain(), RunDir.open(run_dir)
    network, process, cfg = load_run(domain, run)
    tokenizer = domain.tokenizer(cfg, near=run.path)
    tokens, keep = fixed_tokens(tokenizer, text, span, int(cfg.data.seq_len))
    batch = {"x0": tokens.expand(n, -1).clone()}
    options = {} if block_size is None else {"block_size": block_size}
    steps = int(steps or cfg.sample.steps)
    with torch.no_grad():
        samples = process.generate(network, batch, steps=steps, keep=keep.expand(n, -1),
                                   generator=torch.Generator().manual_seed(seed), **options)
    out = run.samples / f"generate-{steps}"
    paths = domain.write_samples(samples, out, cfg)
    lines = []
    for i, row in enumerate(samples):
        lines += [f"--- sample {i + 1}", marked(tokenizer, row, keep)]
    lines.append(f"written: {', '.join(str(p) for p in paths)}")
    return lines
