"""LoRA adapters on any domain's network, through peft (no hand-written LoRA).

LoRA (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models", eq. 3) keeps a
trained weight W frozen and learns a low-rank update beside it:

    h = W x + (alpha / r) * B A x,      A: [r, k], B: [d, r], r << min(d, k),

with B initialised to zero, so the adapted network starts exactly equal to the base. peft wraps
the named Linear / Conv / Embedding modules in place (`inject_adapter_in_model`); only the A and
B matrices train. An adapter is blended at sampling time by scaling its update:
`set_scale(network, name, s)` makes it (s * alpha / r) B A x, so s = 0 is the base bit for bit
(the base path is computed exactly as before and 0 is added) and s = 1 the trained adapter.
Several adapters (different names) on one network add their updates.

Files, in peft's own format, in an adapter folder:

    adapter_model.safetensors   the A and B matrices (peft's key names)
    adapter_config.json         the `LoraConfig` (rank, alpha, target modules, ...)
    base.json                   {"id": the base model as given, "sha256": of its weights file}

`merge_adapters(network)` folds every active adapter (at its scale) into the base weights and
removes peft's wrappers: a plain network with the base's parameter names.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from diffusekit.core.app.config import name_list, typed
from diffusekit.core.errors import CheckpointError, ConfigError

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
BASE_FILE = "base.json"
ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)  # what peft's LoRA wraps
KINDS = ("lora",)


@dataclass(frozen=True)
class AdapterSettings:
    """The `adapter` section of a run's config: `kind` (null: no adapter), `rank` r > 0,
    `alpha` (the update is scaled by alpha / r), `dropout` on the adapter's input, and `targets`
    (module-name patterns; None: the domain's defaults)."""

    kind: str
    rank: int
    alpha: float
    dropout: float
    targets: tuple[str, ...] | None

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "AdapterSettings | None":
        """The settings, or None when `adapter.kind` is null; a `ConfigError` naming the key of
        a bad value (`adapter.rank=0`, an unknown kind)."""
        if not is_adapter_run(cfg):
            return None
        section = cfg.adapter
        kind = str(section.kind)
        if kind not in KINDS:
            raise ConfigError(f"adapter.kind={kind!r} is not known; known: {', '.join(KINDS)}")
        rank = typed(cfg, "adapter.rank", int)
        if rank <= 0:
            raise ConfigError(f"adapter.rank must be a whole number > 0, got {rank}")
        alpha = typed(cfg, "adapter.alpha", float)
        dropout = typed(cfg, "adapter.dropout", float)
        if alpha <= 0 or not 0 <= dropout < 1:
            raise ConfigError(f"need adapter.alpha > 0 and 0 <= adapter.dropout < 1, got "
                              f"{alpha} and {dropout}")
        targets = name_list(cfg, "adapter.targets", "the domain's default target modules")
        return cls(kind, rank, alpha, dropout, targets)


def is_adapter_run(cfg: DictConfig) -> bool:
    """Whether a run's (or model's) config trains / holds an adapter (`adapter.kind` set)."""
    section = cfg.get("adapter")
    return bool(section is not None and section.get("kind") not in (None, "none"))


def adaptable_modules(network: nn.Module) -> list[str]:
    """Names of the modules LoRA can wrap (Linear, Conv1d/2d/3d, Embedding), in order."""
    return [name for name, module in network.named_modules()
            if name and isinstance(module, ADAPTABLE)]


def resolve_targets(network: nn.Module, patterns: tuple[str, ...]) -> list[str]:
    """The adaptable modules whose names match any of `patterns` (shell-style: `*` matches
    across dots, so `blocks.*.conv*` and `*attn*` work; a plain name also matches as a suffix
    after a dot). A `ConfigError` for a pattern that matches none, listing what exists."""
    names = adaptable_modules(network)
    chosen: list[str] = []
    for pattern in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)
                or fnmatch.fnmatchcase(n, f"*.{pattern}")]
        if not hits:
            listed = ", ".join(names[:40]) + (f", ... ({len(names)} in all)"
                                              if len(names) > 40 else "")
            raise ConfigError(f"adapter target {pattern!r} matches no Linear / Conv / Embedding "
                              f"module of the network; its modules: {listed}")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def add_lora(network: nn.Module, settings: AdapterSettings, targets: list[str],
             name: str = "default", *, train_only_adapter: bool = True) -> nn.Module:
    """Wrap `targets` of `network` (in place) with a LoRA adapter called `name`; with
    `train_only_adapter`, every other parameter is frozen. Returns `network`."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha,
                        lora_dropout=settings.dropout, target_modules=list(targets))
    inject_adapter_in_model(config, network, adapter_name=name)
    if train_only_adapter:
        for pname, param in network.named_parameters():
            # `...lora_A.<name>.weight` (Linear, Conv) or `...lora_embedding_A.<name>` (Embedding)
            param.requires_grad_(name in pname.split(".") and "lora_" in pname)
    return network


def parameter_counts(network: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in network.parameters())
    return sum(p.numel() for p in network.parameters() if p.requires_grad), total


def lora_layers(network: nn.Module) -> list[Any]:
    from peft.tuners.lora import LoraLayer

    return [m for m in network.modules() if isinstance(m, LoraLayer)]


def set_scale(network: nn.Module, name: str, scale: float) -> None:
    """Scale adapter `name`'s update by `scale` (0: the base exactly, 1: as trained)."""
    layers = [layer for layer in lora_layers(network) if name in layer.lora_A]
    if not layers:
        raise ConfigError(f"the network has no adapter called {name!r}")
    for layer in layers:
        layer.set_scale(name, float(scale))


def activate(network: nn.Module, names: list[str]) -> None:
    """Make exactly the adapters `names` active in every LoRA layer (their updates add up)."""
    for layer in lora_layers(network):
        layer.set_adapter([n for n in names if n in layer.lora_A])


def save_adapter(network: nn.Module, folder: Path, base_id: str, base_sha256: str,
                 name: str = "default") -> list[Path]:
    """Write adapter `name` of `network` into `folder` in peft's format, with base.json."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    layers = [layer for layer in lora_layers(network) if name in layer.lora_A]
    if not layers:
        raise ConfigError(f"the network has no adapter called {name!r}")
    config = _peft_config(network, name)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous()
             for k, v in get_peft_model_state_dict(network, adapter_name=name).items()}
    weights = folder / ADAPTER_WEIGHTS
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(weights)
    config.save_pretrained(str(folder))
    base = folder / BASE_FILE
    base.write_text(json.dumps({"id": base_id, "sha256": base_sha256}, indent=2) + "\n")
    return [weights, folder / ADAPTER_CONFIG, base]


def read_base(folder: Path) -> dict[str, str]:
    """base.json of an adapter folder: {"id", "sha256"}; `CheckpointError` when unreadable."""
    path = Path(folder) / BASE_FILE
    try:
        base = json.loads(path.read_text())
        return {"id": str(base["id"]), "sha256": str(base["sha256"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"adapter folder {str(folder)!r} has no readable {BASE_FILE}: "
                              f"{' '.join(str(exc).split())[:160]}") from None


def load_adapter(network: nn.Module, folder: Path, name: str, scale: float = 1.0) -> nn.Module:
    """Add the adapter saved in `folder` to `network` (in place) as `name`, scaled by `scale`,
    frozen. `CheckpointError` when its files are missing, unreadable or do not fit."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        config = LoraConfig.from_pretrained(str(folder))
        state = load_file(str(folder / ADAPTER_WEIGHTS))
    except Exception as exc:  # missing file, bad JSON, truncated safetensors
        raise CheckpointError(f"adapter in {str(folder)!r} cannot be read: "
                              f"{' '.join(str(exc).split())[:200]}") from None
    try:
        inject_adapter_in_model(config, network, adapter_name=name)
        result = set_peft_model_state_dict(network, state, adapter_name=name)
    except Exception as exc:
        raise CheckpointError(f"adapter in {str(folder)!r} does not fit the base network: "
                              f"{' '.join(str(exc).split())[:200]}") from None
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise CheckpointError(f"adapter in {str(folder)!r} does not fit the base network: "
                              f"unexpected tensors {unexpected[:3]}")
    for pname, param in network.named_parameters():
        param.requires_grad_(False)
    set_scale(network, name, scale)
    return network


def merge_adapters(network: nn.Module) -> nn.Module:
    """Fold every active adapter, at its scale, into the base weights and unwrap peft's layers:
    a plain network with the base's parameter names (in place; returns it)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    wrapped = [(name, m) for name, m in network.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, module in wrapped:
        with torch.no_grad():
            module.merge(adapter_names=list(module.active_adapters))
        parent_name, _, child = name.rpartition(".")
        parent = network.get_submodule(parent_name) if parent_name else network
        setattr(parent, child, module.get_base_layer())
    return network


def _peft_config(network: nn.Module, name: str) -> Any:
    config = getattr(network, "peft_config", {}).get(name)
    if config is None:
        raise ConfigError(f"the network has no adapter called {name!r}")
    return config
