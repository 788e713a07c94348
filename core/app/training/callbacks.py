"""Lightning callbacks that give a run its files: samples, exported weights, curves, checkpoints.

Each callback gets paths and plain functions, never a domain or a config:

    ValidationSamples   at each validation, generate a few samples from the EMA weights for the
                        first validation examples and hand them to a writer (the domain's
                        `write_samples`), into samples/step-XXXXXX/
    ExportEMAWeights    with every checkpoint, write the EMA weights (model.safetensors, or the
                        adapter of an adapter run)
    FinalCheckpoint     at the end of training, a last.ckpt of the final step (when the periodic
                        checkpoint did not just write it)
    LossCurve           loss.png from the CSV logs of every (re)start of the run
    Throughput          training examples per second (`train/samples_per_s`: the CSV logs and
                        the progress bar), and its mean over the run for metrics.json

and the checkpoint writer `AtomicCheckpointIO` (a Lightning plugin): a checkpoint is written
next to its final name and renamed into place, and read back without unpickling code.

All files are written by the global rank 0 only.
"""

from __future__ import annotations

import csv
import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from diffusekit.core.app.training.module import batch_size, concat_batches, slice_batch
from diffusekit.core.app.training.runs import TEMPORARY_SUFFIX, check_checkpoint


class ValidationSamples(Callback):
    """Sample `n` examples at the end of each validation and write them with `write`.

    write:    write(samples, out_dir) -> list of paths (e.g. a domain's write_samples).
    out_dir:  the run's samples/ folder; each validation writes into step-XXXXXX/.
    n:        how many of the first validation examples to generate for (0: off).
    sampler, steps: passed to the process (None: its defaults).
    seed:     seed of the sampling noise (the same noise at every validation).
    """

    def __init__(self, write: Callable[[Any, Path], list[Path]], out_dir: Path, n: int,
                 sampler: str | None = None, steps: int | None = None, seed: int = 0) -> None:
        self.write, self.out_dir, self.n = write, Path(out_dir), int(n)
        self.sampler, self.steps, self.seed = sampler, steps, seed
        self._examples: dict | None = None
        self.written: list[Path] = []

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if self.n <= 0 or not trainer.is_global_zero or trainer.sanity_checking:
            return
        if self._examples is None:
            self._examples = slice_batch(batch, self.n)
        elif batch_size(self._examples) < self.n:  # small batches: gather from the next ones
            more = slice_batch(batch, self.n - batch_size(self._examples))
            self._examples = concat_batches(self._examples, more)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        examples, self._examples = self._examples, None
        if examples is None or not trainer.is_global_zero or trainer.sanity_checking:
            return
        device = examples["x0"].device
        generator = torch.Generator(device=device).manual_seed(self.seed)
        samples = pl_module.generate(examples, sampler=self.sampler, steps=self.steps,
                                     generator=generator)
        out = self.out_dir / f"step-{trainer.global_step:06d}"
        out.mkdir(parents=True, exist_ok=True)
        self.written = list(self.write(samples, out) or [])


class ExportEMAWeights(Callback):
    """Write the module's EMA network with `save(network, step)` (the run's model.safetensors,
    or its adapter) whenever a checkpoint is saved, so that the exported weights are never
    older than the last checkpoint."""

    def __init__(self, save: Callable[[torch.nn.Module, int], None]) -> None:
        self.save = save
        self._exported_step = -1

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict) -> None:
        if trainer.is_global_zero and trainer.global_step != self._exported_step:
            self.export(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and trainer.global_step != self._exported_step:
            self.export(trainer, pl_module)

    def export(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(pl_module.ema.network, trainer.global_step)
        self._exported_step = trainer.global_step


class FinalCheckpoint(Callback):
    """Save `path` (the run's last.ckpt) at the end of training unless the periodic checkpoint
    (`ModelCheckpoint(every_n_train_steps=every, save_last=True)`) has just written the final
    step. Together they bound what a killed run loses by `every` steps and leave a finished run
    whose last.ckpt is its final state."""

    def __init__(self, path: Path, every: int) -> None:
        self.path, self.every = Path(path), int(every)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if step > 0 and (self.every <= 0 or step % self.every != 0):
            trainer.save_checkpoint(self.path, weights_only=False)  # collective: all ranks call it


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O, made safe for a run folder.

    Writing: the checkpoint goes to a temporary file in its own folder (never $TMPDIR, so a
    kill -9 leaves nothing outside the run, and the final step is a same-file-system
    `os.replace`: a reader sees the old checkpoint or the new one, never half of one). A stale
    temporary is removed when the run resumes (`RunDir.remove_stale_temporaries`).
    Reading: `torch.load(weights_only=True)` through `check_checkpoint`: a checkpoint that carries
    a pickled callable is refused with a `CheckpointError` instead of running it."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(self, path: Any, map_location: Any = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        return check_checkpoint(Path(path))


class LossCurve(Callback):
    """Plot training and validation loss against the step into `png` after each validation and
    at the end, from all CSV logs under `logs_dir` (one version per start of the run)."""

    def __init__(self, logs_dir: Path, png: Path) -> None:
        self.logs_dir, self.png = Path(logs_dir), Path(png)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.draw(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.draw(trainer)

    def draw(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        if trainer.logger is not None:
            trainer.logger.save()  # flush the CSV rows of this start
        plot_loss_curves(read_csv_logs(self.logs_dir), self.png)


def read_csv_logs(logs_dir: Path) -> dict[str, dict[int, float]]:
    """{metric: {step: value}} over every logs/version_*/metrics.csv (a later start wins a step)."""
    series: dict[str, dict[int, float]] = {}
    files = sorted(Path(logs_dir).glob("version_*/metrics.csv"),
                   key=lambda p: int(p.parent.name.rpartition("_")[2] or 0))
    for path in files:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if not row.get("step"):
                    continue
                step = int(float(row["step"]))
                for key, value in row.items():
                    if key in ("step", "epoch") or value in (None, ""):
                        continue
                    series.setdefault(key, {})[step] = float(value)
    return series


def plot_loss_curves(series: dict[str, dict[int, float]], png: Path) -> Path | None:
    """Draw every `*loss*` series on a log-scaled axis into `png` (None if nothing to draw)."""
    curves = {k: v for k, v in series.items() if "loss" in k and v}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in sorted(curves.items()):
        steps = sorted(values)
        ys = [values[s] for s in steps]
        ax.plot(steps, ys, label=name, marker="o" if len(steps) < 20 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if all(y > 0 for v in curves.values() for y in v.values()):
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = png.with_name(png.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png)
    return png


class Throughput(Callback):
    """Training examples per second over all devices, logged every step as
    `train/samples_per_s` (to the CSV logs and the progress bar): examples of the last `window`
    batches over the wall time they took, from the end of one training batch to the end of the
    next, so data loading and checkpoint writing count, and validations (which run in between,
    with their samples) do not. The first batch of each start (warm-up: allocation, kernel
    selection, compilation) is left out, also of `mean()`, the rate over the whole start."""

    def __init__(self, window: int = 20) -> None:
        self.window = max(1, int(window))
        self._recent: deque[tuple[int, float]] = deque(maxlen=self.window)
        self._last: float | None = None
        self.samples, self.seconds = 0, 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last, self._recent = None, deque(maxlen=self.window)
        self.samples, self.seconds = 0, 0.0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        last, self._last = self._last, now
        if last is None:  # the first batch of this start: its time includes the warm-up
            return
        n = batch_size(batch) * trainer.world_size
        self._recent.append((n, now - last))
        self.samples += n
        self.seconds += now - last
        seconds = sum(s for _, s in self._recent)
        if seconds > 0:
            pl_module.log("train/samples_per_s", sum(k for k, _ in self._recent) / seconds,
                          prog_bar=True, on_step=True, on_epoch=False, batch_size=n)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last is not None:  # the next interval starts after the validation
            self._last = time.perf_counter()

    def mean(self) -> float | None:
        """Examples per second over this start of the run (None before two batches)."""
        return self.samples / self.seconds if self.seconds > 0 else None
