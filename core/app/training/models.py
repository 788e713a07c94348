"""A trained model is a folder: what `toolkit export` writes and `load_model` reads.

    <model>/
        config.yaml          the resolved config it was trained with (names its domain)
        model.safetensors    the network's EMA weights (float32, or float16 with --half)
        README.md            the model card: domain, data, training length, measured metrics

A run folder has the same two files, so a run is loadable as a model too. A model is named by a
path, or by a Hugging Face Hub id `user/name`, which `huggingface_hub` resolves (its cache, or the
Hub when one is reachable: the ecosystem's way to share models).

    model = load_model("runs/audio/20261204-101500")        # or "someone/audio-denoiser"
    x0 = model.process.generate(model.network, batch, sampler="ddim", steps=8)

A distillation run (`distill.teacher`, `toolkit distill`) loads as its student: the network
(with its w embedding when it takes the guidance scale) and a `distill.StudentProcess` that
samples it. An adapter run (`adapter.kind=lora`) holds no model.safetensors but an `adapter/` folder;
loading it loads its base (checked by SHA-256) and adds the adapter (see `adapters`). A control
run (`control.of`, `toolkit train --control-of`) holds a `control/` folder instead: loading it
loads its base (checked by SHA-256) steered by the control (see `controls`).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from diffusekit.core.app import adapters, controls, distill
from diffusekit.core.app import config as configuration
from diffusekit.core.app.training.runs import RunDir, export_weights, load_weights
from diffusekit.core.distillation import GuidanceInput
from diffusekit.core.errors import CheckpointError, ConfigError, RunDirError

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
ADAPTER_FOLDER = "adapter"
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass
class Model:
    """A loaded model: its folder, domain, config, network (eval mode, frozen) and process."""

    path: Path
    domain: Any
    cfg: DictConfig
    network: torch.nn.Module
    process: Any

    @property
    def name(self) -> str:
        return self.path.name


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve(path_or_id: str | Path) -> Path:
    """The folder a model name stands for: an existing folder, or a Hub id `user/name` looked up
    with `huggingface_hub.snapshot_download` (which honours HF_HUB_OFFLINE and HF_HUB_CACHE).
    `RunDirError` (one line) when it is neither."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_id)
    if not HUB_ID.fullmatch(text) or text.startswith(".") or ".." in text:
        raise RunDirError(f"model {text!r} is not a folder, nor a Hugging Face id user/name")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=text, allow_patterns=["*.yaml", "*.json", "*.md",
                                                                    "*.safetensors"]))
    except Exception as exc:  # offline and not cached, unknown repo, no network
        raise RunDirError(f"model {text!r} is not a folder here and could not be fetched from "
                          f"the Hugging Face Hub or its cache: "
                          f"{' '.join(str(exc).split())[:160]}") from None


def domain_name(folder: Path) -> str:
    """The domain a model (or run) folder names in its config.yaml."""
    run = RunDir(Path(folder))
    if not run.config_file.is_file():
        raise RunDirError(f"{str(folder)!r} is not a model folder (it has no {CONFIG_FILE})")
    name = run.load_config().get("domain")
    if not name or not isinstance(name, str):
        raise RunDirError(f"model {str(folder)!r}: {CONFIG_FILE} names no domain")
    return name


def model_domain(folder: Path, domain: Any | None = None) -> tuple[Any, DictConfig]:
    """The domain a model folder names (`domain` when given: a model of another domain is a
    `ConfigError`), and the folder's config checked against that domain's defaults."""
    name = domain_name(folder)
    if domain is not None and name != domain.name:
        raise ConfigError(f"model {str(folder)!r} is of domain {name!r}, not {domain.name!r}")
    domain = domain if domain is not None else installed_domain(name)
    return domain, RunDir(Path(folder)).load_config(domain)


def installed_domain(name: str) -> Any:
    """The installed domain called `name` (plugins included); `UnknownNameError` otherwise."""
    from diffusekit import plugins

    domain = plugins.get_domain(name)
    return domain() if isinstance(domain, type) else domain


def load_model(path_or_id: str | Path, *, adapter_scale: float | None = None,
               domain: Any | None = None, base: str | Path | None = None,
               control_scale: float | None = None) -> Model:
    """The model a folder (or Hub id) holds; an adapter run brings its base plus the adapter,
    scaled by `adapter_scale` (default: the run's `sample.adapter_scale`). `base` loads an
    adapter's base from another folder or Hub id than the one its base.json names (a shared
    adapter whose base lies elsewhere on this machine); its SHA-256 is checked all the same.
    A control run brings its base steered by the control at `control_scale` (default: the
    run's `control.scale`; 0: the base exactly), its process putting the hint that the run's
    hint maker makes from each batch into `cond` (`controls.use_hint_file` reads them from a
    file instead). With `domain`, a model of another domain is a `ConfigError`."""
    folder = resolve(path_or_id)
    dom, cfg = model_domain(folder, domain)
    if controls.is_control_run(cfg):
        return _control_model(folder, dom, cfg, base, control_scale)
    if adapters.is_adapter_run(cfg):
        base = base_of(folder / ADAPTER_FOLDER, dom, base)
        scale = float(cfg.sample.get("adapter_scale", 1.0) if adapter_scale is None
                      else adapter_scale)
        adapters.load_adapter(base.network, folder / ADAPTER_FOLDER, "default", scale)
        network = distill.student_network(dom, cfg, base.network, folder / ADAPTER_FOLDER)
        return Model(folder, dom, cfg, network.eval(), distill.run_process(dom, cfg, base.process))
    network = distill.student_network(dom, cfg, dom.build_network(cfg))
    load_weights(network, folder / WEIGHTS_FILE)
    return Model(folder, dom, cfg, network.float().eval().requires_grad_(False),
                 distill.run_process(dom, cfg, dom.process(cfg)))


def _control_model(folder: Path, domain: Any, cfg: DictConfig, where: str | Path | None,
                   scale: float | None) -> Model:
    """A control run or exported control: its base (checked by SHA-256) steered by it."""
    base = base_of(folder / controls.CONTROL_FOLDER, domain, where, what="control")
    control = controls.load_control(folder / controls.CONTROL_FOLDER, base.network)
    _, hint = controls.read_control_spec(folder / controls.CONTROL_FOLDER)
    scale = float(cfg.control.get("scale", 1.0) if scale is None else scale)
    network = controls.controlled(base.network, control, scale).eval()
    process = controls.HintedProcess(base.process, {
        controls.HINT_KEY: controls.MadeHints(controls.hint_maker(domain, hint))})
    return Model(folder, domain, cfg, network, process)


def base_of(adapter_folder: Path, domain: Any, where: str | Path | None = None, *,
            what: str = "adapter") -> Model:
    """The base model an adapter (or a control: `what`) was trained on, found by the id in its
    base.json (or at `where`) and checked against the SHA-256 recorded there
    (`CheckpointError` when it differs)."""
    base = adapters.read_base(adapter_folder)
    try:
        model = load_model(where if where is not None else base["id"], adapter_scale=None,
                           domain=domain)
    except RunDirError as exc:
        hint = "" if where is not None else " (give its folder or Hub id with --base)"
        raise CheckpointError(f"the base model of the {what} in {str(adapter_folder)!r} is "
                              f"missing{hint}: {exc}") from None
    if not (model.path / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"the base {str(model.path)!r} of the {what} in "
                              f"{str(adapter_folder)!r} holds no {WEIGHTS_FILE}")
    found = sha256_of(model.path / WEIGHTS_FILE)
    if found != base["sha256"]:
        raise CheckpointError(f"the base model {base['id']!r} has changed since the {what} in "
                              f"{str(adapter_folder)!r} was trained, or is another model "
                              f"(SHA-256 {found[:12]}..., expected {base['sha256'][:12]}...)")
    return model


def export_model(run: RunDir, to: Path, *, half: bool = False,
                 domain: Any | None = None) -> list[Path]:
    """Write the run's model as a folder `to` (config.yaml, model.safetensors with the EMA
    weights, README.md model card); `half` stores float16. An adapter run exports its adapter
    folder instead of weights (its base is named by id and SHA-256 inside). `to` must not exist
    or must be empty: nothing of the user's is overwritten."""
    domain, cfg = model_domain(run.path, domain)
    is_adapter = adapters.is_adapter_run(cfg)
    folder = (ADAPTER_FOLDER if is_adapter else
              controls.CONTROL_FOLDER if controls.is_control_run(cfg) else None)
    source = run.path / folder if folder else run.weights
    if not source.exists():
        raise CheckpointError(f"run {str(run.path)!r} has no {source.name} yet (it has not "
                              "reached its first checkpoint)")
    if folder:  # an adapter or a control: its folder, the base named inside
        import shutil

        to = _new_folder(to)
        shutil.copytree(source, to / folder)
        return _finish_folder(to, domain, cfg, run.read_metrics(), [to / folder])
    network = distill.student_network(domain, cfg, domain.build_network(cfg))
    load_weights(network, run.weights)
    return write_model(to, domain, cfg, network, run.read_metrics(), half=half)


def write_model(to: Path, domain: Any, cfg: DictConfig, network: torch.nn.Module,
                metrics: dict, *, half: bool = False) -> list[Path]:
    """Write `network` as a model folder `to` (new or empty) with `cfg` and a model card."""
    from safetensors.torch import save_model

    to = _new_folder(to)
    if half:
        network = network.half()
    tmp = to / (WEIGHTS_FILE + ".tmp")
    save_model(network, str(tmp), metadata={"domain": domain.name,
                                             "step": str(metrics.get("step", "")),
                                             "dtype": "float16" if half else "float32"})
    os.replace(tmp, to / WEIGHTS_FILE)
    return _finish_folder(to, domain, cfg, metrics, [to / WEIGHTS_FILE], half=half)


def _new_folder(to: Path) -> Path:
    to = Path(to)
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise RunDirError(f"{str(to)!r} exists and is not empty; choose a new folder")
    to.mkdir(parents=True, exist_ok=True)
    return to


def _finish_folder(to: Path, domain: Any, cfg: DictConfig, metrics: dict, written: list[Path],
                   half: bool = False) -> list[Path]:
    written = [configuration.save(cfg, to / CONFIG_FILE), *written]
    is_adapter = (to / ADAPTER_FOLDER).is_dir() or (to / controls.CONTROL_FOLDER).is_dir()
    (to / CARD_FILE).write_text(model_card(domain, cfg, metrics, to, half, is_adapter))
    return [*written, to / CARD_FILE]


def model_card(domain: Any, cfg: DictConfig, metrics: dict, folder: Path, half: bool,
               is_adapter: bool) -> str:
    """The README.md of a model folder: what it is, what it was trained on, how long, and what
    it measured (from the run's metrics.json)."""
    data = cfg.get("data") or {}
    source = data.get("source", "the domain's default data") if hasattr(data, "get") else data
    lines = [f"# {domain.name} model", "", f"A diffusekit model of the domain `{domain.name}`: "
             f"{domain.description}.", "",
             "| | |", "|---|---|", f"| domain | `{domain.name}` |", f"| data | `{source}` |",
             f"| training | {metrics.get('step', '?')} steps of {metrics.get('max_steps', '?')} "
             f"in {metrics.get('train_seconds', '?')} s |",
             f"| final losses | train {metrics.get('train_loss')}, val {metrics.get('val_loss')} |"]
    if cfg.get("init_from"):
        lines.append(f"| started from | `{cfg.init_from}` |")
    if is_adapter and controls.is_control_run(cfg):
        lines.append(f"| control | a ControlNet with the hint `{cfg.control.hint}`; the base is "
                     f"named in `{controls.CONTROL_FOLDER}/base.json` |")
    elif is_adapter:
        lines.append(f"| adapter | LoRA rank {cfg.adapter.rank}, alpha {cfg.adapter.alpha}; "
                     f"the base is named in `{ADAPTER_FOLDER}/base.json` |")
    else:
        lines.append(f"| weights | `{WEIGHTS_FILE}`, EMA, {'float16' if half else 'float32'}, "
                     f"SHA-256 `{sha256_of(folder / WEIGHTS_FILE)}` |")
    evaluation = metrics.get("evaluation")
    if evaluation:
        lines += ["", f"Measured by `toolkit evaluate` ({evaluation.get('n')} test examples, "
                  f"{evaluation.get('sampler')}, {evaluation.get('steps')} steps):", "",
                  "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.6g} |" for k, v in sorted(evaluation.get("metrics", {}).items())]
    lines += ["", "Load it with `diffusekit.load_model(PATH_OR_ID)` or "
              "`toolkit sample --model PATH_OR_ID`.", "",
              f"Exported {time.strftime('%Y-%m-%d')}.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ starting from a model
def start_from_model(domain: Any, cfg: DictConfig, network: torch.nn.Module, *,
                     load_base: bool = True) -> dict[str, str] | None:
    """Prepare a new run's `network` (in place) from `cfg.init_from` and `cfg.adapter`.

    - `init_from` set: its weights are loaded into `network` (with `load_base`; a resumed run
      gets them from its checkpoint), after checking the model is of this domain and that the
      run's network has exactly its tensors (same config); full fine-tuning when
      `adapter.kind` is null.
    - `adapter.kind: lora`: the network is wrapped with a LoRA adapter on the domain's target
      modules (or `adapter.targets`), and everything but the adapter is frozen.
    Returns the base {"id", "sha256"} (None without `init_from`)."""
    settings = adapters.AdapterSettings.from_config(cfg)
    source = cfg.get("init_from")
    if source is None:
        if settings is not None:
            raise ConfigError("adapter.kind=lora trains an adapter on a base model: give the base "
                              "with --init-from MODEL (init_from=...)")
        return None
    folder = resolve(str(source))
    if (folder / ADAPTER_FOLDER).is_dir() or not (folder / WEIGHTS_FILE).is_file():
        raise ConfigError(f"init_from {str(source)!r} holds no {WEIGHTS_FILE} (an adapter run? "
                          "merge it first with toolkit merge)")
    # a local folder is recorded by its absolute path (the adapter still finds it from another
    # working folder), a Hub id as it is
    local = Path(str(source)).expanduser().is_dir()
    base = {"id": str(folder.resolve()) if local else str(source),
            "sha256": sha256_of(folder / WEIGHTS_FILE)}
    if load_base:
        model = load_model(folder, domain=domain)
        try:
            network.load_state_dict(model.network.state_dict(), strict=True)
        except RuntimeError as exc:
            first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()),
                         str(exc))
            raise ConfigError(f"the network of this run does not match model {str(source)!r}'s "
                              f"(train with its network settings): {first[:200]}") from None
    if settings is not None:
        patterns = settings.targets or domain.adapter_targets
        targets = (adapters.resolve_targets(network, tuple(patterns)) if patterns
                   else adapters.adaptable_modules(network))
        adapters.add_lora(network, settings, targets)
    return base


def start_control(domain: Any, cfg: DictConfig, network: torch.nn.Module, process: Any,
                  datamodule: Any, base: dict[str, str] | None = None
                  ) -> tuple[torch.nn.Module, Any, dict[str, str] | None]:
    """(network, process, base) of a run: as given without `control.of`; for a control run
    the base model `control.of` (its own network and process, frozen) steered by a new control
    (see `controls.build_control`, probed on the first training batch), its process putting the
    hint into each batch, and the base's {"id", "sha256"}. A resumed run gets the control's
    weights from its checkpoint."""
    settings = controls.ControlSettings.from_config(cfg)
    if settings is None:
        return network, process, base
    if cfg.get("init_from") is not None or adapters.is_adapter_run(cfg):
        raise ConfigError("control.of (--control-of) trains a control on a frozen base; it does "
                          "not go with init_from or adapter.kind")
    folder = resolve(settings.of)
    if not (folder / WEIGHTS_FILE).is_file():
        raise ConfigError(f"control.of {settings.of!r} holds no {WEIGHTS_FILE} (an adapter or "
                          "control run? merge or export a plain model first)")
    base_model = load_model(folder, domain=domain)
    local = Path(settings.of).expanduser().is_dir()
    base = {"id": str(folder.resolve()) if local else settings.of,
            "sha256": sha256_of(folder / WEIGHTS_FILE)}
    datamodule.setup("fit")
    example = next(iter(datamodule.train_dataloader()), None)
    if example is None:
        raise ConfigError("the domain's training data yields no batch to build the control on")
    net, maker = controls.build_control(base_model.network, settings, domain, example)
    return net, controls.HintedProcess(base_model.process,
                                       {controls.HINT_KEY: controls.MadeHints(maker)}), base


def save_run_model(network: torch.nn.Module, run: RunDir, domain_name: str, step: int,
                   base: dict[str, str] | None, adapter: bool) -> None:
    """Write a run's current model: model.safetensors (the whole network), or for an adapter
    run only the adapter, in adapter/ with base.json, for a control run only the control, in
    control/ with base.json."""
    if isinstance(network, controls.Controlled):
        hint = str(run.load_config().control.hint)
        controls.save_control(network, run.path / controls.CONTROL_FOLDER, base, hint)
    elif adapter and isinstance(network, GuidanceInput):  # a LoRA student that takes w
        adapters.save_adapter(network.net, run.path / ADAPTER_FOLDER, base["id"], base["sha256"])
        distill.save_guidance(network, run.path / ADAPTER_FOLDER)
    elif adapter:
        adapters.save_adapter(network, run.path / ADAPTER_FOLDER, base["id"], base["sha256"])
    else:
        export_weights(network, run.weights, {"domain": domain_name, "step": str(step)})
