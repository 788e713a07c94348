"""The text domain's customisation target (fortune cookies, at most 10% of the base's training
characters, the base's tokenizer) and its metric (bits per character under an n-gram judge).
The `fortunes` package is faked in the data cache, so nothing is downloaded; the test that
fetches the real one is marked slow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from diffusekit.core.app import config as configuration
from diffusekit.core.app import debian_packages
from diffusekit.core.errors import ConfigError
from diffusekit.domains.text import fortunes, metrics
from diffusekit.domains.text.data import TextDataModule, prepare_corpus
from diffusekit.domains.text.domain import TextDomain

from text_settings import TINY

VERSE = ("Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
         "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short "
         "a date;\n")
ASCII_ART = "  /\\_/\\\n ( o.o )\n  > ^ <"


def fake_fortunes(cache: Path, count: int = 400) -> Path:
    """An unpacked `fortunes` package under `cache` as `unpack_package` leaves it (marker
    included, so nothing is fetched): two cookie files, their .dat indexes and .u8 links, one
    fortune with an accent (dropped) and the ascii-art file (skipped)."""
    root = debian_packages.unpacked_root(fortunes.PACKAGE, cache / "text")
    folder = root / fortunes.COOKIE_DIR
    folder.mkdir(parents=True)
    for name, start in (("computers", 0), ("wisdom", count // 2)):
        cookies = [f"Fortune {i}: the bug is always in the code you did not test.\n"
                   f"\t\t-- Programmer {i}" for i in range(start, start + count // 2)]
        if name == "wisdom":
            cookies.append("Caf\u00e9 wisdom: never trust a naive accent.")
        (folder / name).write_text("\n%\n".join(cookies) + "\n%\n")
        (folder / f"{name}.dat").write_bytes(b"\x00\x00\x00\x02index")
        os.symlink(name, folder / f"{name}.u8")
    (folder / "ascii-art").write_text(ASCII_ART + "\n%\n")
    (root / debian_packages.MARKER).write_text("fortunes\n")
    return folder


@pytest.fixture
def base_cfg(tmp_path: Path):
    """The text config on a four-work base corpus of about 40,000 training characters, with its
    data cache (and a faked fortunes package) in tmp_path."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"work_{i}.txt").write_text(f"WORK {i}\n" + VERSE * 120)
    fake_fortunes(tmp_path / "cache")
    return configuration.compose(
        TextDomain().default_config(), domain="text",
        overrides=[*TINY, f"data.source={corpus}", f"data.cache_dir={tmp_path / 'cache'}"])


def test_the_target_is_held_out_fortunes_with_at_most_a_tenth_of_the_base_text(base_cfg,
                                                                                 tmp_path):
    target = TextDomain().finetune_target(base_cfg)
    assert (target["metric"], target["higher_is_better"]) == ("test_loss", False)
    on_target = configuration.override(base_cfg, overrides=target["overrides"])
    folder = Path(str(on_target.data.source))
    assert folder.parent == tmp_path / "cache" / "text"

    base = json.loads((prepare_corpus(base_cfg) / "info.json").read_text())
    prepared = prepare_corpus(on_target)
    info = json.loads((prepared / "info.json").read_text())
    assert info["works"] == {"train": ["train"], "val": ["val"], "test": ["test"]}
    # the budget is a tenth of the base's training characters (= tokens: char tokenizer);
    # the fortunes fill it up to less than one fortune (about 90 characters)
    assert base["train_chars"] > 40_000
    assert base["train_chars"] // 10 - 100 < info["train_chars"] <= base["train_chars"] // 10
    assert info["train_tokens"] == info["train_chars"]
    assert info["test_chars"] <= 0.25 * info["train_chars"] + 1 and info["val_chars"] > 0
    # the fine-tunes share the base's vocabulary
    assert (prepared / "tokenizer.json").read_text() == \
        (prepare_corpus(base_cfg) / "tokenizer.json").read_text()

    texts = {name: (folder / f"{name}.txt").read_text() for name in ("train", "val", "test")}
    cookies = {name: text.split(fortunes.SEPARATOR) for name, text in texts.items()}
    assert set(cookies["val"] + cookies["test"]).isdisjoint(cookies["train"])
    assert "Programmer" in texts["test"] and "Shall I compare" not in texts["train"]
    everything = "".join(texts.values())
    assert "\u00e9" not in everything and "o.o" not in everything  # accent, ascii-art: out

    module = TextDataModule(on_target)
    batch = next(iter(module.test_dataloader()))
    assert batch["x0"].shape == (int(on_target.data.batch_size), int(on_target.data.seq_len))

    # a second call reuses the folder untouched, so the prepared token cache stays valid
    stamp = (folder / "train.txt").stat().st_mtime_ns
    assert TextDomain().finetune_target(base_cfg)["overrides"] == target["overrides"]
    assert (folder / "train.txt").stat().st_mtime_ns == stamp
    assert prepare_corpus(on_target) == prepared


def test_a_bpe_tokenizer_has_no_fortunes_target(base_cfg):
    cfg = configuration.override(base_cfg, overrides=["tokenizer.kind=bpe"])
    with pytest.raises(ConfigError, match="char tokenizer"):
        TextDomain().finetune_target(cfg)


def test_dealing_keeps_each_split_within_its_share_and_follows_the_seed():
    cookies = [f"cookie {i} " + "x" * (i % 50) for i in range(300)]
    dealt = fortunes.deal(cookies, 2000, seed=0)
    sizes = {name: len(fortunes.SEPARATOR.join(parts)) for name, parts in dealt.items()}
    assert sizes["train"] <= 2000 and sizes["val"] <= 200 and sizes["test"] <= 500
    assert sizes["train"] > 1900  # filled up to less than one cookie
    assert sum(map(len, dealt.values())) == len(set(sum(dealt.values(), [])))  # no repeats
    assert fortunes.deal(cookies, 2000, seed=0) == dealt != fortunes.deal(cookies, 2000, seed=1)


def test_the_ngram_judge_is_normalised_and_prefers_its_own_corpus():
    text = ("the quick brown fox jumps over the lazy dog. " * 40).encode()
    stream = torch.tensor(list(text))
    judge = metrics.NgramJudge(stream, 128, order=4)
    context = torch.tensor(list(b"the q")).repeat(128, 1)
    context[:, -1] = torch.arange(128)
    assert torch.exp(-judge.token_nll(context)[:, -1]).sum().item() == pytest.approx(1.0)

    lengths = torch.ones(128)
    same = metrics.ngram_bits_per_char(judge, stream[:90].view(2, 45), lengths)
    shuffled = stream[:90][torch.randperm(90, generator=torch.Generator().manual_seed(0))]
    other = metrics.ngram_bits_per_char(judge, shuffled.view(2, 45), lengths)
    assert 0 < same < 1.0 < other  # memorised text: well under a bit a character


def test_evaluate_scores_samples_by_the_judge_of_the_training_text(base_cfg):
    domain = TextDomain()
    module = TextDataModule(base_cfg)
    batch = next(iter(module.test_dataloader()))
    noise = torch.randint(0, 95, batch["x0"].shape, generator=torch.Generator().manual_seed(0))
    real = domain.evaluate(batch, batch["x0"], base_cfg)
    random = domain.evaluate(batch, noise, base_cfg)
    assert real["ngram_bpc"] == real["data_ngram_bpc"] < 1.0 < 5.0 < random["ngram_bpc"]
    off = configuration.override(base_cfg, overrides=["evaluate.ngram_order=0"])
    assert "ngram_bpc" not in domain.evaluate(batch, noise, off)


@pytest.mark.slow
def test_the_real_fortunes_package_fills_the_shakespeare_budget(tmp_path):
    """Fetches Debian's fortunes (apt-get download, 0.8 MB) into tmp_path."""
    folder = fortunes.prepare_fortunes(tmp_path, budget=458_577, seed=0)
    train = (folder / "train.txt").read_text()
    assert 458_000 < len(train) < 458_577
    assert len((folder / "test.txt").read_text()) > 100_000
    assert len(fortunes.read_fortunes(fortunes.cookie_folder(tmp_path / "text"))) > 14_000
