"""`train`: one function from (domain, resolved config) to a finished run folder.

    run = train(domain, cfg)                       # a new run under cfg.run_dir/<domain>/
    run = train(domain, cfg, resume=RunDir(...))   # continue from its checkpoints/last.ckpt

The domain builds the parts (network, process, data module); this module turns the config's
toolkit sections into a `DiffusionModule`, a Lightning `Trainer` (devices, strategy, precision,
gradient clipping, validation and checkpoint intervals) and the callbacks that write the run
folder (see `runs`). Multi-device and multi-node training is Lightning's own: `trainer.devices`,
`trainer.num_nodes`, `trainer.strategy=ddp` (gloo on CPU). With `ddp`, Lightning starts the other
processes by re-running the same command; they find the run folder through the
`DIFFUSEKIT_RUN_DIR` environment variable, which a multi-node launcher may also set.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig

from diffusekit.core.config import as_dict
from diffusekit.core.errors import ConfigError
from diffusekit.core.training.callbacks import (ExportEMAWeights, FinalCheckpoint, LossCurve,
                                                ValidationSamples)
from diffusekit.core.training.module import DiffusionModule, OptimSettings
from diffusekit.core.training.runs import RUN_DIR_ENV, RunDir


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
    """`OptimSettings` from the config's `optim` section."""
    o = cfg.optim
    total = cfg.get("trainer", {}).get("max_steps")
    try:
        return OptimSettings(
            lr=float(o.lr), weight_decay=float(o.weight_decay),
            betas=tuple(float(b) for b in o.betas), eps=float(o.eps),
            warmup_steps=int(o.warmup_steps), decay=str(o.get("decay", "constant")),
            total_steps=int(total) if total is not None and int(total) > 0 else None)
    except ValueError as exc:
        raise ConfigError(f"optim settings rejected: {exc}") from None


def build_trainer(cfg: DictConfig, run: RunDir, callbacks: list[Any]) -> L.Trainer:
    """A Lightning Trainer from the config's `trainer` section and the toolkit's intervals."""
    t = cfg.trainer
    accumulate = int(t.accumulate_grad_batches)
    every = int(cfg.checkpoint_every)
    periodic = ModelCheckpoint(dirpath=run.checkpoints, every_n_train_steps=every or None,
                               save_top_k=0, save_last=True, enable_version_counter=False)
    best = ModelCheckpoint(dirpath=run.checkpoints, filename="best", monitor="val/loss",
                           mode="min", save_top_k=1, enable_version_counter=False)
    grad_clip = cfg.optim.grad_clip
    try:
        return L.Trainer(
            max_steps=int(t.max_steps), max_epochs=-1,
            accelerator=t.accelerator, devices=as_dict(t.devices), num_nodes=int(t.num_nodes),
            strategy=t.strategy, precision=t.precision,
            accumulate_grad_batches=accumulate,
            gradient_clip_val=float(grad_clip) if grad_clip else None,
            gradient_clip_algorithm="norm",
            val_check_interval=int(cfg.val_every) * accumulate, check_val_every_n_epoch=None,
            limit_val_batches=t.limit_val_batches, num_sanity_val_steps=0,
            log_every_n_steps=int(t.log_every_n_steps),
            enable_progress_bar=bool(t.progress_bar), enable_model_summary=False,
            deterministic=bool(t.deterministic),
            default_root_dir=str(run.path),
            # CSV rows reach the disk as often as checkpoints do
            logger=CSVLogger(save_dir=str(run.path), name="logs",
                             flush_logs_every_n_steps=max(1, every or 100)),
            callbacks=[periodic, best, *callbacks],
        )
    except (ValueError, TypeError, RuntimeError) as exc:  # MisconfigurationException included
        raise ConfigError(f"trainer settings rejected: {' '.join(str(exc).split())}") from None


def train(domain: Any, cfg: DictConfig, resume: RunDir | None = None) -> RunDir:
    """Train `domain` with the resolved config `cfg`; return the run folder.

    With `resume`, training continues from the run's last checkpoint (optimiser, EMA, step
    counter, data position) up to `cfg.trainer.max_steps`."""
    ckpt_path, ckpt_step = resume.resume_checkpoint() if resume is not None else (None, 0)
    run = prepare_run(domain.name, cfg, resume)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)

    network = domain.build_network(cfg)
    process = domain.process(cfg)
    datamodule = domain.build_datamodule(cfg)
    module = DiffusionModule(network, process, optim_settings(cfg),
                             ema_decay=float(cfg.ema.decay), ema_warmup=bool(cfg.ema.warmup))

    callbacks = [
        ExportEMAWeights(run.weights, {"domain": domain.name}),
        FinalCheckpoint(run.last_checkpoint, int(cfg.checkpoint_every)),
        LossCurve(run.logs, run.loss_curve),
        ValidationSamples(lambda samples, out: domain.write_samples(samples, out, cfg),
                          run.samples, n=int(cfg.sample.val_n), sampler=cfg.sample.sampler,
                          steps=int(cfg.sample.steps), seed=int(cfg.seed)),
    ]
    _quiet_lightning()
    trainer = build_trainer(cfg, run, callbacks)

    started = time.time()
    previous = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = str(run.path.resolve())  # for the ranks a DDP launcher starts
    try:
        trainer.fit(module, datamodule=datamodule,
                    ckpt_path=str(ckpt_path) if ckpt_path else None)
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous

    if trainer.is_global_zero:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        summary = {
            "domain": domain.name,
            "step": int(trainer.global_step),
            "max_steps": int(cfg.trainer.max_steps),
            "world_size": int(trainer.world_size),
            "train_seconds": round(time.time() - started, 2),
            "train_loss": metrics.get("train/loss"),
            "val_loss": metrics.get("val/loss"),
        }
        previous_metrics = run.read_metrics()
        if resume is not None:
            summary["train_seconds"] += previous_metrics.get("train_seconds", 0.0)
            summary["resumed_at_steps"] = [*previous_metrics.get("resumed_at_steps", []),
                                           ckpt_step]
        run.update_metrics(summary)
    return run

