"""Training with PyTorch Lightning: one generic module, EMA, callbacks, run folders.

    module.py      DiffusionModule (built network + process + OptimSettings), AdamW + warm-up,
                   EMA of the weights (sampling and export use it)
    callbacks.py   validation samples, model.safetensors export, final checkpoint, loss curve
    runs.py        the run folder layout (RunDir), checkpoint checks, safetensors export / load
    fit.py         train(domain, cfg, resume=None): Trainer, checkpoints, DDP via Lightning;
                   train_for_benchmark(domain, cfg, steps): the same, in-process, for benchmarks
    inference.py   sample_run / evaluate_run from a run folder
    defaults.yaml  the toolkit's training defaults (see diffusekit.core.app.config)

Importing this package imports Lightning; `diffusekit.core` itself does not.
"""

from diffusekit.core.app.training.fit import TrainedModel, train, train_for_benchmark
from diffusekit.core.app.training.inference import evaluate_run, load_run, sample_run
from diffusekit.core.app.training.module import EMA, DiffusionModule, OptimSettings
from diffusekit.core.app.training.runs import RunDir

__all__ = ["EMA", "DiffusionModule", "OptimSettings", "RunDir", "TrainedModel", "train",
           "train_for_benchmark", "sample_run", "evaluate_run", "load_run"]
