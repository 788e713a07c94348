"""The image domain's repair benchmark: inpainting held-out photos
(`toolkit benchmark --domain image --repair [--quick]`).

1. the base: a hole model of the domain (`degradation.kind=holes`, `repair.train_overrides`), the
   same LR network and residual diffusion as the super-resolution model, trained by the toolkit's
   trainer on random patches of the training photos, each with a random hole (degradation.py);
2. the test set: `repair.n_test` seeded crops of `repair.crop` pixels from the held-out test photos
   (`data.test_images`, never trained on), each damaged twice: a centre box of
   `repair.box_fraction` of each side and `repair.strokes` random brush strokes;
3. the repairs: `toolkit inpaint`'s path (`repair.read_damaged`'s condition, the process's
   `inpaint`) with replacement at several step counts and samplers, RePaint, reconstruction
   guidance, and the mean of several one-step repairs (an estimate of the posterior mean, what
   PSNR rewards; `core.app.repair.sweep_settings`, `mean_of_draws`);
4. the baselines: biharmonic inpainting (scikit-image), the smooth fill the model starts from
   (pull-push, `degradation.smooth_fill`), and with `repair.regression` the regression baseline:
   the same network and recipe trained as a one-step regression (`process.kind=regression`)
   for the same steps, given the same condition (does the diffusion add anything over it?);
5. scores on the hole only: PSNR-Y and SSIM-Y (BT.601 luma of the 8-bit images, as the
   super-resolution benchmark scores).

Target (issue 18): hole PSNR-Y above biharmonic's at <= `repair.max_nfe` network calls. The record
goes to benchmarks/results/image_repair[_quick].{json,md,png}.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from omegaconf import DictConfig
from torch import Tensor

from diffusekit.core.app import results as results_io
from diffusekit.core.app.repair import (BenchmarkRun, Setting, benchmark_masks, biharmonic,
                                        generator_for, hole_scores, inpaint_batch, mean_of_draws,
                                        nfe_panel, sweep_settings)
from diffusekit.core.app.training.inference import sampling_device
from diffusekit.core.layers import parameter_device
from diffusekit.domains.image.degradation import quantize, rgb_to_y, smooth_fill

MASK_KINDS = ("box", "strokes")


def held_out_crops(cfg: DictConfig, n: int, size: int, seed: int) -> tuple[Tensor, list[str]]:
    """n seeded size x size crops [n, 3, S, S] in [-1, 1] of the test photos (`data.test_images`),
    taken in turn from each, and the photo each came from."""
    from diffusekit.domains.image.data import load_images, split_images, to_float

    images = load_images(cfg.data)
    names = split_images(list(images.images), cfg.data)["test"]
    generator = torch.Generator().manual_seed(seed)
    crops, sources = [], []
    for i in range(n):
        name = names[i % len(names)]
        image = images.images[name]
        h, w = image.shape[-2:]
        top = int(torch.randint(0, h - size + 1, (), generator=generator))
        left = int(torch.randint(0, w - size + 1, (), generator=generator))
        crops.append(to_float(image[:, top:top + size, left:left + size]))
        sources.append(name)
    return torch.stack(crops), sources


def luma_scores(repaired: Tensor, truth: Tensor, fill: Tensor) -> dict[str, float]:
    """Mean hole PSNR-Y / SSIM-Y of RGB images [N, 3, S, S] in [-1, 1] (8-bit, BT.601 luma)."""
    y = lambda x: rgb_to_y(quantize(x))  # noqa: E731
    return {k: float(v.mean()) for k, v in hole_scores(y(repaired), y(truth), fill).items()}


def _damaged_batch(degradation: Any, truth: Tensor, known: Tensor) -> dict:
    """The model's batch for crops `truth` [B, 3, S, S] with `known` [B, 1, S, S], as `toolkit
    inpaint` builds it: "x0" the hole filled by pull-push from the known pixels alone, "cond"
    the condition made from that fill."""
    filled = smooth_fill(truth, known)
    return {"x0": filled, "cond": {"low_res": degradation.damaged_condition(filled, known)}}


def repair_crops(network: Any, process: Any, truth: Tensor, fill: Tensor, setting: Setting,
                 seed: int, batch_size: int) -> Tensor:
    """Repairs [N, 3, S, S] of `truth` where `fill`, as `toolkit inpaint` makes them (the
    condition from the known pixels alone), in batches, noise seeded with `seed`."""
    generator = generator_for(network, seed)
    out = []
    for start in range(0, len(truth), batch_size):
        known = ~fill[start:start + batch_size]
        batch = _damaged_batch(process.degradation, truth[start:start + batch_size], known)
        samples = inpaint_batch(network, process, batch, known, method=setting.instance(),
                                sampler=setting.sampler, steps=setting.steps, generator=generator)
        out.append(samples.image)  # the known pixels are the fill's, i.e. the truth's, exactly
    return torch.cat(out).clamp(-1, 1)


def regression_crops(model: Any, truth: Tensor, fill: Tensor, batch_size: int) -> Tensor:
    """The regression baseline's repairs [N, 3, S, S]: one call on the condition `repair_crops`
    makes, on the device of `model.network`, its output taken in the hole (the known pixels
    are the truth's)."""
    device = parameter_device(model.network)
    out = []
    for start in range(0, len(truth), batch_size):
        known = ~fill[start:start + batch_size]
        batch = _damaged_batch(model.process.degradation, truth[start:start + batch_size], known)
        with torch.no_grad():
            image = model.process.generate(model.network, move_data_to_device(batch, device)).image
        out.append(torch.where(known, batch["x0"], image.cpu()))
    return torch.cat(out).clamp(-1, 1)


def run_repair_benchmark(domain: Any, cfg: DictConfig) -> dict[str, Any]:
    """The benchmark of the module docstring; writes benchmarks/results/image_repair[_quick].*
    (or `repair.results_dir`) and returns {"metrics", "baselines"}."""
    from diffusekit.core.app.training.fit import train_for_benchmark
    from diffusekit.core.errors import DataError
    from diffusekit.domains.image.data import fetch_opencv

    r = cfg.repair
    run = BenchmarkRun.start(cfg)
    if cfg.benchmark.get("fetch_opencv"):
        try:
            fetch_opencv(cfg.data)
        except DataError as exc:
            print(f"image repair benchmark: without opencv-doc's photos ({exc})", file=sys.stderr)
    size, batch_size = int(r.crop), int(r.batch_size)
    truth, sources = held_out_crops(cfg, run.n_test, size, run.seed)
    masks = benchmark_masks(len(truth), size, r, run.seed)
    recipe = [*[str(o) for o in r.train_overrides], f"seed={run.seed}",
              f"optim.decay={cfg.benchmark.lr_decay}"]
    rows: list[dict[str, Any]] = []
    shown: dict[str, dict[str, Tensor]] = {kind: {} for kind in MASK_KINDS}
    with tempfile.TemporaryDirectory(prefix="diffusekit-image-repair-") as scratch:
        work = Path(r.run_dir) if r.get("run_dir") else Path(scratch)
        trained = train_for_benchmark(domain, cfg, run.train_steps, work, overrides=recipe,
                                      own_section="repair")
        regression = (train_for_benchmark(domain, cfg, run.train_steps, work,
                                          overrides=[*recipe, "process.kind=regression"],
                                          own_section="repair")
                      if r.get("regression") else None)
    for model in (trained, regression):  # the sweeps run where sample.device says
        if model is not None:
            model.network.to(sampling_device(cfg))
    for kind in MASK_KINDS:
        for setting in sweep_settings(r):
            started = time.perf_counter()
            out = mean_of_draws(lambda s: repair_crops(trained.network, trained.process, truth,
                                                       masks[kind], setting, s, batch_size),
                                setting.draws, run.seed + 1)
            rows.append({"mask": kind, **setting.fields(), **luma_scores(out, truth, masks[kind]),
                         "seconds": round(time.perf_counter() - started, 1)})
            shown[kind][setting.label] = out
    baselines: dict[str, Any] = {}
    for kind in MASK_KINDS:
        fill = masks[kind]
        damaged = torch.where(fill, torch.zeros_like(truth), truth)
        for name, method in (("biharmonic", biharmonic), ("smooth_fill", _smooth_fill)):
            started = time.perf_counter()
            out = method(damaged, fill)
            baselines[f"{name}_{kind}"] = {**luma_scores(out, truth, fill),
                                           "seconds": round(time.perf_counter() - started, 1)}
            shown[kind][name] = out
        if regression is not None:
            started = time.perf_counter()
            out = regression_crops(regression, truth, fill, batch_size)
            baselines[f"regression_{kind}"] = {**luma_scores(out, truth, fill), "nfe": 1,
                                               "seconds": round(time.perf_counter() - started, 1)}
        shown[kind]["damaged"] = torch.where(fill, torch.full_like(truth, -1.0), truth)
    metrics = {"rows": rows, "train_steps": run.train_steps, "train_seconds": trained.seconds,
               "regression_train_seconds": None if regression is None else regression.seconds,
               "n_test": len(truth), "crop": size, "test_images": sorted(set(sources)),
               "train_overrides": [str(o) for o in r.train_overrides], "quick": run.quick,
               "hole_fraction": {k: float(masks[k].double().mean()) for k in MASK_KINDS},
               **_targets(rows, baselines, int(r.max_nfe)), **run.clock()}
    _write(cfg, run, metrics, baselines, shown, truth)
    return {"metrics": metrics, "baselines": baselines}


def _smooth_fill(damaged: Tensor, fill: Tensor) -> Tensor:
    return smooth_fill(damaged, ~fill)


def _targets(rows: list[dict], baselines: dict, max_nfe: int) -> dict[str, Any]:
    """Per mask kind: the best hole PSNR-Y of a setting at <= max_nfe NFE and whether it beats
    biharmonic's."""
    out: dict[str, Any] = {}
    for kind in MASK_KINDS:
        ref = baselines[f"biharmonic_{kind}"]["hole_psnr"]
        best = max((row for row in rows if row["mask"] == kind and row["nfe"] <= max_nfe),
                   key=lambda row: row["hole_psnr"])
        out[f"target_{kind}"] = {"biharmonic_hole_psnr": ref, "best": best["setting"],
                                 "best_hole_psnr": best["hole_psnr"],
                                 "beats_biharmonic": best["hole_psnr"] > ref}
    return out


def _write(cfg: DictConfig, run: BenchmarkRun, metrics: dict, baselines: dict,
           shown: dict[str, dict[str, Tensor]], truth: Tensor) -> None:
    r = cfg.repair
    name, out_dir = run.record_place(cfg, "image")
    title = (f"Photo repair: {metrics['n_test']} crops of {metrics['crop']} px of the held-out "
             f"photos, a centre box and random strokes, {metrics['train_steps']} training steps")
    _figure(out_dir / f"{name}.png", metrics, baselines, shown, truth, int(r.figure_rows), title)
    headers = ["mask", "setting", "NFE", "hole PSNR-Y (dB)", "hole SSIM-Y", "seconds"]
    table = [[row["mask"], row["setting"], row["nfe"], row["hole_psnr"], row["hole_ssim"],
              row["seconds"]] for row in metrics["rows"]]
    for kind in MASK_KINDS:
        for key, label in (("biharmonic", "biharmonic (scikit-image)"),
                           ("smooth_fill", "smooth fill (pull-push, the model's start)"),
                           ("regression", "regression baseline (same network and steps)")):
            b = baselines.get(f"{key}_{kind}")
            if b is not None:
                table.append([kind, label, b.get("nfe", 0), b["hole_psnr"], b["hole_ssim"],
                              b["seconds"]])
    lines = [title, "",
             f"The base: the image domain with {', '.join(metrics['train_overrides'])} (a hole "
             f"model), trained on patches of the training photos. Test photos: "
             f"{', '.join(metrics['test_images'])}. Holes: "
             + ", ".join(f"{k} {100 * v:.1f}% of the pixels" for k, v in
                         metrics["hole_fraction"].items())
             + ". Scores on the hole only (PSNR of 8-bit BT.601 luma, SSIM averaged over the "
             "hole). NFE counts a guided call as 3 network calls.", "",
             results_io.markdown_table(headers, table, digits=4), ""]
    for kind in MASK_KINDS:
        t = metrics[f"target_{kind}"]
        lines.append(f"- {kind}: biharmonic {t['biharmonic_hole_psnr']:.2f} dB; best repair at <= "
                     f"{int(r.max_nfe)} NFE {t['best_hole_psnr']:.2f} dB ({t['best']}): target "
                     f"{'met' if t['beats_biharmonic'] else 'not met'}.")
        reg = baselines.get(f"regression_{kind}")
        if reg is not None:
            gain = t["best_hole_psnr"] - reg["hole_psnr"]
            lines.append(f"  Its regression baseline (the same network and {metrics['train_steps']} "
                         f"steps, one call): {reg['hole_psnr']:.2f} dB, so the diffusion "
                         + (f"adds {gain:.2f} dB over it." if gain > 0 else
                            f"adds nothing over it ({gain:.2f} dB)."))
    lines += ["", run.timing_line(metrics)]
    if metrics["regression_train_seconds"] is not None:
        lines.append(f"The regression baseline's training: {metrics['train_steps']} steps in "
                     f"{metrics['regression_train_seconds']} s (over all its starts).")
    lines += ["", f"![damaged, repaired, truth]({name}.png)"]
    record = results_io.make_record(name, metrics, baselines)
    results_io.write_results(record, "\n".join(lines), out_dir, title=f"Photo repair ({name})")


def _mosaic(parts: list[Tensor]) -> np.ndarray:
    """Rows of images: parts[j][i] [3, S, S] in [-1, 1] at row i, column j -> uint8 H x W x 3."""
    rows = [torch.cat([part[i] for part in parts], dim=-1) for i in range(len(parts[0]))]
    grid = quantize(torch.cat(rows, dim=-2)).to(torch.uint8)
    return grid.permute(1, 2, 0).numpy()


def _figure(path: Path, metrics: dict, baselines: dict, shown: dict[str, dict[str, Tensor]],
            truth: Tensor, rows: int, title: str) -> None:
    """Left, per mask kind: crops, one row each: damaged | biharmonic | the best repair | truth.
    Right: hole PSNR-Y against NFE, a line per method and sampler, biharmonic and the smooth
    fill as horizontal lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 7), dpi=100)
    FigureCanvasAgg(fig)
    n = min(rows, len(truth))
    for i, kind in enumerate(MASK_KINDS):
        best = metrics[f"target_{kind}"]["best"]
        ax = fig.add_subplot(2, 3, 1 + 3 * i)
        ax.imshow(_mosaic([shown[kind]["damaged"][:n], shown[kind]["biharmonic"][:n],
                           shown[kind][best][:n], truth[:n]]))
        ax.set_title(f"{kind}: damaged | biharmonic | {best} | truth", fontsize=7)
        ax.set_axis_off()
        ax = fig.add_subplot(2, 3, (2 + 3 * i, 3 + 3 * i))
        lines = {"biharmonic": baselines[f"biharmonic_{kind}"]["hole_psnr"],
                 "smooth fill": baselines[f"smooth_fill_{kind}"]["hole_psnr"]}
        if f"regression_{kind}" in baselines:
            lines["regression (1 call)"] = baselines[f"regression_{kind}"]["hole_psnr"]
        nfe_panel(ax, metrics["rows"], "hole_psnr", lambda row, kind=kind: row["mask"] == kind,
                  lines)
        ax.set(ylabel="hole PSNR-Y (dB)", title=kind)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
