"""Run folders: where a training run keeps everything, and how later commands find it.

    runs/<domain>/<timestamp>/
        config.yaml          the resolved config of the run (every knob, as trained)
        checkpoints/         Lightning checkpoints: last.ckpt (every `checkpoint_every` steps and
                             at the end) and best.ckpt (lowest validation loss)
        model.safetensors    the EMA weights of the network, for sampling and export; with
                             config.yaml it is all `toolkit sample` / `toolkit evaluate` need
        samples/             files written by the domain: step-XXXXXX/ during validation,
                             <sampler>-<steps>/ from `toolkit sample`
        logs/version_N/      Lightning CSV logs (one version per start / resume)
        loss.png             training and validation loss curves
        metrics.json         the run's summary: steps, losses, time; `evaluation` after evaluate

A killed run is continued with `toolkit train --resume <run folder>` from `checkpoints/last.ckpt`.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from diffusekit.core.app import config as configuration
from diffusekit.core.errors import CheckpointError, ConfigError, RunDirError

RUN_DIR_ENV = "DIFFUSEKIT_RUN_DIR"  # a fixed run folder (DDP children, multi-node launchers)
TEMPORARY_SUFFIX = ".tmp"  # files being written: <name>.tmp, renamed into place when complete


@dataclass(frozen=True)
class RunDir:
    """The paths of one run folder (nothing is read or created by constructing it)."""

    path: Path

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / "best.ckpt"

    @property
    def weights(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def loss_curve(self) -> Path:
        return self.path / "loss.png"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    # ------------------------------------------------------------ create / open
    @classmethod
    def create(cls, root: str | Path, domain: str) -> "RunDir":
        """A new, empty folder `root/<domain>/<YYYYmmdd-HHMMSS>` (suffixed -2, -3, ... when a
        run of the same second exists)."""
        base = Path(root) / domain / time.strftime("%Y%m%d-%H%M%S")
        path, k = base, 1
        while True:
            try:
                path.mkdir(parents=True, exist_ok=False)
                break
            except FileExistsError:
                k += 1
                path = base.with_name(f"{base.name}-{k}")
        return cls(path)

    @classmethod
    def open(cls, path: str | Path) -> "RunDir":
        """An existing run folder; `RunDirError` unless it holds a `config.yaml`."""
        path = Path(path)
        if not path.is_dir():
            raise RunDirError(f"run folder {str(path)!r} does not exist")
        run = cls(path)
        if not run.config_file.is_file():
            raise RunDirError(f"{str(path)!r} is not a run folder (it has no config.yaml)")
        return run

    @classmethod
    def latest(cls, root: str | Path, domain: str) -> "RunDir":
        """The most recent run of `domain` under `root`; `RunDirError` when there is none."""
        folder = Path(root) / domain
        runs = sorted((p for p in folder.glob("*") if (p / "config.yaml").is_file()),
                      key=lambda p: (p.stat().st_mtime, p.name)) if folder.is_dir() else []
        if not runs:
            raise RunDirError(f"no run of domain {domain!r} under {str(folder)!r} to resume")
        return cls(runs[-1])

    # ------------------------------------------------------------------ config
    def load_config(self, domain: Any | None = None) -> DictConfig:
        """The run's resolved config; `RunDirError` when it is missing or unreadable. With the
        run's `domain`, the config is checked against the domain's defaults (a key the domain
        does not define is a `ConfigError`; keys added since the run take their defaults)."""
        try:
            cfg = configuration.load_saved(self.config_file)
        except ConfigError as exc:
            raise RunDirError(f"run {str(self.path)!r}: {exc}") from None
        if domain is None:
            return cfg
        return configuration.fit_to_defaults(cfg, domain.default_config(),
                                             f"run {str(self.path)!r}'s config.yaml", domain.name)

    def save_config(self, cfg: DictConfig) -> Path:
        """Write the resolved config (atomically)."""
        return configuration.save(cfg, self.config_file)

    # ------------------------------------------------------------- checkpoints
    def resume_checkpoint(self) -> tuple[Path, int]:
        """`checkpoints/last.ckpt` and its step, checked to be readable; `CheckpointError`
        otherwise."""
        path = self.last_checkpoint
        if not path.is_file():
            raise CheckpointError(
                f"run {str(self.path)!r} has no checkpoint to resume from ({path.name} is missing;"
                " the run stopped before its first checkpoint)")
        return path, int(check_checkpoint(path)["global_step"])

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the half-written files a killed run left (`*.tmp` in the run folder and in
        checkpoints/, hidden or not); return what was removed."""
        stale = sorted(p for folder in (self.path, self.checkpoints) if folder.is_dir()
                       for p in folder.glob(f"*{TEMPORARY_SUFFIX}") if p.is_file())
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    # ----------------------------------------------------------------- metrics
    def read_metrics(self) -> dict[str, Any]:
        """metrics.json as a dict ({} when absent)."""
        if not self.metrics_file.is_file():
            return {}
        try:
            return json.loads(self.metrics_file.read_text())
        except (OSError, ValueError) as exc:
            raise RunDirError(f"{str(self.metrics_file)!r} cannot be read: {exc}") from None

    def update_metrics(self, values: dict[str, Any]) -> Path:
        """Merge `values` into metrics.json (atomically)."""
        metrics = {**self.read_metrics(), **values}
        write_json_atomic(self.metrics_file, metrics)
        return self.metrics_file


def check_plain_name(name: str, what: str) -> str:
    """`name` (from a config or a command line) when it is one plain path component of letters,
    digits and `._+-` that does not start with a dot, so that no path built from it can leave
    its folder; a `ConfigError` naming `what` otherwise."""
    if not _PLAIN_NAME.fullmatch(str(name)):
        raise ConfigError(f"{what} {name!r} is not a plain name (letters, digits, '._+-'); "
                          "no file or folder may be named after it")
    return str(name)


def child_path(folder: Path, name: str, what: str) -> Path:
    """`folder / name`, with `name` checked by `check_plain_name` first."""
    return Path(folder) / check_plain_name(name, what)


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def check_checkpoint(path: Path) -> dict:
    """Load a Lightning checkpoint on the CPU without unpickling code (`weights_only=True`: only
    tensors and plain containers); `CheckpointError` when it cannot be read or carries anything
    else, such as a pickled callable planted in it."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle garbage, permissions: all the same to a user
        if isinstance(exc, pickle.UnpicklingError) and "GLOBAL" in str(exc):
            raise CheckpointError(  # torch names the global it refused to import
                f"checkpoint {str(path)!r} refused: it holds objects other than tensors and "
                "plain values, and loading them could run code") from None
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: "
                              f"{' '.join(str(exc).split())[:200]}") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a Lightning checkpoint")
    return ckpt


def write_json_atomic(path: Path, data: Any) -> None:
    """Write `data` as indented JSON to `path` via a temporary file and a rename."""
    tmp = path.with_name(path.name + TEMPORARY_SUFFIX)
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=float) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------ exported weights
def export_weights(network: torch.nn.Module, path: Path, metadata: dict[str, str]) -> Path:
    """Save `network`'s weights as safetensors (atomically), with string `metadata`."""
    from safetensors.torch import save_model

    tmp = path.with_name(path.name + TEMPORARY_SUFFIX)
    save_model(network, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
    os.replace(tmp, path)
    return path


def load_weights(network: torch.nn.Module, path: Path) -> dict[str, str]:
    """Load safetensors weights into `network` (strict); return the file's metadata.
    `CheckpointError` when the file is missing, corrupt, or does not fit the network."""
    from safetensors import safe_open
    from safetensors.torch import load_model

    if not path.is_file():
        raise CheckpointError(f"{str(path)!r} does not exist (the run has not reached its first "
                              "checkpoint, or the file was removed)")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        load_model(network, str(path), strict=True)
    except Exception as exc:
        raise CheckpointError(f"weights {str(path)!r} cannot be loaded: "
                              f"{' '.join(str(exc).split())[:200]}") from None
    return metadata
