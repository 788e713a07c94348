"""Fixtures of the text domain tests: a small local corpus (never the network) and a tiny config
(`toolkit` in-process comes from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffusekit.core.app import config as configuration

from text_settings import TINY

VERSES = [
    "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
    "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a date;\n",
    "When, in disgrace with fortune and men's eyes,\nI all alone beweep my outcast state,\n"
    "And trouble deaf heaven with my bootless cries,\nAnd look upon myself and curse my fate,\n",
    "Let me not to the marriage of true minds\nAdmit impediments. Love is not love\n"
    "Which alters when it alteration finds,\nOr bends with the remover to remove.\n",
    "Like as the waves make towards the pebbled shore,\nSo do our minutes hasten to their end;\n"
    "Each changing place with that which goes before,\nIn sequent toil all forwards do contend.\n",
]



@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A folder of four small 'works' (each verse repeated so every split has chunks)."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, verse in enumerate(VERSES):
        (folder / f"work_{i}.txt").write_text(
            "*** START OF THIS PROJECT GUTENBERG EBOOK X ***\n" + verse * 12
            + "*** END OF THIS PROJECT GUTENBERG EBOOK X ***\nlicence text\n")
    return folder


@pytest.fixture
def tiny_cfg(corpus: Path, tmp_path: Path):
    """The text domain's config, shrunk, on the fixture corpus with its cache in tmp_path."""
    from diffusekit.domains.text.domain import TextDomain

    overrides = [*TINY, f"data.source={corpus}", f"data.cache_dir={tmp_path / 'cache'}"]
    return configuration.compose(TextDomain().default_config(), overrides=overrides, domain="text")
