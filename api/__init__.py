"""diffusekit: one diffusion engine, pluggable domains, and what you do with a trained model.

    import diffusekit
    model = diffusekit.load_model("runs/audio/20261204-101500")   # a folder, or user/name
    paths = diffusekit.sample(model, n=8, sampler="ddim", steps=8)

The sub-packages: `diffusekit.core` (the engine: torch only), `diffusekit.core.app` (config,
training, the command line), `diffusekit.plugins` (the plugin API), `diffusekit.domains` (the
built-in domains). The names below are loaded on first use, so `import diffusekit.core` stays
as light as the engine.
"""

from __future__ import annotations

from typing import Any

_LAZY = {  # public name -> (module, attribute)
    "load_model": ("diffusekit.core.app.training.models", "load_model"),
    "export_model": ("diffusekit.core.app.training.models", "export_model"),
    "Model": ("diffusekit.core.app.training.models", "Model"),
    "sample": ("diffusekit.core.app.training.inference", "sample_model"),
    "evaluate": ("diffusekit.core.app.training.inference", "evaluate_model"),
    "add_adapters": ("diffusekit.core.app.training.inference", "add_adapters"),
    "add_controls": ("diffusekit.core.app.controls", "add_controls"),
    "use_hint_file": ("diffusekit.core.app.controls", "use_hint_file"),
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'diffusekit' has no attribute {name!r}")
    import importlib

    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
