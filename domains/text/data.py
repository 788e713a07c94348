"""The text data module: corpus -> split by work -> tokenizer -> fixed-length token chunks.

Batches are dicts {"x0": [B, L] long token ids, "n_chars": [B] float characters the chunk
stands for} (bits per token x tokens / characters = bits per character). Each split is one
token stream (works joined by a blank line) cut into non-overlapping chunks of `data.seq_len`
tokens; training chunks start at a random offset (drawn whenever the loader is built).

The prepared cache (`<data root>/text/<key>/`) holds the tokenizer and the encoded splits, keyed
by the source, the split and the tokenizer settings. The tokenizer is also saved into the run
folder (`tokenizer.json`) as soon as a trainer sets the data module up, so sampling and
evaluation decode with exactly the tokenizer the run was trained with.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from diffusekit.domains.text.corpus import data_root, load_works, split_works
from diffusekit.domains.text.tokenization import (TOKENIZER_FILE, Tokenizer, build_tokenizer,
                                                  load_tokenizer, tokenizer_vocab_size)
from diffusekit.core.app.data_loading import loader_options
from diffusekit.core.errors import DataError

SPLITS = ("train", "val", "test")


class TokenChunks(Dataset):
    """Chunks of `length` tokens of one stream, starting at `offset` (items: batch dicts)."""

    def __init__(self, stream: Tensor, char_lengths: Tensor, length: int, offset: int = 0) -> None:
        self.stream, self.char_lengths, self.length = stream, char_lengths, int(length)
        self.offset = int(offset)
        self.count = (len(stream) - self.offset) // self.length

    def __len__(self) -> int:
        return max(0, self.count)

    def __getitem__(self, i: int) -> dict:
        start = self.offset + i * self.length
        x0 = self.stream[start: start + self.length]
        return {"x0": x0, "n_chars": self.char_lengths[x0].sum()}


def cache_key(cfg: DictConfig) -> str:
    """A short hash of everything the prepared data depends on."""
    d = cfg.data
    source = str(d.source)
    if source != "shakespeare":
        path = Path(source).expanduser()
        stat = path.stat() if path.exists() else None
        source = f"{path.resolve()}:{stat.st_mtime_ns if stat else 0}"
    parts = {"source": source, "folio": bool(d.folio), "test": list(d.test_works),
             "val": list(d.val_works), "holdout": float(d.holdout_fraction),
             "tokenizer": OmegaConf.to_container(cfg.tokenizer, resolve=True)}
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def prepare_corpus(cfg: DictConfig) -> Path:
    """Build (once) the cache folder of `cfg`: tokenizer.json, {train,val,test}.pt token streams,
    info.json. Returns the folder."""
    d = cfg.data
    root = data_root(d.cache_dir)
    folder = root / "text" / f"prepared-{cache_key(cfg)}"
    if (folder / "info.json").exists():
        return folder
    works = load_works(str(d.source), root, bool(d.folio))
    split = split_works(works, list(d.test_works), list(d.val_works), float(d.holdout_fraction))
    tokenizer = build_tokenizer(cfg.tokenizer, list(split["train"].values()))
    if tokenizer.vocab_size != tokenizer_vocab_size(cfg.tokenizer):
        raise DataError("tokenizer size does not match its config")
    folder.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"source": str(d.source), "works": {}}
    for name in SPLITS:
        text = "\n\n".join(split[name].values())
        ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
        if len(ids) == 0:
            raise DataError(f"the {name} split of {d.source!r} holds no text")
        torch.save(ids, folder / f"{name}.pt")
        info["works"][name] = sorted(split[name])
        info[f"{name}_tokens"] = len(ids)
        info[f"{name}_chars"] = len(text)
    tokenizer.save(folder / TOKENIZER_FILE)
    (folder / "info.json").write_text(json.dumps(info, indent=1))
    return folder


class TextDataModule(L.LightningDataModule):
    """Token chunks of the configured corpus (see the module docstring)."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.seq_len = int(cfg.data.seq_len)
        self.batch_size = int(cfg.data.batch_size)
        self.loader = loader_options(cfg.data)  # DataLoader workers, pinning (data_loading.py)
        self.seed = int(cfg.data.seed)
        self.streams: dict[str, Tensor] = {}
        self._tokenizer: Tokenizer | None = None
        self._epoch = 0

    def prepare_data(self) -> None:
        prepare_corpus(self.cfg)

    @property
    def folder(self) -> Path:
        return prepare_corpus(self.cfg)

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.folder / TOKENIZER_FILE)
        return self._tokenizer

    def info(self) -> dict[str, Any]:
        return json.loads((self.folder / "info.json").read_text())

    def setup(self, stage: str | None = None) -> None:
        folder = self.folder
        for name in SPLITS:
            if name not in self.streams:
                self.streams[name] = torch.load(folder / f"{name}.pt")
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.is_global_zero and trainer.default_root_dir:
            run = Path(trainer.default_root_dir)
            if (run / "config.yaml").exists() and not (run / TOKENIZER_FILE).exists():
                self.tokenizer.save(run / TOKENIZER_FILE)  # the run keeps its tokenizer

    def dataset(self, split: str, offset: int = 0) -> TokenChunks:
        if split not in self.streams:
            self.setup()
        chunks = TokenChunks(self.streams[split], self.tokenizer.char_lengths(), self.seq_len,
                             offset)
        if len(chunks) == 0:
            raise DataError(f"the {split} split has {len(self.streams[split])} tokens, fewer than "
                            f"one chunk of data.seq_len={self.seq_len}")
        return chunks

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed + self._epoch)
        offset = int(torch.randint(self.seq_len, (), generator=g))
        self._epoch += 1
        data = self.dataset("train", offset)
        return DataLoader(data, batch_size=self.batch_size, shuffle=True, generator=g,
                          drop_last=len(data) >= self.batch_size, **self.loader)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("val"), batch_size=self.batch_size, **self.loader)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("test"), batch_size=self.batch_size, **self.loader)
