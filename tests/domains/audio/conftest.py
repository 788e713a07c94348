"""Fixtures of the audio domain tests: a tiny synthesised corpus and its config (no network)."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from diffusekit.domains.audio.corpus import Job, load_wav, synthesise
from diffusekit.domains.audio.domain import AudioDomain

from audio_settings import TINY

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "She sells sea shells by the sea shore every morning.",
    "A gentle breeze carried the smell of rain across the field.",
    "Please remember to close the window before you leave.",
    "The old clock in the hall struck twelve at midnight.",
    "We walked along the river until the sun went down.",
    "Bright lights flickered in the windows of the tall houses.",
    "He opened the letter slowly and read it twice.",
]

@pytest.fixture(scope="session")
def tiny_cfg(tmp_path_factory) -> DictConfig:
    """The domain defaults with TINY merged in; the corpus is synthesised (flite) once."""
    from diffusekit.domains.audio.data import prepare_corpus

    cache = tmp_path_factory.mktemp("audio-cache")
    cfg = OmegaConf.merge(AudioDomain().default_config(), TINY,
                          {"data": {"cache_dir": str(cache)}})
    prepare_corpus(cfg, sentences=SENTENCES, progress=False)
    return cfg


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> np.ndarray:
    """One real synthesised utterance (flite, slt), 16 kHz float32."""
    path = tmp_path_factory.mktemp("speech") / "slt.wav"
    synthesise(Job(SENTENCES[0], "flite:slt", path))
    return load_wav(path, 16000)
