"""Settings shared by the audio domain tests (a module of its own: test files must not import
`conftest`, whose module name is shared by every test folder)."""

from __future__ import annotations

from pathlib import Path

# A corpus small enough to synthesise in a second or two and train a few steps on.
TINY = {
    "data": {"n_train": 4, "n_val": 2, "n_test": 2, "workers": 1, "real_clips": False,
             "packages": [],
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
