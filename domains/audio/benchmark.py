"""`toolkit benchmark --domain audio [--quick]`: quality against sampling steps, beside baselines.

One run: train the model (`model.objective`) and the one-step regression model (the same network;
for StoRM its own predictor, otherwise a separate run of as many steps) through the toolkit's
trainer (`train_for_benchmark`: what `toolkit train --domain audio trainer.max_steps=N
seed=<benchmark.seed>` does; EMA weights; runs under `benchmark.run_dir`, or a temporary folder
removed at the end), then enhance the held-out test clips (held-out sentences and voices, at `data.test_snr` dB) with every sampler
of `benchmark.samplers` at every step count of `benchmark.steps`, and score SI-SDR, PESQ-WB,
ESTOI and log-mel L1 beside the noisy input, spectral subtraction and the regression model. The
real CMU ARCTIC clips, mixed with babble and pink noise at the same SNR, are scored too when the
corpus has them. Results: benchmarks/results/audio[_quick].{json,md,png} (see
diffusekit.core.app.results).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from diffusekit.core.app.training.fit import TrainedModel, train_for_benchmark
from diffusekit.domains.audio.data import Collate, make_item
from diffusekit.domains.audio.features import MelFeatures
from diffusekit.domains.audio.network import MelUNet
from diffusekit.domains.audio.noise import NOISES, NoisePool, mix
from diffusekit.core.app import results as results_io

METRICS = ("si_sdr", "pesq", "estoi", "logmel_l1")


def real_batch(waves: list[np.ndarray], features: MelFeatures, frames: int, snr: float,
               seed: int) -> dict | None:
    """The real clips, each mixed with pink noise and with hum at `snr` dB, as one batch."""
    if not waves:
        return None
    items = []
    n = features.samples_for(frames)
    for i, wave in enumerate(waves):
        for j, kind in enumerate(("pink", "hum")):
            rng = np.random.default_rng([seed, i, j])
            clean = np.pad(wave[:n], (0, max(0, n - len(wave))))
            valid = min(len(wave), n)
            noisy = np.pad(mix(clean[:valid], NOISES.get(kind)(valid, features.sample_rate, rng,
                                                               NoisePool()), snr), (0, n - valid))
            peak = max(1.0, float(np.abs(noisy).max()) / 0.99)
            items.append(make_item(clean / peak, noisy / peak, valid, features))
    return Collate(features)(items)


@dataclass
class RegressionBaseline:
    """The one-step regression with the same network: `predict(batch)` -> log-mels [B, 1, M, T],
    trained for `steps`; `source` says whether it is StoRM's own predictor or a separate run."""

    predict: Callable[[dict], Tensor]
    steps: int
    source: str


def _unets(network: torch.nn.Module) -> list[torch.nn.Module]:
    """The MelUNets inside `network` (itself, or StoRM's predictor and denoiser): each call of one
    is a network function evaluation."""
    return [m for m in network.modules() if isinstance(m, MelUNet)]


def _regression_baseline(domain: Any, cfg: DictConfig, model: TrainedModel, steps: int,
                         b: DictConfig) -> RegressionBaseline:
    """StoRM's predictor when the model has one (trained only by its own MSE, it is exactly the
    regression baseline at the model's `steps`, with the model's EMA weights); otherwise a
    separate regression run of the same `steps` through the same trainer."""
    predictor = getattr(model.network, "predictor", None)
    if predictor is not None:
        process = model.process
        return RegressionBaseline(lambda batch: process.inner.predict(predictor, batch),
                                  steps, "StoRM's own predictor")
    reg = train_for_benchmark(domain, cfg, steps, b.run_dir,
                              overrides=[f"seed={int(b.seed)}", "model.objective=regression"])
    return RegressionBaseline(lambda batch: reg.process.generate(reg.network, batch).mel, steps,
                              "separate run")


def run_benchmark(domain: Any, cfg: DictConfig) -> dict[str, Any]:
    """See the module docstring; returns the metrics dict (also written to results/)."""
    from diffusekit.domains.audio.metrics import score_systems, summarise

    b = cfg.benchmark
    quick = bool(cfg.get("quick", False))
    train_steps = int(b.quick_train_steps if quick else b.train_steps)
    torch.manual_seed(int(b.seed))
    dm = domain.build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")

    model = train_for_benchmark(domain, cfg, train_steps, b.run_dir,
                                overrides=[f"seed={int(b.seed)}"])
    network, process = model.network, model.process
    metrics: dict[str, Any] = {"train_steps": train_steps, "test_snr_db": cfg.data.test_snr,
                               "objective": str(cfg.model.objective),
                               "trainer": "toolkit (train_for_benchmark)",
                               "ema_decay": float(cfg.ema.decay),
                               "train_loss": model.final_loss(),
                               "train_seconds": model.seconds}

    # the baseline gets the model's budget: the same steps through the same trainer
    regression = _regression_baseline(domain, cfg, model, train_steps, b)
    metrics["regression_steps"] = regression.steps
    metrics["regression_source"] = regression.source

    test = dm.full_batch("test", int(b.n_test))
    metrics["n_test"] = int(test["x0"].shape[0])
    calls: list[int] = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in _unets(network)]
    curves: dict[str, dict[int, dict[str, float]]] = {}
    reference = summarise(score_systems(test, test["x0"], cfg, ("noisy", "baseline")))
    samplers = list(b.quick_samplers if quick else b.samplers)
    try:
        for sampler in samplers:
            for steps in b.steps:
                calls.clear()
                g = torch.Generator().manual_seed(int(b.seed))
                t0 = time.perf_counter()
                with torch.no_grad():
                    out = process.generate(network, test, sampler=sampler, steps=int(steps),
                                           generator=g)
                seconds = time.perf_counter() - t0
                scores = summarise(score_systems(test, out.mel, cfg, ("model",)))
                scores["si_sdr_gain"] = scores["si_sdr"] - reference["noisy_si_sdr"]
                curves.setdefault(sampler, {})[int(steps)] = scores
                key = f"{sampler}_{steps}"
                for m in METRICS:
                    metrics[f"{m}_{key}"] = scores[m]
                metrics[f"nfe_{key}"] = len(calls)
                metrics[f"seconds_{key}"] = round(seconds, 2)
                print(f"{key}: SI-SDR {scores['si_sdr']:.2f} PESQ {scores['pesq']:.2f} "
                      f"ESTOI {scores['estoi']:.3f}", file=sys.stderr)
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        reg_scores = summarise(score_systems(test, regression.predict(test), cfg, ("model",)))
    baselines = {}
    for m in METRICS:
        baselines[f"noisy_{m}"] = reference[f"noisy_{m}"]
        baselines[f"spectral_subtraction_{m}"] = reference[f"baseline_{m}"]
        baselines[f"regression_{m}"] = reg_scores[m]

    best_sampler, best_steps = samplers[0], 8 if 8 in list(b.steps) else int(b.steps[-1])
    real = real_batch(dm.real, dm.features, int(cfg.data.eval_frames),
                      float(cfg.data.test_snr or 5.0), int(b.seed))
    if real is not None:
        with torch.no_grad():
            out = process.generate(network, real, sampler=best_sampler, steps=best_steps,
                                   generator=torch.Generator().manual_seed(int(b.seed)))
        real_scores = summarise(score_systems(real, out.mel, cfg))
        for m in ("si_sdr", "pesq", "estoi"):
            metrics[f"real_{m}_{best_sampler}_{best_steps}"] = real_scores[m]
            baselines[f"real_noisy_{m}"] = real_scores[f"noisy_{m}"]
            baselines[f"real_spectral_subtraction_{m}"] = real_scores[f"baseline_{m}"]
        metrics["real_n"] = int(real["x0"].shape[0])
    _write(curves, metrics, baselines, quick, best_sampler, best_steps, b.get("results_dir"))
    return {"metrics": metrics, "baselines": baselines}


def _write(curves: dict, metrics: dict, baselines: dict, quick: bool, best_sampler: str,
           best_steps: int, results_dir: str | None = None) -> None:
    out = Path(results_dir) if results_dir else results_io.RESULTS_DIR
    name = "audio_quick" if quick else "audio"
    record = results_io.make_record(name, metrics, baselines)
    rows = []
    for sampler, by_steps in curves.items():
        for steps, s in sorted(by_steps.items()):
            rows.append([sampler, steps, metrics[f"nfe_{sampler}_{steps}"], s["si_sdr"],
                         s["si_sdr_gain"], s["pesq"], s["estoi"], s["logmel_l1"]])
    for label, key in (("noisy input", "noisy"), ("spectral subtraction", "spectral_subtraction"),
                       ("regression (1 step)", "regression")):
        rows.append([label, "", "", baselines[f"{key}_si_sdr"],
                     baselines[f"{key}_si_sdr"] - baselines["noisy_si_sdr"],
                     baselines[f"{key}_pesq"], baselines[f"{key}_estoi"],
                     baselines[f"{key}_logmel_l1"]])
    body = results_io.markdown_table(["system", "steps", "NFE", "SI-SDR (dB)", "gain (dB)", "PESQ-WB",
                              "ESTOI", "log-mel L1"], rows)
    if "real_n" in metrics:
        body += (f"\n\nReal CMU ARCTIC clips ({metrics['real_n']} mixtures, pink / hum noise), "
                 f"{best_sampler} {best_steps} steps:\n\n" + results_io.markdown_table(
                     ["system", "SI-SDR (dB)", "PESQ-WB", "ESTOI"],
                     [["noisy", *[baselines[f"real_noisy_{m}"] for m in ("si_sdr", "pesq", "estoi")]],
                      ["spectral subtraction", *[baselines[f"real_spectral_subtraction_{m}"]
                                                 for m in ("si_sdr", "pesq", "estoi")]],
                      [metrics["objective"], *[metrics[f"real_{m}_{best_sampler}_{best_steps}"]
                                      for m in ("si_sdr", "pesq", "estoi")]]]))
    body += (f"\n\nTraining: {metrics['train_steps']} steps of the {metrics['objective']} "
             f"model in {metrics['train_seconds']} s through the toolkit's trainer (`toolkit "
             f"train --domain audio trainer.max_steps={metrics['train_steps']}`, EMA "
             f"{metrics['ema_decay']} weights); the regression baseline is "
             f"{metrics['regression_source']} ({metrics['regression_steps']} steps); "
             f"{metrics['n_test']} held-out clips (held-out sentences and voices) at "
             f"{metrics['test_snr_db']} dB input SNR.\n")
    results_io.write_results(record, body, out, title="Audio denoising" + (" (quick)" if quick else ""))
    _plot(curves, baselines, out / f"{name}.png")


def _plot(curves: dict, baselines: dict, png: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8), dpi=100)
    FigureCanvasAgg(fig)
    for i, (m, label) in enumerate((("si_sdr", "SI-SDR (dB)"), ("pesq", "PESQ-WB"),
                                    ("estoi", "ESTOI"))):
        ax = fig.add_subplot(1, 3, i + 1)
        for sampler, by_steps in curves.items():
            steps = sorted(by_steps)
            ax.plot(steps, [by_steps[s][m] for s in steps], marker="o", label=sampler)
        for key, style, name in (("noisy", ":", "noisy"), ("spectral_subtraction", "--",
                                 "spectral subtraction"), ("regression", "-.", "regression")):
            ax.axhline(baselines[f"{key}_{m}"], color="0.4", linestyle=style, label=name)
        ax.set(xscale="log", xlabel="sampling steps", ylabel=label)
        ax.set_xticks([1, 2, 4, 8, 16, 32], labels=["1", "2", "4", "8", "16", "32"])
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png)
