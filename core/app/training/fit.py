"""`train`: one function from (domain, resolved config) to a finished run folder.

    run = train(domain, cfg)                       # a new run under cfg.run_dir/<domain>/
    run = train(domain, cfg, resume=RunDir(...))   # continue from its checkpoints/last.ckpt
    trained = train_for_benchmark(domain, cfg, steps=4000)  # a benchmark's model, EMA weights

The domain builds the parts (network, process, data module); this module turns the config's
toolkit sections into a `DiffusionModule`, a Lightning `Trainer` (devices, strategy, precision,
gradient clipping, validation and checkpoint intervals, the wall-clock budget `trainer.max_time`)
and the callbacks that write the run folder (see `runs`). A run stopped by its time budget ends
like one that reached `trainer.max_steps`: Lightning validates once more when a callback stops
training (its Timer does), so the last step gets its validation loss and samples; then the final
checkpoint, the EMA weights, the loss curve and metrics.json (`stopped_by`: max_steps or
max_time; `samples_per_s`: the training throughput). Multi-device and multi-node training is Lightning's own: `trainer.devices`,
`trainer.num_nodes`, `trainer.strategy=ddp` (gloo on CPU). With `ddp`, Lightning starts the other
processes by re-running the same command; they find the run folder through the
`DIFFUSEKIT_RUN_DIR` environment variable, which a multi-node launcher may also set.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig, OmegaConf

from diffusekit.core.app.adapters import is_adapter_run
from diffusekit.core.app.config import as_dict, duration_seconds, override, typed
from diffusekit.core.app.distill import start_distillation
from diffusekit.core.errors import ConfigError, RunDirError
from diffusekit.core.app.training.callbacks import (AtomicCheckpointIO, ExportEMAWeights,
                                                FinalCheckpoint, LossCurve, Throughput,
                                                ValidationSamples, read_csv_logs)
from diffusekit.core.app.training.inference import load_run
from diffusekit.core.app.training.models import save_run_model, start_control, start_from_model
from diffusekit.core.app.training.module import DiffusionModule, OptimSettings
from diffusekit.core.app.training.runs import RUN_DIR_ENV, RunDir, check_checkpoint


class _DropTips(logging.Filter):
    """Drop Lightning's advertising tips from its log (they are not about this run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


def _quiet_lightning() -> None:
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropTips())
    # the EMA copy is in eval mode on purpose
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")


def is_launched_worker() -> bool:
    """True in a process that a DDP launcher started for a rank other than 0 (it must reuse the
    run folder of rank 0 and write nothing of its own)."""
    return any(os.environ.get(k, "0") not in ("", "0") for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def prepare_run(domain_name: str, cfg: DictConfig, resume: RunDir | None = None) -> RunDir:
    """The run folder of this process: `resume`, the folder named by `DIFFUSEKIT_RUN_DIR`, or a
    new one; the resolved config is saved into it (by rank 0 of a new run)."""
    if resume is not None:
        run = resume
    elif os.environ.get(RUN_DIR_ENV):
        run = RunDir(Path(os.environ[RUN_DIR_ENV]).absolute())
        run.path.mkdir(parents=True, exist_ok=True)
    else:
        run = RunDir.create(cfg.run_dir, domain_name)
    if not is_launched_worker():
        run.save_config(cfg)
    return run


def optim_settings(cfg: DictConfig) -> OptimSettings:
    """`OptimSettings` from the config's `optim` section; a `ConfigError` naming the key of a
    value that is not a number (`trainer.max_steps=abc`) or that the optimiser refuses. An
    adapter run's peak rate is `optim.lr * adapter.lr_scale` (see `adapter_lr_scale`)."""
    total = typed(cfg, "trainer.max_steps", int)
    scale = adapter_lr_scale(cfg)
    betas = cfg.optim.betas
    if not OmegaConf.is_list(betas) or len(betas) != 2:
        raise ConfigError(f"config key 'optim.betas' must be a list of two numbers, got {betas!r}")
    try:
        return OptimSettings(
            lr=typed(cfg, "optim.lr", float) * scale, weight_decay=typed(cfg, "optim.weight_decay", float),
            betas=(typed(cfg, "optim.betas.0", float), typed(cfg, "optim.betas.1", float)),
            eps=typed(cfg, "optim.eps", float), warmup_steps=typed(cfg, "optim.warmup_steps", int),
            decay=str(cfg.optim.get("decay", "constant")),
            total_steps=total if total > 0 else None)
    except ValueError as exc:
        raise ConfigError(f"optim settings rejected: {exc}") from None


def adapter_lr_scale(cfg: DictConfig) -> float:
    """The factor on `optim.lr` of an adapter run (1 for a run that trains the whole network).

    A LoRA update dW = (alpha / r) B A starts at B = 0 (Hu et al. 2022) and grows through B
    alone; under Adam each entry of B moves about `lr` a step, and dW's entries move by that
    times A's entries (about 1 / sqrt(fan_in) at peft's initialisation), so at the rate of full
    training LoRA learns several times slower. Published recipes give LoRA 10 to 20 times the
    rate of full fine-tuning (LoRA's RoBERTa runs: 4e-4 against 1e-5 to 3e-5)."""
    if not is_adapter_run(cfg):
        return 1.0
    scale = typed(cfg, "adapter.lr_scale", float) if "lr_scale" in cfg.adapter else 1.0
    if not scale > 0:
        raise ConfigError(f"adapter.lr_scale must be > 0, got {scale}")
    return scale


def max_time(cfg: DictConfig) -> float | None:
    """`trainer.max_time` in seconds (None: no wall-clock budget); see `duration_seconds`."""
    return duration_seconds(OmegaConf.select(cfg, "trainer.max_time", default=None),
                            "trainer.max_time")


# Precisions that need float16 autocast with a gradient scaler: a GPU's. On a CPU Lightning
# would quietly train in bfloat16 instead; the toolkit refuses, so a run is what it says.
_FLOAT16_MIXED = ("16-mixed", "16")


def check_precision(cfg: DictConfig) -> str:
    """`trainer.precision`, refused (one `ConfigError` line) where it cannot be what it says:
    float16 mixed precision on a CPU (`trainer.accelerator=cpu`, or `auto` without a GPU)."""
    precision = str(cfg.trainer.precision)
    accelerator = str(cfg.trainer.accelerator)
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if precision in _FLOAT16_MIXED and on_cpu:
        raise ConfigError(f"trainer.precision={precision} needs a GPU (float16 autocast with a "
                          "gradient scaler); on a CPU use bf16-mixed or 32-true")
    return precision


def build_trainer(cfg: DictConfig, run: RunDir, callbacks: list[Any]) -> L.Trainer:
    """A Lightning Trainer from the config's `trainer` section and the toolkit's intervals."""
    t = cfg.trainer
    budget = max_time(cfg)
    precision = check_precision(cfg)
    accumulate = typed(cfg, "trainer.accumulate_grad_batches", int)
    every = typed(cfg, "checkpoint_every", int)
    periodic = ModelCheckpoint(dirpath=run.checkpoints, every_n_train_steps=every or None,
                               save_top_k=0, save_last=True, enable_version_counter=False)
    best = ModelCheckpoint(dirpath=run.checkpoints, filename="best", monitor="val/loss",
                           mode="min", save_top_k=1, enable_version_counter=False)
    grad_clip = typed(cfg, "optim.grad_clip", float) if cfg.optim.grad_clip else None
    try:
        return L.Trainer(
            max_steps=typed(cfg, "trainer.max_steps", int), max_epochs=-1,
            max_time=None if budget is None else timedelta(seconds=budget),
            accelerator=t.accelerator, devices=as_dict(t.devices),
            num_nodes=typed(cfg, "trainer.num_nodes", int),
            strategy=t.strategy, precision=precision,
            accumulate_grad_batches=accumulate,
            gradient_clip_val=grad_clip,
            gradient_clip_algorithm="norm",
            val_check_interval=typed(cfg, "val_every", int) * accumulate,
            check_val_every_n_epoch=None,
            limit_val_batches=t.limit_val_batches, num_sanity_val_steps=0,
            log_every_n_steps=typed(cfg, "trainer.log_every_n_steps", int),
            enable_progress_bar=bool(t.progress_bar), enable_model_summary=False,
            deterministic=bool(t.deterministic),
            default_root_dir=str(run.path),
            # CSV rows reach the disk as often as checkpoints do
            logger=CSVLogger(save_dir=str(run.path), name="logs",
                             flush_logs_every_n_steps=max(1, every or 100)),
            callbacks=[periodic, best, *callbacks],
            plugins=[AtomicCheckpointIO()],
        )
    except (ValueError, TypeError, RuntimeError) as exc:  # MisconfigurationException included
        raise ConfigError(f"trainer settings rejected: {' '.join(str(exc).split())}") from None


def train(domain: Any, cfg: DictConfig, resume: RunDir | None = None) -> RunDir:
    """Train `domain` with the resolved config `cfg`; return the run folder.

    With `resume`, training continues from the run's last checkpoint (optimiser, EMA, step
    counter, data position) up to `cfg.trainer.max_steps`; a run already there trains nothing,
    keeps its recorded losses and re-exports its weights from the checkpoint. Everything is built
    and checked before a new run folder is made, and a new run that fails before its first
    checkpoint (a data error inside the data module's setup, say) leaves no folder behind."""
    ckpt_path, ckpt_step = resume.resume_checkpoint() if resume is not None else (None, 0)
    max_time(cfg), check_precision(cfg)  # bad values are one error line before anything is built
    L.seed_everything(typed(cfg, "seed", int), workers=True, verbose=False)
    network = domain.build_network(cfg)
    base = start_from_model(domain, cfg, network, load_base=resume is None)
    process = domain.process(cfg)
    datamodule = domain.build_datamodule(cfg)
    network, process, base = start_control(domain, cfg, network, process, datamodule, base)
    network, process = start_distillation(domain, cfg, network, process)
    module = DiffusionModule(network, process, optim_settings(cfg),
                             ema_decay=typed(cfg, "ema.decay", float),
                             ema_warmup=bool(cfg.ema.warmup))
    if resume is not None and ckpt_step >= typed(cfg, "trainer.max_steps", int):
        return _reexport_finished(domain, cfg, module, resume, ckpt_path, ckpt_step, base)

    run = prepare_run(domain.name, cfg, resume)
    try:
        return _fit(domain, cfg, run, module, datamodule, ckpt_path, ckpt_step, resume, base)
    except BaseException:
        if resume is None and not is_launched_worker() and not run.last_checkpoint.exists():
            shutil.rmtree(run.path, ignore_errors=True)  # nothing to resume: no half-made run
        raise


def _fit(domain: Any, cfg: DictConfig, run: RunDir, module: DiffusionModule, datamodule: Any,
         ckpt_path: Path | None, ckpt_step: int, resume: RunDir | None,
         base: dict[str, str] | None) -> RunDir:
    if resume is not None:
        run.remove_stale_temporaries()
    throughput = Throughput()
    callbacks = [
        throughput,
        ExportEMAWeights(lambda network, step: save_run_model(
            network, run, domain.name, step, base, is_adapter_run(cfg))),
        FinalCheckpoint(run.last_checkpoint, typed(cfg, "checkpoint_every", int)),
        LossCurve(run.logs, run.loss_curve),
        ValidationSamples(lambda samples, out: domain.write_samples(samples, out, cfg),
                          run.samples, n=typed(cfg, "sample.val_n", int),
                          sampler=cfg.sample.sampler, steps=typed(cfg, "sample.steps", int),
                          seed=typed(cfg, "seed", int)),
    ]
    _quiet_lightning()
    trainer = build_trainer(cfg, run, callbacks)

    started = time.time()
    previous = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = str(run.path.resolve())  # for the ranks a DDP launcher starts
    try:
        trainer.fit(module, datamodule=datamodule, weights_only=True,
                    ckpt_path=str(ckpt_path) if ckpt_path else None)
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous

    if trainer.is_global_zero:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        budget = max_time(cfg)
        step = int(trainer.global_step)
        summary = {
            "domain": domain.name,
            "step": step,
            "max_steps": int(cfg.trainer.max_steps),
            "max_time_seconds": budget,
            # what ended the run: the step budget, or the wall-clock one (Lightning's Timer)
            "stopped_by": "max_steps" if step >= int(cfg.trainer.max_steps) or budget is None
                          else "max_time",
            "precision": str(cfg.trainer.precision),
            "world_size": int(trainer.world_size),
            "train_seconds": round(time.time() - started, 2),
            "train_loss": metrics.get("train/loss"),
            "val_loss": metrics.get("val/loss"),
            "samples_per_s": None if throughput.mean() is None else round(throughput.mean(), 2),
        }
        previous_metrics = run.read_metrics()
        if resume is not None:
            summary["train_seconds"] += previous_metrics.get("train_seconds", 0.0)
            summary["resumed_at_steps"] = [*previous_metrics.get("resumed_at_steps", []),
                                           ckpt_step]
        # a loss this start did not measure never erases the one recorded before
        run.update_metrics({k: v for k, v in summary.items() if v is not None})
    return run


def _reexport_finished(domain: Any, cfg: DictConfig, module: DiffusionModule, run: RunDir,
                       ckpt_path: Path, step: int, base: dict[str, str] | None) -> RunDir:
    """A resumed run that is already at `trainer.max_steps`: nothing to train. Its EMA weights
    are written again from the checkpoint (a damaged model.safetensors is mended) and its
    metrics keep their losses; the resume is recorded."""
    if is_launched_worker():
        return run
    run.remove_stale_temporaries()
    module.load_state_dict(check_checkpoint(ckpt_path)["state_dict"])
    save_run_model(module.ema.network, run, domain.name, step, base, is_adapter_run(cfg))
    previous = run.read_metrics()
    run.update_metrics({"step": step,
                        "resumed_at_steps": [*previous.get("resumed_at_steps", []), step]})
    return run


# ------------------------------------------------------------------------------- benchmarks
@dataclass
class TrainedModel:
    """What a benchmark gets from `train_for_benchmark`: the network with its EMA weights (eval
    mode), the process and the resolved config of the run, the training wall time, the logged
    training losses by step, and the run folder (None when it was a temporary one)."""

    network: torch.nn.Module
    process: Any
    cfg: DictConfig
    seconds: float
    losses: dict[int, float] = field(default_factory=dict)
    run: RunDir | None = None

    def final_loss(self, last_steps: int = 100) -> float:
        """Mean of the logged training losses of the last `last_steps` steps (NaN if none)."""
        if not self.losses:
            return float("nan")
        end = max(self.losses)
        tail = [v for step, v in self.losses.items() if step > end - last_steps]
        return sum(tail) / len(tail)


BENCHMARK_CHECKPOINT_EVERY = 500  # optimiser steps between the checkpoints of a benchmark's run


def matching_run(domain: Any, cfg: DictConfig, ignore: Sequence[str] = ()) -> RunDir | None:
    """The newest run of `domain` under `cfg.run_dir` whose saved config is exactly `cfg` but for
    the keys `ignore` (top-level sections such as a benchmark's own, which training never reads,
    or dotted keys such as "sample.device"), and which has a checkpoint to resume from; None
    when there is none. A saved config is read as `toolkit sample` reads it
    (`RunDir.load_config(domain)`): keys added to the defaults since the run was saved take their
    default values, so a new option does not orphan earlier runs."""
    folder = Path(cfg.run_dir) / domain.name

    def compared(config: DictConfig) -> dict:
        out = OmegaConf.to_container(config, resolve=True)
        for key in ignore:
            *parents, last = key.split(".")
            section = out
            for parent in parents:
                section = section.get(parent) if isinstance(section, dict) else None
            if isinstance(section, dict):
                section.pop(last, None)
        return out

    wanted = compared(cfg)
    for path in sorted(folder.iterdir() if folder.is_dir() else [], reverse=True):
        run = RunDir(path)
        if not (run.config_file.is_file() and run.last_checkpoint.is_file()):
            continue
        try:
            saved = compared(run.load_config(domain))
        except (RunDirError, ConfigError):  # unreadable, or a run that no longer fits the domain
            continue
        if saved == wanted:
            return run
    return None


def train_for_benchmark(domain: Any, cfg: DictConfig, steps: int,
                        work_dir: str | Path | None = None, *,
                        overrides: Sequence[str] = (), own_section: str | None = None,
                        ) -> TrainedModel:
    """Train `domain` for `steps` optimiser steps with `train`, the trainer of `toolkit train`
    (same module, optimiser, schedule, EMA, data module), and load the EMA network.

    `overrides` (`key=value`, e.g. "process.kind=regression") are applied to `cfg` first; then
    `trainer.max_steps=steps`, one validation and one checkpoint at the end (`val_every` and
    `checkpoint_every` = steps) and no validation samples (`sample.val_n=0`), so that nothing
    but training costs time; the progress bar follows `trainer.progress_bar`. The run folder goes
    under `work_dir`/<domain>/ and is kept; with `work_dir` None it goes into a temporary folder
    that is removed once the weights are loaded. `toolkit train --domain D <overrides>
    trainer.max_steps=N val_every=N checkpoint_every=N sample.val_n=0` trains the same weights
    (where validations fall changes the random stream, so with other intervals the run differs
    like another seed).

    A checkpoint is written every `BENCHMARK_CHECKPOINT_EVERY` steps, and with `work_dir` given
    a run there with exactly this config that stopped early (a crash, a killed job) is resumed
    from its last checkpoint instead of starting again (`matching_run`); a finished one is
    reloaded without training. `seconds` is the run's training time over all its starts
    (metrics.json's `train_seconds`), whichever call did it. `own_section`: the
    calling benchmark's config section (e.g. "repair"), left out of that comparison, since
    training never reads it: a run resumes after a change of what is scored or where results go.
    The top-level `quick` flag is left out too: it only sizes the benchmark, so a quick and a
    full benchmark with the same training steps share their run; and so is `sample.device`,
    where the benchmark's sweeps run (the base trains on `trainer.*`'s devices)."""
    steps = int(steps)
    if steps <= 0:
        raise ConfigError(f"a benchmark needs at least one training step, got {steps}")
    cfg = override(cfg, overrides=[
        *overrides, f"trainer.max_steps={steps}", f"val_every={steps}",
        f"checkpoint_every={min(steps, BENCHMARK_CHECKPOINT_EVERY)}", "sample.val_n=0"])
    with tempfile.TemporaryDirectory(prefix="diffusekit-benchmark-") as scratch:
        cfg.run_dir = str(Path(work_dir) if work_dir is not None else scratch)
        # read by no training: the benchmark's own section, its size, where it samples
        ignore = ("quick", "sample.device", *((own_section,) if own_section else ()))
        resume = matching_run(domain, cfg, ignore) if work_dir is not None else None
        if resume is not None:
            print(f"{domain.name} benchmark: resuming {resume.path} from its last checkpoint",
                  file=sys.stderr)
        started = time.perf_counter()
        run = train(domain, cfg, resume=resume)
        # the run's training time over all its starts (a reloaded run: the time it took then)
        seconds = float(run.read_metrics().get("train_seconds", time.perf_counter() - started))
        network, process, run_cfg = load_run(domain, run)
        losses = read_csv_logs(run.logs).get("train/loss", {})
    return TrainedModel(network, process, run_cfg, round(seconds, 1), losses,
                        run if work_dir is not None else None)
