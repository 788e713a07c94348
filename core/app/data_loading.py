"""How every domain's DataLoaders load: worker processes, pinned memory, persistent workers.

A GPU trains faster than one Python process can collate batches for it, so each domain's data
module builds its loaders with the same three settings of its `data:` section:

    data:
      num_workers: 0           # DataLoader worker processes (0: in the training process)
      pin_memory: auto         # page-locked batches for fast copies to a GPU: auto (when torch
                               # sees one) | true | false
      persistent_workers: true # keep the workers between epochs and validations (num_workers > 0)

    DataLoader(dataset, batch_size=..., shuffle=..., **loader_options(cfg.data))

A section without these keys (a third-party domain's) loads in the training process, unpinned.
"""

from __future__ import annotations

from typing import Any

import torch

from diffusekit.core.errors import ConfigError

_PIN_CHOICES = {"auto": None, "true": True, "false": False}


def loader_options(data: Any) -> dict[str, Any]:
    """`num_workers`, `pin_memory` and `persistent_workers` for `torch.utils.data.DataLoader`
    from a domain's `data` section (a config node or mapping; see the module docstring). A
    `ConfigError` naming the key for a value of the wrong kind."""
    get = data.get if hasattr(data, "get") else (lambda key, default=None: default)
    workers = get("num_workers", 0)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"config key 'data.num_workers' must be a whole number >= 0, got "
                          f"{workers!r}")
    pin = get("pin_memory", "auto")
    pin_key = str(pin).lower() if pin is not None else "false"
    if pin_key not in _PIN_CHOICES:
        raise ConfigError(f"config key 'data.pin_memory' must be auto, true or false, got {pin!r}")
    pinned = _PIN_CHOICES[pin_key]
    if pinned is None:
        pinned = torch.cuda.is_available()
    persistent = get("persistent_workers", True)
    if not isinstance(persistent, bool):
        raise ConfigError(f"config key 'data.persistent_workers' must be true or false, got "
                          f"{persistent!r}")
    return {"num_workers": workers, "pin_memory": bool(pinned),
            "persistent_workers": persistent and workers > 0}
