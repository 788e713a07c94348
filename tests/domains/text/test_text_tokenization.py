"""Tokenizers: exact round trips, unknown characters, save/load with a run, BPE byte counts."""

from __future__ import annotations

from omegaconf import OmegaConf

from diffusekit.domains.text.tokenization import (BpeTokenizer, CharTokenizer, build_tokenizer,
                                                  load_tokenizer, tokenizer_vocab_size)

TEXT = "To be, or not to be: that is the question:\nWhether 'tis nobler in the mind to suffer\n"


def test_char_round_trip_and_ids():
    tok = CharTokenizer()
    ids = tok.encode(TEXT)
    assert len(ids) == len(TEXT) and all(0 <= i < tok.vocab_size - 1 for i in ids)
    assert tok.decode(ids) == TEXT
    assert tok.vocab_size == 97  # newline + 95 printable ASCII + unknown


def test_char_unknown_characters_and_tabs():
    tok = CharTokenizer("ab\n ")
    ids = tok.encode("ab\tcé\r\nba")
    assert ids == [0, 1, 3, 4, 4, 2, 1, 0]  # tab -> space; c and é unknown; \r\n -> \n
    assert tok.decode(ids) == "ab \ufffd\ufffd\nba"


def test_char_save_load_round_trip(tmp_path):
    tok = CharTokenizer("xyz\n")
    loaded = load_tokenizer(tok.save(tmp_path / "tokenizer.json"))
    assert isinstance(loaded, CharTokenizer) and loaded.alphabet == "xyz\n"
    assert loaded.decode(loaded.encode("zyx\nx")) == "zyx\nx"


def test_bpe_round_trip_save_load_and_byte_counts(tmp_path):
    cfg = OmegaConf.create({"kind": "bpe", "vocab_size": 300, "min_frequency": 2,
                            "alphabet": None})
    tok = build_tokenizer(cfg, [TEXT * 20, "Thou art more lovely and more temperate\n" * 20])
    assert isinstance(tok, BpeTokenizer) and tok.vocab_size == tokenizer_vocab_size(cfg) == 300
    unseen = "Zounds! Naïve café — wholly unseen text.\n"
    for text in (TEXT, unseen):
        ids = tok.encode(text)
        assert tok.decode(ids) == text  # byte-level: exact for any text
    ids = tok.encode(TEXT)
    assert len(ids) < len(TEXT) / 2  # merges learnt: well under one token per character
    lengths = tok.char_lengths()
    assert float(lengths[ids].sum()) == len(TEXT.encode("utf-8"))  # bytes per token add up
    loaded = load_tokenizer(tok.save(tmp_path / "tokenizer.json"))
    assert loaded.encode(TEXT) == ids and loaded.decode(ids) == TEXT and loaded.vocab_size == 300


def test_unreadable_tokenizer_file_is_a_data_error(tmp_path):
    import pytest

    from diffusekit.core.errors import DataError

    (tmp_path / "t.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot be read"):
        load_tokenizer(tmp_path / "t.json")
