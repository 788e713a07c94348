"""Tokenizers of the text domain, chosen by name (`TOKENIZERS`): character-level by default, or a
byte-level BPE trained with the `tokenizers` library. Both save to and load from one JSON file,
which every run keeps as `tokenizer.json` in its folder.

    tok = build_tokenizer(cfg.tokenizer, train_texts)      # train (BPE) or set up (char)
    ids = tok.encode("To be, or not to be")                # list[int] in [0, tok.vocab_size)
    tok.decode(ids) == "To be, or not to be"               # exact for text in its alphabet
    tok.save(run / "tokenizer.json"); load_tokenizer(run / "tokenizer.json")
    run_folder_of(path)                                    # the run folder holding a path

`vocab_size` is fixed by the config before any data is read (the network is built from it): the
character alphabet is a config string, the BPE size a config number. `char_lengths` gives the
number of characters (bytes for BPE) each token stands for, so bits per token convert to bits
per character.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from diffusekit.core.errors import DataError
from diffusekit.core.registry import Registry

DEFAULT_ALPHABET = "\n" + string.printable[:95]  # newline + printable ASCII (space ... ~)
# the file a prepared corpus and every run keep their tokenizer in
TOKENIZER_FILE = "tokenizer.json"


class Tokenizer(Protocol):
    """What the domain needs from a tokenizer."""

    kind: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def char_lengths(self) -> Tensor: ...
    def save(self, path: Path) -> Path: ...


class CharTokenizer:
    """One token per character of `alphabet`, plus one unknown token (id len(alphabet)) for any
    other character; tabs become spaces and "\\r\\n" becomes "\\n" before encoding."""

    kind = "char"

    def __init__(self, alphabet: str = DEFAULT_ALPHABET) -> None:
        if len(set(alphabet)) != len(alphabet) or not alphabet:
            raise DataError("tokenizer.alphabet must be a non-empty string without repeats")
        self.alphabet = alphabet
        self.index = {ch: i for i, ch in enumerate(alphabet)}
        self.unk_id = len(alphabet)
        self.vocab_size = len(alphabet) + 1

    def encode(self, text: str) -> list[int]:
        text = text.replace("\r\n", "\n").replace("\t", " ")
        return [self.index.get(ch, self.unk_id) for ch in text]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.alphabet[i] if i < self.unk_id else "\ufffd" for i in ids)

    def char_lengths(self) -> Tensor:
        """[V] characters per token: all ones."""
        return torch.ones(self.vocab_size)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "alphabet": self.alphabet}

    def save(self, path: Path) -> Path:
        Path(path).write_text(json.dumps(self.to_json()))
        return Path(path)


class BpeTokenizer:
    """Byte-level BPE (Sennrich et al. 2016; GPT-2's byte-level variant) trained with the
    `tokenizers` library; decoding is exact for any text. `vocab_size` is the configured size
    (ids the trainer did not fill are never produced)."""

    kind = "bpe"

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = int(vocab_size)
        if tokenizer.get_vocab_size() > self.vocab_size:
            raise DataError(f"the BPE tokenizer has {tokenizer.get_vocab_size()} tokens, more "
                            f"than tokenizer.vocab_size={self.vocab_size}")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> "BpeTokenizer":
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), min_frequency=int(min_frequency),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok, vocab_size)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: Iterable[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids])

    def char_lengths(self) -> Tensor:
        """[V] bytes each token stands for (byte-level tokens: one symbol per byte)."""
        lengths = torch.ones(self.vocab_size)
        for token, i in self.tokenizer.get_vocab().items():
            lengths[i] = len(token)
        return lengths

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "vocab_size": self.vocab_size,
                "tokenizer": json.loads(self.tokenizer.to_str())}

    def save(self, path: Path) -> Path:
        Path(path).write_text(json.dumps(self.to_json()))
        return Path(path)


# name -> (vocab_size(cfg), build(cfg, texts), from_json(data))
TOKENIZERS: Registry[dict[str, Any]] = Registry("tokenizer")
TOKENIZERS.register("char", {
    "vocab_size": lambda cfg: len(str(cfg.alphabet or DEFAULT_ALPHABET)) + 1,
    "build": lambda cfg, texts: CharTokenizer(str(cfg.alphabet or DEFAULT_ALPHABET)),
    "from_json": lambda data: CharTokenizer(data["alphabet"]),
})


def _bpe_from_json(data: dict[str, Any]) -> BpeTokenizer:
    from tokenizers import Tokenizer as HFTokenizer

    return BpeTokenizer(HFTokenizer.from_str(json.dumps(data["tokenizer"])), data["vocab_size"])


TOKENIZERS.register("bpe", {
    "vocab_size": lambda cfg: int(cfg.vocab_size),
    "build": lambda cfg, texts: BpeTokenizer.train(texts, int(cfg.vocab_size),
                                                   int(cfg.min_frequency)),
    "from_json": _bpe_from_json,
})


def tokenizer_vocab_size(cfg: Any) -> int:
    """V, the number of real tokens, from the `tokenizer` config section alone."""
    return int(TOKENIZERS.get(cfg.kind)["vocab_size"](cfg))


def build_tokenizer(cfg: Any, texts: Iterable[str]) -> Tokenizer:
    """The tokenizer of the `tokenizer` config section, trained on `texts` where it learns."""
    return TOKENIZERS.get(cfg.kind)["build"](cfg, texts)


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer saved with `save`; `DataError` when the file is missing or unreadable."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        return TOKENIZERS.get(data["kind"])["from_json"](data)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"tokenizer {str(path)!r} cannot be read: {exc}") from None


def run_folder_of(path: Path) -> Path | None:
    """The run folder that holds `path` (the nearest parent with config.yaml and a tokenizer)."""
    for folder in [Path(path), *Path(path).resolve().parents]:
        if (folder / "config.yaml").is_file() and (folder / TOKENIZER_FILE).is_file():
            return folder
    return None
