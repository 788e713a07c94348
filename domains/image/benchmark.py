"""`toolkit benchmark --domain image [--quick]`: residual diffusion against bicubic and regression.

0. Use opencv-doc's photos (data.py) when they are unpacked; with `benchmark.fetch_opencv` they
   are fetched first like `toolkit prepare --domain image` does (a failure is one line, and the
   benchmark goes on without them). The record names the training images it used.
1. Train the denoiser (`network.kind`) as a residual diffusion model and the same network as a
   one-step regression model, each for `benchmark.train_steps` steps (the same budget) through
   the toolkit's trainer (`train_for_benchmark`: what `toolkit train --domain image
   trainer.max_steps=N optim.decay=<benchmark.lr_decay> seed=<benchmark.seed>` does, EMA
   weights for sampling; runs under `benchmark.run_dir`, or a temporary folder). With
   `process.kind=refine` the model's own predictor is the regression baseline (no second run).
2. Super-resolve the held-out test images (whole, or centre crops of `benchmark.test_crop`) with
   every sampler of `benchmark.samplers` at every step count of `benchmark.steps` (same noise).
   With `benchmark.self_ensemble` = n > 1, the first sampler also runs at `benchmark.ensemble_steps`
   as a geometric self-ensemble over n symmetries (process.self_ensemble; rows "<sampler> xn",
   NFE = n x steps).
3. Score PSNR-Y, SSIM-Y (border = scale) and consistency (`metrics.py`) of each, of bicubic and of
   regression, each also after back-projection onto the input (suffix `_bp`). The headline is the
   best PSNR-Y at no more than 20 network evaluations (NFE).

Results go to benchmarks/results/image[_quick].{json,md,png} through the checkout's
diffusekit.core.app.results (the record names command, commit, machine and date); the PNG plots
quality against steps, and image[_quick]_grid.png shows bicubic | diffusion | ground truth.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from diffusekit.domains.image.figures import comparison_grid, quality_plot
from diffusekit.domains.image.metrics import image_metrics
from diffusekit.domains.image.process import SRSamples, back_project, self_ensemble
from diffusekit.core.app import results as results_io
from diffusekit.core.app.training.fit import train_for_benchmark

REPO_ROOT = Path(__file__).resolve().parents[2]
BACK_PROJECTION_ITERATIONS = 10


def _fetch_opencv(cfg: DictConfig) -> None:
    """opencv-doc's photos into the data cache, or one line saying why not (then without them)."""
    from diffusekit.core.errors import DataError
    from diffusekit.domains.image.data import fetch_opencv

    try:
        fetch_opencv(cfg.data)
    except DataError as exc:
        print(f"image benchmark: without opencv-doc's photos ({exc})", file=sys.stderr)


def _score(samples: SRSamples, batch: dict, degradation: Any, prefix: str = "") -> dict[str, float]:
    reference, low_res = batch["x0"], batch["cond"]["low_res"]
    out = {k: float(v.mean()) for k, v in
           image_metrics(samples.image, reference, low_res, degradation, prefix).items()}
    projected = back_project(samples.image, low_res, degradation,
                             BACK_PROJECTION_ITERATIONS).clamp(-1, 1)
    out.update({f"{k}_bp": float(v.mean()) for k, v in
                image_metrics(projected, reference, low_res, degradation, prefix).items()})
    return out


def _mean(dicts: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(d[k] for d in dicts) / len(dicts) for k in dicts[0]}


def run_benchmark(domain: Any, cfg: DictConfig) -> dict[str, Any]:
    """The benchmark (see the module docstring); returns the metrics dict it records."""
    b = cfg.benchmark
    quick = bool(cfg.get("quick", False))
    train_steps = int(b.quick_train_steps if quick else b.train_steps)
    crop = b.quick_test_crop if quick else b.test_crop
    cfg = OmegaConf.merge(cfg, {"data": {"test_crop": crop},  # ensembles: rows of their own
                                "process": {"tile": b.get("tile") or cfg.process.tile,
                                            "self_ensemble": 1}})
    if b.get("threads"):
        torch.set_num_threads(int(b.threads))
    if b.get("fetch_opencv"):
        _fetch_opencv(cfg)
    torch.manual_seed(int(b.seed))
    datamodule = domain.build_datamodule(cfg)
    datamodule.setup()
    train_images = list(datamodule.splits["train"])
    regression = domain.process(OmegaConf.merge(cfg, {"process": {"kind": "regression"}}))
    degradation = regression.degradation

    # both models: the toolkit's trainer, the same recipe and the same number of steps
    recipe = [f"seed={int(b.seed)}", f"optim.decay={b.lr_decay}"]
    diffusion = train_for_benchmark(domain, cfg, train_steps, b.run_dir, overrides=recipe)
    network, process = diffusion.network, diffusion.process
    shared = getattr(process, "two_networks", False)  # predict and refine: its predictor is
    if shared:                                        # the regression baseline (same run)
        regression_steps, regression_seconds, regression_loss = 0, 0.0, float("nan")
    else:
        baseline = train_for_benchmark(domain, cfg, train_steps, b.run_dir,
                                       overrides=[*recipe, "process.kind=regression"])
        regression_net, regression = baseline.network, baseline.process
        regression_steps, regression_seconds = train_steps, baseline.seconds
        regression_loss = baseline.final_loss()

    test = [batch for batch in datamodule.test_dataloader()]
    names = list(datamodule.datasets["test"].names)
    metrics: dict[str, Any] = {
        "train_steps": train_steps, "regression_steps": regression_steps,
        "train_seconds": diffusion.seconds, "regression_train_seconds": regression_seconds,
        "train_loss": diffusion.final_loss(), "regression_train_loss": regression_loss,
        "trainer": "toolkit (train_for_benchmark)", "lr_decay": str(b.lr_decay),
        "ema_decay": float(cfg.ema.decay), "torch_threads": torch.get_num_threads(),
        "network": OmegaConf.to_container(cfg.network),
        "process": OmegaConf.to_container(OmegaConf.masked_copy(cfg.process, [
            "kind", "prediction", "weighting", "t_sampler", "t_sampler_options", "schedule"])),
        "batch_size": int(cfg.data.batch_size), "patch_size": int(cfg.data.patch_size),
        "lr": float(cfg.optim.lr), "warmup_steps": int(cfg.optim.warmup_steps),
        "n_train_images": len(train_images), "train_images": train_images,
        "test_images": names, "test_crop": crop,
        "test_pixels": [list(batch["x0"].shape[-2:]) for batch in test],
    }
    with torch.no_grad():
        bicubic = _mean([_score(SRSamples(up.clamp(-1, 1), up, low_res, batch["x0"]), batch,
                                degradation)
                         for batch in test for low_res, up in [regression.conditioning(batch)]])
        regression_out = [process.predictor_samples(network, batch) if shared else
                          regression.generate(regression_net, batch) for batch in test]
        regression_scores = _mean([_score(s, batch, degradation)
                                   for s, batch in zip(regression_out, test)])
        rows, grid_samples = [], None
        ensemble = int(b.get("self_ensemble") or 1)
        settings = [(s, int(n), 1) for s in b.samplers for n in b.steps]
        if ensemble > 1:
            settings += [(b.samplers[0], int(n), ensemble) for n in b.ensemble_steps]
        for sampler, steps, transforms in tqdm(settings, desc="sampling", unit="setting"):
            generator = torch.Generator().manual_seed(int(b.seed))
            t0 = time.perf_counter()
            outs = [self_ensemble(process, network, batch, transforms, sampler=sampler,
                                  steps=steps, generator=generator) for batch in test]
            seconds = time.perf_counter() - t0
            scores = _mean([_score(s, batch, degradation) for s, batch in zip(outs, test)])
            name = sampler if transforms == 1 else f"{sampler} x{transforms}"
            rows.append({"sampler": name, "steps": steps, "nfe": steps * transforms,
                         "seconds": round(seconds, 2), **scores})
            if name == b.samplers[0] and steps == 8:
                grid_samples = outs
    metrics["rows"] = rows
    best = max((r for r in rows if r["nfe"] <= 20), key=lambda r: r["psnr_y"])
    metrics["best_at_most_20_steps"] = {k: best[k] for k in ("sampler", "steps", "nfe", "psnr_y",
                                                              "ssim_y", "consistency")}
    metrics["psnr_gain_over_bicubic"] = best["psnr_y"] - bicubic["psnr_y"]
    metrics["target_psnr_gain_1db"] = metrics["psnr_gain_over_bicubic"] >= 1.0
    metrics["target_consistency_40db"] = best["consistency"] > 40.0
    baselines = {"bicubic": bicubic, "regression": regression_scores}
    _write(cfg, quick, metrics, baselines, rows, grid_samples or outs)
    return {"metrics": metrics, "baselines": baselines}


def _write(cfg: DictConfig, quick: bool, metrics: dict, baselines: dict, rows: list[dict],
           samples: list[SRSamples]) -> None:
    name = "image_quick" if quick else "image"
    out_dir = Path(cfg.benchmark.results_dir) if cfg.benchmark.get("results_dir") else (
        results_io.RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = ["psnr_y", "ssim_y", "consistency", "psnr_y_bp", "consistency_bp"]
    table_rows = [[r["sampler"], r["steps"], r["nfe"], *(round(r[k], 3) for k in keys),
                   r["seconds"]] for r in rows]
    table_rows += [[name, "-", 1 if name == "regression" else 0,
                    *(round(v[k], 3) for k in keys), "-"] for name, v in baselines.items()]
    headers = ["sampler", "steps", "NFE", "PSNR-Y", "SSIM-Y", "consistency", "PSNR-Y (bp)",
               "consistency (bp)", "seconds"]
    title = (f"x{cfg.degradation.scale} SR on {len(metrics['test_images'])} held-out images "
             f"({', '.join(metrics['test_images'])}), {metrics['train_steps']} training steps "
             f"on {metrics['n_train_images']} training images")
    quality_plot(rows, baselines, out_dir / f"{name}.png", title)
    same_size = len({tuple(s.image.shape[-2:]) for s in samples}) == 1
    first = SRSamples(*(torch.cat([getattr(s, k) for s in samples]) for k in
                        ("image", "bicubic", "low_res", "reference"))) if same_size else samples[0]
    comparison_grid(first, out_dir / f"{name}_grid.png", int(cfg.output.zoom))
    body = [title, "", results_io.markdown_table(headers, table_rows, digits=4), "",
            f"Best at <= 20 network evaluations: {metrics['best_at_most_20_steps']}; PSNR-Y gain "
            "over bicubic "
            f"{metrics['psnr_gain_over_bicubic']:.3f} dB (target >= 1.0: "
            f"{'met' if metrics['target_psnr_gain_1db'] else 'not met'}); consistency target > 40 dB: "
            f"{'met' if metrics['target_consistency_40db'] else 'not met'}.",
            f"Training: the toolkit's trainer (`toolkit train --domain image "
            f"trainer.max_steps={metrics['train_steps']} optim.decay={metrics['lr_decay']}`, "
            f"EMA {metrics['ema_decay']} weights): diffusion {metrics['train_steps']} steps in "
            f"{metrics['train_seconds']} s, regression {metrics['regression_steps']} steps in "
            f"{metrics['regression_train_seconds']} s. "
            "(bp): after 10 iterations of back-projection onto the input.",
            f"![quality vs steps]({name}.png)", f"![bicubic | diffusion | ground truth]({name}_grid.png)"]
    record = results_io.make_record(name, metrics, baselines)
    results_io.write_results(record, "\n".join(body), out_dir, title=f"Image domain benchmark ({name})")
