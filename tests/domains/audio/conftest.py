"""Fixtures of the audio domain tests: a tiny synthesised corpus and its config (no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf

from diffusekit.domains.audio.corpus import Job, load_wav, synthesise
from diffusekit.domains.audio.domain import AudioDomain

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

# A corpus small enough to synthesise in a second or two and train a few steps on.
TINY = {
    "data": {"n_train": 4, "n_val": 2, "n_test": 2, "workers": 1, "real_clips": False,
             "train_voices": ["flite:kal16", "flite:awb"], "test_voices": ["flite:slt"],
             "frames": 32, "eval_frames": 64, "batch_size": 2},
    "network": {"channels": [8, 16], "emb_dim": 16},
    "trainer": {"max_steps": 4, "progress_bar": False},
    "checkpoint_every": 2, "val_every": 2,
    "sample": {"val_n": 2, "n": 2, "eval_n": 2, "batch_size": 2, "steps": 2},
    "outputs": {"write_n": 2},
}


def tiny_overrides(cache: Path) -> list[str]:
    """TINY as command-line overrides, with the corpus under `cache`."""
    items: list[str] = []

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}{k}.", v)
        else:
            items.append(f"{prefix[:-1]}={_yaml(node)}")

    walk("", TINY)
    return [*items, f"data.cache_dir={cache}"]


def _yaml(v) -> str:
    if isinstance(v, list):
        return "[" + ",".join(_yaml(x) for x in v) + "]"
    return str(v).lower() if isinstance(v, bool) else str(v)


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
