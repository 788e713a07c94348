"""ControlNets in the application: settings, hint makers, hint files, and the control's files.

The engine's `diffusekit.core.control` builds a ControlNet on any network (a trainable copy,
a hint encoder and zero-initialised projections; Zhang, Rao & Agrawala 2023). This module adds
what a run needs around it:

- `ControlSettings`: the `control` section of a run's config (`control.of`: the base model;
  `blocks`; `hint`: the name of the hint maker; `width`; `scale`);
- hint makers: functions `maker(batch) -> hint [B, ...]` that make a training example's hint
  (a sketch from a digit, the sign of a point, ...), chosen by name from the built-ins
  (`HINT_MAKERS`) and the domain's own (`Domain.control_hints()`);
- `HintedProcess`: the base's process with the hint put into each batch's `cond`, so that the
  toolkit's trainer, its validation samples, `toolkit sample` and `toolkit evaluate` run a
  controlled network unchanged;
- hint files (`--hint FILE`): safetensors (one tensor) or a PNG / JPEG image ([C, H, W] in
  [0, 1]); nothing is unpickled;
- the control's folder, in a run or an exported model:

      control/
          control.safetensors   the hint encoder, the projections and the copy's trained part
          control.json          the spec (blocks, channels, hint shape) and the hint maker's name
          base.json             {"id": the base model as given, "sha256": of its weights file}
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from diffusekit.core.app.adapters import BASE_FILE
from diffusekit.core.app.config import name_list, typed
from diffusekit.core.control import ControlBinding, Controlled, ControlNet, ControlSpec
from diffusekit.core.errors import CheckpointError, ConfigError, DataError
from diffusekit.core.registry import Registry

CONTROL_FOLDER = "control"
CONTROL_WEIGHTS = "control.safetensors"
CONTROL_SPEC = "control.json"
HINT_KEY = "hint"  # the network keyword a run's control reads its hint from
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

HintMaker = Callable[[dict], Tensor]

# built-in hint makers, for every domain: batch -> hint [B, ...]
HINT_MAKERS: Registry[HintMaker] = Registry("hint maker")
# the clean example itself: a reference ("tile") control that learns to follow a given example
HINT_MAKERS.register("x0", lambda batch: batch["x0"])


@dataclass(frozen=True)
class ControlSettings:
    """The `control` section of a run's config: `of` the base model (path or Hub id), `blocks`
    (module-name patterns; None: the domain's `control_blocks`, else the engine's rule),
    `hint` the hint maker's name, `width` of the hint encoder, `scale` at sampling."""

    of: str
    blocks: tuple[str, ...] | None
    hint: str
    width: int
    scale: float

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "ControlSettings | None":
        """The settings, or None when `control.of` is null; a `ConfigError` naming the key of a
        bad value."""
        if not is_control_run(cfg):
            return None
        section = cfg.control
        blocks = name_list(cfg, "control.blocks", "the domain's default blocks")
        if section.get("hint") is None:
            raise ConfigError("a control run needs control.hint: the name of a hint maker")
        width = typed(cfg, "control.width", int)
        if width <= 0:
            raise ConfigError(f"control.width must be a whole number > 0, got {width}")
        return cls(str(section.of), blocks, str(section.hint), width,
                   typed(cfg, "control.scale", float))


def is_control_run(cfg: DictConfig) -> bool:
    """Whether a run's (or model's) config trains / holds a control (`control.of` set)."""
    section = cfg.get("control")
    return bool(section is not None and section.get("of") not in (None, ""))


def hint_maker(domain: Any, name: str) -> HintMaker:
    """The hint maker called `name`: the domain's own (`Domain.control_hints()`) or a built-in;
    `UnknownNameError` listing both otherwise."""
    known: Registry[HintMaker] = Registry("hint maker")
    for builtin in HINT_MAKERS.names():
        known.register(builtin, HINT_MAKERS.get(builtin))
    hints = getattr(domain, "control_hints", None)
    for own, maker in (hints() if callable(hints) else {}).items():
        known.register(own, maker, replace=True)
    return known.get(name)


# ----------------------------------------------------------------------- hints in batches
class MadeHints:
    """Hints made from each batch by a hint maker (training, and sampling without --hint)."""

    def __init__(self, maker: HintMaker) -> None:
        self.maker = maker

    def __call__(self, batch: dict) -> Tensor:
        return self.maker(batch)


class FileHints:
    """Hints read from a file, K of them [K, ...]: the i-th generated example gets hint i mod K
    (one hint steers every sample). Successive batches continue where the last one stopped."""

    def __init__(self, hints: Tensor) -> None:
        self.hints, self.position = hints, 0

    def __call__(self, batch: dict) -> Tensor:
        n = int(batch["x0"].shape[0])
        index = (torch.arange(n) + self.position) % self.hints.shape[0]
        self.position += n
        return self.hints[index]


class HintedProcess:
    """The base's process with each batch's hints put into its `cond`: `sources` maps each
    control's keyword to a function `source(batch) -> hint [B, ...]` (`MadeHints`,
    `FileHints`). `training_loss`, `generate` and `inpaint` as the process's; every other
    attribute is the process's own."""

    def __init__(self, process: Any, sources: dict[str, Callable[[dict], Tensor]]) -> None:
        self.process, self.sources = process, dict(sources)

    def with_source(self, key: str, source: Callable[[dict], Tensor]) -> "HintedProcess":
        """The same process with the hints of `key` taken from `source`."""
        return HintedProcess(self.process, {**self.sources, key: source})

    def hinted(self, batch: dict) -> dict:
        """The batch with each control's hint in its `cond` (a copy; hints the batch already
        holds are kept, so a batch hinted once keeps its hints through `generate`)."""
        device = batch["x0"].device
        cond = dict(batch.get("cond") or {})
        for key, source in self.sources.items():
            if key not in cond:
                cond[key] = source(batch).to(device)
        return {**batch, "cond": cond}

    def training_loss(self, network: Any, batch: dict, generator: Any = None) -> Tensor:
        return self.process.training_loss(network, self.hinted(batch), generator=generator)

    def generate(self, network: Any, batch: dict, **options: Any) -> Any:
        return self.process.generate(network, self.hinted(batch), **options)

    def inpaint(self, network: Any, batch: dict, known: Any, **options: Any) -> Any:
        """The process's `inpaint` on the hinted batch: repair steered by the controls (a hint
        made from the batch is made from the damaged input, which is all it holds)."""
        inner = getattr(self.process, "inpaint", None)
        if inner is None:
            raise ConfigError(f"the base's process ({type(self.process).__name__}) cannot "
                              "inpaint (it has no inpaint method)")
        return inner(network, self.hinted(batch), known, **options)

    def __getattr__(self, name: str) -> Any:
        if name in ("process", "sources"):  # not set yet (copying, unpickling)
            raise AttributeError(name)
        return getattr(self.process, name)


def read_hint_file(path: str | Path) -> Tensor:
    """The hints in a file: a safetensors file with one tensor (or one called "hint"), or an
    image (PNG / JPEG) as [C, H, W] in [0, 1] (C = 1 for grey, 3 for colour). `DataError` (one
    line) when it is missing, unreadable or of another kind."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataError(f"hint file {str(path)!r} does not exist")
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            if len(tensors) != 1 and HINT_KEY not in tensors:
                raise ValueError(f"it holds {len(tensors)} tensors and none called 'hint'")
            return (tensors[HINT_KEY] if HINT_KEY in tensors else next(iter(tensors.values()))
                    ).float()
        if suffix in IMAGE_SUFFIXES:
            import numpy as np
            from PIL import Image

            with Image.open(path) as image:
                image = image.convert("L" if image.mode in ("1", "L", "I", "F") else "RGB")
                array = np.asarray(image, dtype=np.float32) / 255.0
            array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
            return torch.from_numpy(np.ascontiguousarray(array))
    except Exception as exc:  # truncated or corrupt file, wrong contents
        raise DataError(f"hint file {str(path)!r} cannot be read: "
                        f"{' '.join(str(exc).split())[:160]}") from None
    raise DataError(f"hint file {str(path)!r}: give a .safetensors file or a "
                    f"{' / '.join(IMAGE_SUFFIXES)} image")


def file_hints(path: str | Path, spec: ControlSpec) -> FileHints:
    """The hints of a file, checked against the control's hint shape: one hint
    [*hint_shape] or K hints [K, *hint_shape]; `DataError` (one line) otherwise."""
    hints = read_hint_file(path)
    shape, found = tuple(spec.hint_shape), list(hints.shape)
    if hints.dim() == len(shape):
        hints = hints[None]
    if tuple(hints.shape[1:]) != shape or hints.shape[0] == 0:
        raise DataError(f"hint file {str(path)!r} holds shape {found}; this control "
                        f"takes hints of shape {list(shape)} (channels and size as trained), "
                        "one or several")
    if not torch.isfinite(hints).all():
        raise DataError(f"hint file {str(path)!r} holds NaN or infinite values")
    return FileHints(hints)


# --------------------------------------------------------------------- the control's files
def save_control(network: Controlled, folder: Path, base: dict[str, str], hint: str) -> list[Path]:
    """Write the (first) control of `network` into `folder`: control.safetensors (its trainable
    state), control.json (spec, hint maker) and base.json (the base's id and SHA-256)."""
    from safetensors.torch import save_file

    control = network.controls[0]
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / CONTROL_WEIGHTS
    tmp = weights.with_name(weights.name + ".tmp")
    save_file({k: v.detach().to("cpu").contiguous() for k, v in
               control.trainable_state().items()}, str(tmp), metadata={"format": "pt"})
    tmp.replace(weights)
    (folder / CONTROL_SPEC).write_text(json.dumps(
        {"spec": control.spec.to_dict(), "hint": hint, "key": HINT_KEY}, indent=2) + "\n")
    (folder / BASE_FILE).write_text(json.dumps({"id": base["id"], "sha256": base["sha256"]},
                                               indent=2) + "\n")
    return [weights, folder / CONTROL_SPEC, folder / BASE_FILE]


def read_control_spec(folder: Path) -> tuple[ControlSpec, str]:
    """(spec, hint maker name) of a control folder; `CheckpointError` when unreadable."""
    path = Path(folder) / CONTROL_SPEC
    try:
        data = json.loads(path.read_text())
        return ControlSpec.from_dict(data["spec"]), str(data["hint"])
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"control folder {str(folder)!r} has no readable {CONTROL_SPEC}: "
                              f"{' '.join(str(exc).split())[:160]}") from None


def load_control(folder: Path, base_network: torch.nn.Module) -> ControlNet:
    """The control saved in `folder`, on `base_network` (its copy starts from the base's weights,
    its trained part from the file). `CheckpointError` when a file is missing, unreadable or
    does not fit the base."""
    from safetensors.torch import load_file

    spec, _ = read_control_spec(folder)
    try:
        state = load_file(str(Path(folder) / CONTROL_WEIGHTS))
    except Exception as exc:  # missing, truncated
        raise CheckpointError(f"control in {str(folder)!r} cannot be read: "
                              f"{' '.join(str(exc).split())[:200]}") from None
    try:
        control = ControlNet(base_network, spec)
        control.load_trainable(state)
    except (ValueError, AttributeError, ConfigError, RuntimeError) as exc:
        raise CheckpointError(f"control in {str(folder)!r} does not fit the base network: "
                              f"{' '.join(str(exc).split())[:200]}") from None
    return control.eval().requires_grad_(False)


def controlled(base_network: torch.nn.Module, control: ControlNet, scale: float) -> Controlled:
    """The base steered by `control` at `scale`, its hint read from the keyword `hint`."""
    try:
        return Controlled(base_network, [ControlBinding(control, float(scale), HINT_KEY)])
    except ConfigError as exc:
        raise CheckpointError(f"the control does not fit the base network: {exc}") from None


def build_control(base_network: torch.nn.Module, settings: ControlSettings, domain: Any,
                  example: dict) -> tuple[Controlled, HintMaker]:
    """A new control of `base_network` (frozen) for a run: its blocks (`settings.blocks`, else
    the domain's `control_blocks`, else the engine's default rule) probed on `example` (a
    training batch) with the hint that `settings.hint` makes from it."""
    from diffusekit.core.control import default_blocks, probe_spec, resolve_blocks

    maker = hint_maker(domain, settings.hint)
    hint = maker(example)
    if not isinstance(hint, Tensor) or hint.dim() < 2:
        raise ConfigError(f"hint maker {settings.hint!r} must return a tensor [B, ...], got "
                          f"{type(hint).__name__} {list(getattr(hint, 'shape', []))}")
    patterns = settings.blocks or getattr(domain, "control_blocks", None)
    blocks = (resolve_blocks(base_network, tuple(patterns)) if patterns
              else default_blocks(base_network))
    x0 = example["x0"]
    c_noise = torch.full((x0.shape[0],), 0.5, dtype=x0.dtype)  # any level: shapes only
    spec = probe_spec(base_network, blocks, tuple(hint.shape[1:]),
                      (x0, c_noise, example.get("cond") or {}), width=settings.width)
    return controlled(base_network, ControlNet(base_network, spec), 1.0), maker


def use_hint_file(model: Any, path: str | Path) -> Any:
    """Make a loaded control model (`load_model` of a control run) read its hints from a file
    (`read_hint_file`) instead of making them from the data's examples; `DataError` when they
    do not fit the control, `ConfigError` when the model has no control. Returns `model`."""
    if not isinstance(model.network, Controlled) or not isinstance(model.process, HintedProcess):
        raise ConfigError("--hint steers a control: give a control run or model (one trained "
                          "with toolkit train --control-of)")
    spec = model.network.controls[0].spec
    model.process = model.process.with_source(model.network.keys[0], file_hints(path, spec))
    return model


def add_controls(model: Any, folders: dict[Path, float]) -> Any:
    """Steer `model` (in place) by further controls as well: {control run or exported control:
    scale}. Each must have been trained on the same base weights (SHA-256) as `model`'s; its
    hints are made by its own hint maker from the data's examples, and its residuals add to the
    others'. `CheckpointError` (one line) for a control of another base."""
    if not folders:
        return model
    from diffusekit.core.app import adapters
    from diffusekit.core.app.adapters import read_base

    from diffusekit.core.app.training.inference import model_base_sha256

    own = model_base_sha256(model)
    network = model.network
    base_network = network.base if isinstance(network, Controlled) else network
    bindings = ([ControlBinding(c, s, k) for c, s, k in
                 zip(network.controls, network.scales, network.keys)]
                if isinstance(network, Controlled) else [])
    process = model.process if isinstance(model.process, HintedProcess) else \
        HintedProcess(model.process, {})
    if adapters.lora_layers(network):
        raise ConfigError("--control does not go with an adapter run; give the control run "
                          "with --run and the adapter with --adapter RUN=SCALE")
    for source, scale in folders.items():
        folder = Path(source) / CONTROL_FOLDER
        sha = read_base(folder)["sha256"]
        if sha != own:
            raise CheckpointError(f"the control in {str(folder.parent)!r} was trained on other "
                                  f"base weights (SHA-256 {sha[:12]}...) than "
                                  f"{str(model.path)!r} ({own[:12]}...)")
        _, hint = read_control_spec(folder)
        key = f"{HINT_KEY}_{len(bindings)}"
        bindings.append(ControlBinding(load_control(folder, base_network), float(scale), key))
        process = process.with_source(key, MadeHints(hint_maker(model.domain, hint)))
    try:
        model.network = Controlled(base_network, bindings).eval()
    except ConfigError as exc:
        raise CheckpointError(f"a control does not fit the base network: {exc}") from None
    model.process = process
    return model
