"""Sampling and evaluation from a finished (or interrupted) run folder.

    network, process, cfg = load_run(domain, run)            # EMA weights from model.safetensors
    paths = sample_run(domain, run, sampler="dpmpp_2m", steps=20, n=16)
    metrics = evaluate_run(domain, run)                      # also merged into metrics.json
    paths = sample_model(load_model("user/name"), n=16)      # any model folder or Hub id
    paths = sample_model(model, overrides=["sample.guidance=2"])  # config values for this call

An adapter run samples its base with the adapter scaled by `adapter_scale`; `adapters` adds
further adapters trained on the same base, each with its scale.

Both generate for examples of the domain's data (their shapes, conditioning and masks): the
predict split when the data module has one (Lightning's `predict_dataloader`: what to generate
for, e.g. molecule sizes drawn from the training set), else the test split, else the validation
split. Progress is a tqdm bar over sampler steps. Generation runs where `sample.device` says
(auto: a GPU when torch sees one); the domain's writer and metrics get the samples on the CPU.
Nothing here needs Lightning's Trainer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from diffusekit.core.app.controls import HintedProcess
from diffusekit.core.errors import CheckpointError, ConfigError, DataError
from diffusekit.core.layers import parameter_device
from diffusekit.core.app.training.module import batch_size, concat_batches, slice_batch
from diffusekit.core.app.training.models import (ADAPTER_FOLDER, WEIGHTS_FILE, Model, load_model,
                                         sha256_of)
from diffusekit.core.app.training.runs import RunDir, check_plain_name, child_path


def load_run(domain: Any, run: RunDir) -> tuple[torch.nn.Module, Any, DictConfig]:
    """The run's network with its EMA weights (eval mode), its process and its config (an
    adapter run: its base with the adapter; see `run_model`)."""
    model = run_model(domain, run)
    return model.network, model.process, model.cfg


def run_model(domain: Any, run: RunDir, *, adapter_scale: float | None = None,
              adapters: dict[Path, float] | None = None, base: str | Path | None = None,
              control_scale: float | None = None) -> Model:
    """The run as a `Model`: its network with the EMA weights (eval mode; an adapter run brings
    its base plus the adapter at `adapter_scale`, a control run its base steered by the control
    at `control_scale`), its process and its config; `adapters` adds further adapter runs /
    folders with their scales (see `add_adapters`); `base` loads the adapter's or control's
    base from there instead of its recorded id (see `load_model`)."""
    model = load_model(run.path, domain=domain, adapter_scale=adapter_scale, base=base,
                       control_scale=control_scale)
    if model.cfg.sample.sampler is not None:  # it names the samples' folder: no path from input
        check_plain_name(model.cfg.sample.sampler, "sample.sampler")
    return add_adapters(model, adapters or {})


def example_batches(datamodule: Any, n: int,
                    splits: tuple[str, ...] = ("predict", "test", "validate")) -> Iterator[dict]:
    """Batches of the first split the data module provides, cut so that `n` examples come out
    in all. `DataError` when it yields nothing."""
    for split in splits:
        loader_name = {"predict": "predict_dataloader", "test": "test_dataloader",
                       "validate": "val_dataloader"}[split]
        try:
            datamodule.setup(split)
            loader = getattr(datamodule, loader_name)()
        except (NotImplementedError, AttributeError):
            continue
        except Exception as exc:
            if type(exc).__name__ == "MisconfigurationException":  # the hook is not implemented
                continue
            raise
        left = n
        for batch in loader:
            if left <= 0:
                return
            batch = slice_batch(batch, left)
            left -= batch_size(batch)
            yield batch
        if left < n:
            return
    raise DataError("the domain's data module yields no test or validation examples")


def sampling_device(cfg: DictConfig) -> torch.device:
    """Where generation runs: `sample.device` (auto: the first GPU when torch sees one, else
    the CPU; or a torch device name such as cpu, cuda, cuda:1). A `ConfigError` line for a name
    torch does not know or a GPU it does not see."""
    name = str(OmegaConf.select(cfg, "sample.device", default=None) or "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"sample.device={name!r} is not a device (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"sample.device={name}: torch sees no GPU here (use auto or cpu)")
    return device


def _generate(network: torch.nn.Module, process: Any, batch: dict, *, sampler: str | None,
              steps: int | None, generator: torch.Generator, bar: tqdm) -> Any:
    """Samples for `batch`, generated on the device of `generator` (where `network` is), then
    moved to the CPU with the batch's tensors, for the domain's writer and metrics."""
    device = generator.device
    with torch.no_grad():
        samples = process.generate(network, move_data_to_device(batch, device), sampler=sampler,
                                   steps=steps, generator=generator,
                                   callback=lambda info: bar.update(1))
    return move_data_to_device(samples, "cpu") if device.type != "cpu" else samples


@contextmanager
def network_on(network: Any, device: torch.device) -> Iterator[torch.device]:
    """`network` moved to `device` for the block, and back to where it was after it (also when
    the block raises); yields the device. A network that is no `torch.nn.Module` (a plain
    denoiser function) stays where it is."""
    if not isinstance(network, torch.nn.Module):
        yield device
        return
    home = parameter_device(network)
    network.to(device)
    try:
        yield device
    finally:
        network.to(home)


@contextmanager
def _on_sampling_device(cfg: DictConfig, network: torch.nn.Module,
                        seed: int) -> Iterator[torch.Generator]:
    """`network` on the sampling device for the block (`network_on`); yields a generator seeded
    with `seed` on that device."""
    with network_on(network, sampling_device(cfg)) as device:
        yield torch.Generator(device=device).manual_seed(seed)


def sample_run(domain: Any, run: RunDir, *, out_dir: Path | None = None,
               adapter_scale: float | None = None, adapters: dict[Path, float] | None = None,
               **options: Any) -> list[Path]:
    """`sample_model` on the run's model, into the run's `samples/<sampler>-<steps>/` (or
    `out_dir`)."""
    model = run_model(domain, run, adapter_scale=adapter_scale, adapters=adapters)
    return sample_model(model, out_dir=out_dir, out_root=run.samples, **options)


def with_overrides(model: Model, overrides: Sequence[str] = ()) -> Model:
    """`model` with `key=value` overrides applied to its config (only existing keys, as on the
    command line) and its process rebuilt from that config (e.g. "sample.guidance=2"); the same
    network. A `ConfigError` line when `sample.guidance` is not 0 and the domain's process has
    no classifier-free guidance (no `guidance` field)."""
    if overrides:
        from diffusekit.core.app import config as configuration

        from diffusekit.core.app.distill import run_process

        cfg = configuration.override(model.cfg, overrides=list(overrides))
        model = replace(model, cfg=cfg, process=run_process(model.domain, cfg, model.domain.process(cfg)))
    w = float(model.cfg.sample.get("guidance") or 0.0)
    if w and not hasattr(model.process, "guidance"):
        raise ConfigError(f"sample.guidance={w:g}: the {model.domain.name!r} domain's process has "
                          "no classifier-free guidance; leave sample.guidance at 0")
    return model


def sample_model(model: Model, *, sampler: str | None = None, steps: int | None = None,
                 n: int | None = None, seed: int | None = None, out_dir: Path | None = None,
                 out_root: Path = Path("samples"), progress: bool = True,
                 overrides: Sequence[str] = ()) -> list[Path]:
    """Generate `n` samples (default `sample.n`) and write them with the domain's
    `write_samples` into `out_dir`, default `out_root/<sampler>-<steps>/`; `overrides`
    (`key=value`) change the model's config for this call (`with_overrides`)."""
    model = with_overrides(model, overrides)
    network, process, cfg, domain = model.network, model.process, model.cfg, model.domain
    sampler = sampler or cfg.sample.sampler or getattr(process, "sampler", None)
    steps = int(steps or cfg.sample.steps)
    n = int(n or cfg.sample.n)
    name = f"{sampler or 'default'}-{steps}"
    out = Path(out_dir) if out_dir else child_path(out_root, name, "sample folder")
    out.mkdir(parents=True, exist_ok=True)
    datamodule = domain.build_datamodule(cfg)
    paths: list[Path] = []
    n_batches = _n_batches(n, int(cfg.sample.batch_size))
    with _on_sampling_device(cfg, network, int(cfg.seed if seed is None else seed)) as generator, \
            tqdm(total=steps * n_batches, desc="sampling", unit="step", disable=not progress) as bar:
        batches = _rebatch(example_batches(datamodule, n), int(cfg.sample.batch_size))
        for i, batch in enumerate(batches):
            samples = _generate(network, process, batch, sampler=sampler, steps=steps,
                                generator=generator, bar=bar)
            part = out if n_batches == 1 else out / f"part-{i:03d}"
            part.mkdir(parents=True, exist_ok=True)
            paths.extend(domain.write_samples(samples, part, cfg) or [])
    return paths


def evaluate_run(domain: Any, run: RunDir, *, adapter_scale: float | None = None,
                 adapters: dict[Path, float] | None = None, **options: Any) -> dict[str, Any]:
    """`evaluate_model` on the run's model; the result is merged into its metrics.json under
    "evaluation"."""
    model = run_model(domain, run, adapter_scale=adapter_scale, adapters=adapters)
    result = evaluate_model(model, **options)
    run.update_metrics({"evaluation": result})
    return result


def evaluate_model(model: Model, *, sampler: str | None = None, steps: int | None = None,
                   n: int | None = None, progress: bool = True,
                   overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The domain's metrics of samples generated for `n` test examples (default
    `sample.eval_n`), averaged over examples: {"metrics", "n", "sampler", "steps", "seconds"};
    `overrides` as in `sample_model`."""
    model = with_overrides(model, overrides)
    network, process, cfg, domain = model.network, model.process, model.cfg, model.domain
    sampler = sampler or cfg.sample.sampler or getattr(process, "sampler", None)
    steps = int(steps or cfg.sample.steps)
    n = int(n or cfg.sample.eval_n)
    datamodule = domain.build_datamodule(cfg)
    totals: dict[str, float] = {}
    count = 0
    started = time.time()
    with _on_sampling_device(cfg, network, int(cfg.seed)) as generator, \
            tqdm(total=steps * _n_batches(n, int(cfg.sample.batch_size)), desc="evaluating",
                 unit="step", disable=not progress) as bar:
        for batch in _rebatch(example_batches(datamodule, n), int(cfg.sample.batch_size)):
            if isinstance(process, HintedProcess):  # the domain scores samples against hints
                batch = process.hinted(batch)
            samples = _generate(network, process, batch, sampler=sampler, steps=steps,
                                generator=generator, bar=bar)
            size = batch_size(batch)
            for key, value in domain.evaluate(batch, samples, cfg).items():
                totals[key] = totals.get(key, 0.0) + float(value) * size
            count += size
    metrics = {key: value / count for key, value in totals.items()}
    result = {"metrics": metrics, "n": count, "sampler": sampler, "steps": steps,
              "seconds": round(time.time() - started, 2)}
    if overrides:
        result["overrides"] = list(overrides)
    return result


@torch.no_grad()
def held_out_loss(model: Model, n: int, *, repeats: int = 4, seed: int = 0) -> float:
    """The model's training objective on its data's held-out test split: the mean over the first
    `n` test examples (else validation examples) of `process.training_loss`, averaged over
    `repeats` draws of its noise and times from a generator seeded with `seed`. Lower is better.

    Every model scored with the same data, `n` and `seed` sees the same examples and the same
    draws, so the scores compare models on equal terms. For a likelihood-trained process (MDLM's
    NELBO, a VLB weighting) this is the test bound; otherwise the test value of its loss."""
    datamodule = model.domain.build_datamodule(model.cfg)
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for batch in example_batches(datamodule, n, splits=("test", "validate")):
        draws = [model.process.training_loss(model.network, batch, generator=generator)
                 for _ in range(repeats)]
        losses = torch.stack(draws).mean(0)  # [B]
        total += float(losses.double().sum())
        count += int(losses.numel())
    if not count or total != total:  # no examples, or a NaN loss
        raise DataError(f"the test loss of {str(model.path)!r} is undefined "
                        f"({count} examples, total {total})")
    return total / count


def add_adapters(model: Model, adapters: dict[Path, float]) -> Model:
    """Load further adapters into `model` (in place) and weight them: {adapter run or exported
    adapter folder: scale}. Each must have been trained on the same base weights (SHA-256) as
    `model`'s; their updates add up with the model's own adapter, if it has one."""
    if not adapters:
        return model
    from diffusekit.core.app import adapters as lora

    own = model_base_sha256(model)
    names = _adapter_names(model)
    for i, (folder, scale) in enumerate(adapters.items()):
        folder = Path(folder) / ADAPTER_FOLDER
        base = lora.read_base(folder)
        if base["sha256"] != own:
            raise CheckpointError(f"the adapter in {str(folder.parent)!r} was trained on other "
                                  f"base weights (SHA-256 {base['sha256'][:12]}...) than "
                                  f"{str(model.path)!r} ({own[:12]}...)")
        name = f"extra{i}"
        lora.load_adapter(model.network, folder, name, scale)
        names.append(name)
    lora.activate(model.network, names)
    return model


def model_base_sha256(model: Model) -> str:
    """The SHA-256 of the base weights under `model`: its own model.safetensors, or, for an
    adapter (or control) model, the one its base.json records."""
    from diffusekit.core.app import adapters as lora
    from diffusekit.core.app.controls import CONTROL_FOLDER

    for folder in (ADAPTER_FOLDER, CONTROL_FOLDER):
        if (model.path / folder).is_dir():
            return lora.read_base(model.path / folder)["sha256"]
    return sha256_of(model.path / WEIGHTS_FILE)


def _adapter_names(model: Model) -> list[str]:
    from diffusekit.core.app import adapters as lora

    return sorted({name for layer in lora.lora_layers(model.network) for name in layer.lora_A})


def _n_batches(n: int, size: int) -> int:
    return max(1, -(-n // max(1, size)))


def _rebatch(batches: Iterator[dict], size: int) -> Iterator[dict]:
    """Re-cut a stream of batches into batches of `size` examples (the last may be smaller)."""
    pending: dict | None = None
    for batch in batches:
        pending = batch if pending is None else concat_batches(pending, batch)
        while pending is not None and batch_size(pending) >= size:
            yield slice_batch(pending, size)
            rest = slice_batch(pending, None, start=size)
            pending = rest if batch_size(rest) > 0 else None
    if pending is not None:
        yield pending
