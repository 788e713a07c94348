"""Generation from a user's text (`toolkit text-generate`, and `toolkit inpaint` with a text
file): a prompt, or a text with [MASK] spans to infill, turned into the sampler's fixed tokens.

    "To be, or not to be"            -> the prompt is kept, the rest of the sequence is generated
    "O Romeo, [MASK] art thou Romeo" -> each [MASK] is `span` tokens to infill (the diffusion
                                        model only); the rest of the sequence after the text is
                                        generated too

`toolkit inpaint --run R poem.txt [--span START-END ...]` reads a text file the same way
(`read_damaged`): each [MASK] stands for `repair.mask_tokens` tokens, and each --span (character
offsets into the file's text, END exclusive) is replaced by as many free tokens as its own text
takes; the infilled texts are written up to the end of the input (`write_repaired`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from diffusekit.core.errors import ConfigError, DataError
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


# ------------------------------------------------------------------------- toolkit inpaint
def spans_as_marks(text: str, spans: Any) -> list[tuple[str, int | None]]:
    """The text cut into pieces (kept text, None) and (the text of a span, its index): each
    --span (start, end) in characters, END exclusive; `DataError` for a span that is not whole
    characters, lies outside the text or overlaps another."""
    cuts = []
    for k, (start, end) in enumerate(sorted(spans)):
        if start != int(start) or end != int(end):
            raise DataError(f"--span {start:g}-{end:g}: give whole character offsets")
        if start < 0 or end > len(text):
            raise DataError(f"--span {int(start)}-{int(end)} lies outside the text "
                            f"(0-{len(text)} characters)")
        if cuts and start < cuts[-1][1]:
            raise DataError(f"--span {int(start)}-{int(end)} overlaps another span")
        cuts.append((int(start), int(end)))
    pieces: list[tuple[str, int | None]] = []
    at = 0
    for k, (start, end) in enumerate(cuts):
        pieces += [(text[at:start], None), (text[start:end], k)]
        at = end
    return [*pieces, (text[at:], None)]


def infill_tokens(tokenizer: Tokenizer, text: str, spans: Any, mask_tokens: int,
                  length: int) -> tuple[Tensor, Tensor, int]:
    """(tokens [L], keep [L] bool, n): the text's tokens kept, `mask_tokens` free tokens for each
    [MASK] in it, as many free tokens as each span's text takes, free tokens after the text up to
    `length`; n: the tokens the input takes (what is written back)."""
    tokens: list[int] = []
    keep: list[bool] = []
    for piece, span in spans_as_marks(text, spans):
        if span is not None:
            n = max(1, len(tokenizer.encode(piece)))
            tokens += [0] * n
            keep += [False] * n
            continue
        parts = piece.split(MASK_MARK)
        for i, part in enumerate(parts):
            ids = tokenizer.encode(part) if part else []
            tokens += ids
            keep += [True] * len(ids)
            if i < len(parts) - 1:
                tokens += [0] * mask_tokens
                keep += [False] * mask_tokens
    if all(keep):
        raise DataError(f"nothing to infill: put {MASK_MARK} in the text or give --span "
                        "START-END (character offsets)")
    if len(tokens) > length:
        raise DataError(f"the text takes {len(tokens)} tokens with its spans; the model's "
                        f"sequences hold {length} (shorten the text)")
    free = length - len(tokens)
    return (torch.tensor(tokens + [0] * free, dtype=torch.long),
            torch.tensor(keep + [False] * free, dtype=torch.bool), len(tokens))


def read_damaged(domain: Any, path: Path, region: Any, cfg: Any) -> Any:
    """A UTF-8 text file with [MASK] marks and / or --span ranges to infill (see the module
    docstring) as a `Damaged`; the tokenizer is the one `infill_tokenizer` gives."""
    from diffusekit.core.app.repair import output_name
    from diffusekit.plugins.domain import Damaged

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"input {str(path)!r} cannot be read as UTF-8 text: "
                        f"{' '.join(str(exc).split())[:120]}") from None
    tokenizer = infill_tokenizer(domain, cfg)
    tokens, keep, n = infill_tokens(tokenizer, text, region.spans,
                                    int(cfg.repair.mask_tokens), int(cfg.data.seq_len))
    return Damaged({"x0": tokens[None]}, keep[None], source={"tokenizer": tokenizer, "n": n},
                   name=output_name(Path(path)))


def infill_tokenizer(domain: Any, cfg: Any) -> Tokenizer:
    """The tokenizer of a model for `toolkit inpaint`: a character tokenizer is fixed by the
    config alone; a BPE one is the prepared data's (as `toolkit sample --model` writes with)."""
    from diffusekit.domains.text.tokenization import TOKENIZERS

    if str(cfg.tokenizer.kind) == "char":
        return TOKENIZERS.get("char")["build"](cfg.tokenizer, [])
    return domain.tokenizer(cfg)


def write_repaired(samples: Tensor, damaged: Any, out_dir: Path) -> list[Path]:
    """<name>-infilled.txt (each infilled text up to the input's end, separated by a rule) and
    <name>-infilled.md (the same with what the model wrote inside [[ ]])."""
    tokenizer, n = damaged.source["tokenizer"], damaged.source["n"]
    keep = damaged.known[0, :n]
    rows = [row[:n] for row in samples.detach().cpu()]
    rule = "\n" + "=" * 72 + "\n"
    txt = Path(out_dir) / f"{damaged.name}-infilled.txt"
    txt.write_text(rule.join(tokenizer.decode(row.tolist()) for row in rows) + "\n")
    md = Path(out_dir) / f"{damaged.name}-infilled.md"
    lines = ["# Infilled text", "", "What the model wrote is inside [[ ]].", ""]
    for k, row in enumerate(rows):
        lines += [f"## Infilling {k + 1}", "", "```text",
                  marked(tokenizer, row, keep).replace("```", "'''"), "```", ""]
    md.write_text("\n".join(lines))
    return [txt, md]
