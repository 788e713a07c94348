"""Sampling and evaluation from a finished (or interrupted) run folder.

    network, process, cfg = load_run(domain, run)            # EMA weights from model.safetensors
    paths = sample_run(domain, run, sampler="dpmpp_2m", steps=20, n=16)
    metrics = evaluate_run(domain, run)                      # also merged into metrics.json

Both generate for examples of the domain's data (their shapes, conditioning and masks): the
predict split when the data module has one (Lightning's `predict_dataloader`: what to generate
for, e.g. molecule sizes drawn from the training set), else the test split, else the validation
split. Progress is a tqdm bar over sampler steps. Nothing here needs Lightning's Trainer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from diffusekit.core.errors import DataError
from diffusekit.core.app.training.module import batch_size, concat_batches, slice_batch
from diffusekit.core.app.training.runs import RunDir, check_plain_name, child_path, load_weights


def load_run(domain: Any, run: RunDir) -> tuple[torch.nn.Module, Any, DictConfig]:
    """The run's network with its EMA weights (eval mode), its process and its config."""
    cfg = run.load_config(domain)
    if cfg.sample.sampler is not None:  # it names the samples' folder: no path from bad input
        check_plain_name(cfg.sample.sampler, "sample.sampler")
    network = domain.build_network(cfg)
    load_weights(network, run.weights)
    return network.eval().requires_grad_(False), domain.process(cfg), cfg


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


def _generate(network: torch.nn.Module, process: Any, batch: dict, *, sampler: str | None,
              steps: int | None, generator: torch.Generator, bar: tqdm) -> Any:
    with torch.no_grad():
        return process.generate(network, batch, sampler=sampler, steps=steps, generator=generator,
                                callback=lambda info: bar.update(1))


def sample_run(domain: Any, run: RunDir, *, sampler: str | None = None, steps: int | None = None,
               n: int | None = None, seed: int | None = None, out_dir: Path | None = None,
               progress: bool = True) -> list[Path]:
    """Generate `n` samples (default `sample.n`) with the run's EMA weights and write them with
    the domain's `write_samples` into `samples/<sampler>-<steps>/` (or `out_dir`)."""
    network, process, cfg = load_run(domain, run)
    sampler = sampler or cfg.sample.sampler or getattr(process, "sampler", None)
    steps = int(steps or cfg.sample.steps)
    n = int(n or cfg.sample.n)
    generator = torch.Generator().manual_seed(int(cfg.seed if seed is None else seed))
    name = f"{sampler or 'default'}-{steps}"
    out = Path(out_dir) if out_dir else child_path(run.samples, name, "sample folder")
    out.mkdir(parents=True, exist_ok=True)
    datamodule = domain.build_datamodule(cfg)
    paths: list[Path] = []
    n_batches = _n_batches(n, int(cfg.sample.batch_size))
    with tqdm(total=steps * n_batches, desc="sampling", unit="step", disable=not progress) as bar:
        batches = _rebatch(example_batches(datamodule, n), int(cfg.sample.batch_size))
        for i, batch in enumerate(batches):
            samples = _generate(network, process, batch, sampler=sampler, steps=steps,
                                generator=generator, bar=bar)
            part = out if n_batches == 1 else out / f"part-{i:03d}"
            part.mkdir(parents=True, exist_ok=True)
            paths.extend(domain.write_samples(samples, part, cfg) or [])
    return paths


def evaluate_run(domain: Any, run: RunDir, *, sampler: str | None = None,
                 steps: int | None = None, n: int | None = None, progress: bool = True,
                 ) -> dict[str, Any]:
    """The domain's metrics of samples generated for `n` test examples (default
    `sample.eval_n`), averaged over examples; merged into metrics.json under "evaluation"."""
    network, process, cfg = load_run(domain, run)
    sampler = sampler or cfg.sample.sampler or getattr(process, "sampler", None)
    steps = int(steps or cfg.sample.steps)
    n = int(n or cfg.sample.eval_n)
    generator = torch.Generator().manual_seed(int(cfg.seed))
    datamodule = domain.build_datamodule(cfg)
    totals: dict[str, float] = {}
    count = 0
    started = time.time()
    with tqdm(total=steps * _n_batches(n, int(cfg.sample.batch_size)), desc="evaluating",
              unit="step", disable=not progress) as bar:
        for batch in _rebatch(example_batches(datamodule, n), int(cfg.sample.batch_size)):
            samples = _generate(network, process, batch, sampler=sampler, steps=steps,
                                generator=generator, bar=bar)
            size = batch_size(batch)
            for key, value in domain.evaluate(batch, samples, cfg).items():
                totals[key] = totals.get(key, 0.0) + float(value) * size
            count += size
    metrics = {key: value / count for key, value in totals.items()}
    result = {"metrics": metrics, "n": count, "sampler": sampler, "steps": steps,
              "seconds": round(time.time() - started, 2)}
    run.update_metrics({"evaluation": result})
    return result


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
