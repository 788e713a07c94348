"""The data module: held-out works, fixed-length chunks with their character counts, char and
BPE tokenizers on the same corpus."""

from __future__ import annotations

import pytest
import torch

from diffusekit.core.app import config as configuration
from diffusekit.domains.text.data import TextDataModule, prepare_corpus


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_chunks_come_from_the_right_works_and_count_their_characters(tiny_cfg, kind):
    cfg = configuration.override(tiny_cfg, overrides=[f"tokenizer.kind={kind}",
                                                      "tokenizer.vocab_size=300"])
    folder = prepare_corpus(cfg)
    assert prepare_corpus(cfg) == folder  # cached
    dm = TextDataModule(cfg)
    info = dm.info()
    assert info["works"] == {"train": ["work_0", "work_1"], "val": ["work_2"], "test": ["work_3"]}
    dm.setup("fit")
    batch = next(iter(dm.test_dataloader()))
    assert batch["x0"].shape == (4, 32) and batch["x0"].dtype == torch.long
    tok = dm.tokenizer
    assert tok.kind == kind and int(batch["x0"].max()) < tok.vocab_size
    for row, n_chars in zip(batch["x0"], batch["n_chars"]):
        assert float(n_chars) == len(tok.decode(row.tolist()).encode("utf-8"))
    text = tok.decode(dm.streams["test"].tolist())
    assert text.startswith("Like as the waves") and "licence" not in text  # Gutenberg stripped
    if kind == "bpe":
        assert info["test_tokens"] < 0.9 * info["test_chars"]  # merges shorten even unseen text
    else:
        assert info["test_tokens"] == info["test_chars"]


def test_a_split_shorter_than_one_chunk_is_a_data_error(tiny_cfg):
    from diffusekit.core.errors import DataError

    cfg = configuration.override(tiny_cfg, overrides=["data.seq_len=100000"])
    dm = TextDataModule(cfg)
    with pytest.raises(DataError, match="fewer than one chunk"):
        dm.dataset("test")
