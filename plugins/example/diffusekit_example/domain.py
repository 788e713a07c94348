"""The example domain: everything the toolkit needs to train, sample, evaluate and benchmark it.

`ShapesDomain` implements the `diffusekit.plugins.Domain` methods and nothing else; training
(`toolkit train --domain example`), sampling, checkpoints and the command line come from the
toolkit. Each method builds one part from the resolved config (see config.yaml):

    build_datamodule(cfg)  -> data.ShapesDataModule        batches {"x0": [B, 2], "cond": {"label"}}
    build_network(cfg)     -> network.PointDenoiser        net(x_in, c_noise, label=...) -> [B, 2]
    process(cfg)           -> core.process.GaussianDiffusion   schedule, prediction, loss, sampler
    evaluate(batch, samples, cfg)      sliced W2 (pooled, per shape, data floor), k-NN precision/recall
    write_samples(samples, out, cfg)   samples.png (data vs samples), samples.npy, samples.csv
    benchmark(cfg)                     train briefly, compare samplers x steps

The benchmark trains through the toolkit's own trainer (`train_for_benchmark`, the trainer of
`toolkit train`), so it measures the model a user gets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor

from diffusekit.core.process import GaussianDiffusion
from diffusekit.plugins import Domain
from diffusekit_example.metrics import precision_recall, sliced_wasserstein_by_label
from diffusekit_example.network import PointDenoiser
from diffusekit_example.shapes import ShapeLayout


def _labels(batch: dict) -> Tensor | None:
    cond = batch.get("cond") or {}
    label = cond.get("label")
    return None if label is None else label.detach().cpu()


class ShapesDomain(Domain):
    """2-D points of toy shapes, conditioned on the shape's label (see `shapes.SHAPES`)."""

    name = "example"
    description = "2-D points of toy shapes (moons, spiral, rings, gaussians); an example plugin"

    def build_datamodule(self, cfg: DictConfig) -> Any:
        from diffusekit_example.data import ShapesDataModule  # Lightning: imported when needed

        return ShapesDataModule.from_config(cfg)

    def build_network(self, cfg: DictConfig) -> PointDenoiser:
        n = cfg.network
        return PointDenoiser(
            n_labels=len(cfg.data.shapes) if cfg.data.conditional else 0, hidden=int(n.hidden),
            depth=int(n.depth), n_frequencies=int(n.n_frequencies),
            max_frequency=float(n.max_frequency), x_frequencies=int(n.x_frequencies),
            x_max_frequency=float(n.x_max_frequency), label_dropout=float(n.label_dropout))

    def process(self, cfg: DictConfig) -> GaussianDiffusion:
        return GaussianDiffusion.from_config(cfg.process)

    def evaluate(self, batch: dict, samples: Tensor, cfg: DictConfig) -> dict[str, float]:
        """Metrics of `samples` [B, 2] generated for `batch` (its "x0" are held-out points, its
        labels the classes the samples were asked for):

        sw:          sliced W2 between samples and batch["x0"] (data units; lower is better);
        sw_<shape>:  the same per shape (only when every shape has >= 2 points in the batch);
        sw_floor:    sliced W2 between batch["x0"] and a fresh draw of the true distribution
                     with the same labels: what a perfect model scores at this batch size;
        precision, recall: k-NN precision / recall (Kynkäänniemi et al. 2019), in [0, 1];
        label_accuracy: fraction of samples in the cell of the shape they were asked for
                     (conditional batches only).
        """
        e, layout = cfg.evaluate, ShapeLayout.from_config(cfg.data)
        shapes = list(layout.shapes)
        reference = batch["x0"].detach().cpu().double()
        samples = samples.detach().cpu().double().reshape(reference.shape)
        labels = _labels(batch)
        counts = torch.bincount(labels, minlength=len(shapes)) if labels is not None else None
        per_shape = counts is not None and bool((counts >= 2).all())
        out = sliced_wasserstein_by_label(samples, reference, labels if per_shape else None,
                                          shapes, int(e.n_projections), int(e.seed))
        redraw_labels = labels if labels is not None else torch.randint(
            len(shapes), (reference.shape[0],), generator=torch.Generator().manual_seed(int(e.seed)))
        fresh, _ = layout.sample(0, int(e.seed) + 1000, redraw_labels)
        out["sw_floor"] = sliced_wasserstein_by_label(fresh.double(), reference, None, shapes,
                                                      int(e.n_projections), int(e.seed))["sw"]
        k = min(int(e.k), reference.shape[0] - 1)
        if k >= 1:
            out.update(precision_recall(samples, reference, k))
        if labels is not None:
            out["label_accuracy"] = float((layout.nearest_label(samples) == labels).double().mean())
        return out

    def write_samples(self, samples: Tensor, out_dir: Path, cfg: DictConfig) -> list[Path]:
        """samples.png (held-out data beside the samples), samples.npy and samples.csv ([N, 2])."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot, no global backend
        from matplotlib.figure import Figure

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        points = samples.detach().cpu().double().reshape(-1, 2).numpy()
        npy, csv, png = out_dir / "samples.npy", out_dir / "samples.csv", out_dir / "samples.png"
        np.save(npy, points)
        np.savetxt(csv, points, delimiter=",", header="x,y", comments="", fmt="%.6f")

        layout = ShapeLayout.from_config(cfg.data)
        reference, _ = layout.sample(500, int(cfg.data.seed) + 2)
        lim = layout.extent
        fig = Figure(figsize=(8, 4), dpi=100)
        FigureCanvasAgg(fig)
        for i, (title, pts, colour) in enumerate([("held-out data", reference.numpy(), "0.4"),
                                                  (f"samples (n={len(points)})", points, "C0")]):
            ax = fig.add_subplot(1, 2, i + 1)
            ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, color=colour, linewidths=0)
            ax.set(title=title, xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")
            ax.tick_params(labelsize=7)
        fig.tight_layout()
        fig.savefig(png)
        return [png, npy, csv]

    def finetune_target(self, cfg: DictConfig) -> dict[str, Any]:
        """The customisation benchmark's target: label 3's cell holds a checkerboard instead of
        the eight Gaussians (a shape the base never saw), with 10% of the training points."""
        shapes = list(cfg.data.shapes)
        shapes[-1] = "checkerboard"
        return {"overrides": [f"data.shapes=[{', '.join(shapes)}]",
                              f"data.n_train={max(1, int(cfg.data.n_train) // 10)}"],
                "metric": "sw", "higher_is_better": False}

    def benchmark(self, cfg: DictConfig) -> dict[str, Any]:
        """Train for `benchmark.train_steps` steps with the toolkit's trainer (as `toolkit train
        --domain example trainer.max_steps=N` does; EMA weights), then score every sampler of
        `benchmark.samplers` at every step count of `benchmark.steps` on fresh held-out points:
        sw_<sampler>_<steps> (and nfe_, precision_, recall_, label_accuracy_), sw_floor,
        train_seconds, train_loss. With `quick` (`toolkit benchmark --quick`), the `quick_*`
        settings instead."""
        from diffusekit.core.app.training.fit import train_for_benchmark  # imports Lightning

        b, d = cfg.benchmark, cfg.data
        quick = bool(cfg.get("quick", False))  # `toolkit benchmark --quick`
        train_steps = int(b.quick_train_steps if quick else b.train_steps)
        step_counts = list(b.quick_steps if quick else b.steps)
        trained = train_for_benchmark(self, cfg, train_steps, b.run_dir,
                                      overrides=[f"seed={int(b.seed)}"])
        network, process = trained.network, trained.process
        metrics: dict[str, Any] = {"train_seconds": trained.seconds,
                                   "train_loss": trained.final_loss()}

        x0, label = ShapeLayout.from_config(d).sample(int(b.n_per_shape), int(d.seed) + 3)
        batch = {"x0": x0, "cond": {"label": label}} if d.conditional else {"x0": x0}
        calls = []
        hook = network.register_forward_hook(lambda *_: calls.append(1))  # counts network calls
        try:
            for sampler in b.samplers:
                for steps in step_counts:
                    calls.clear()
                    generator = torch.Generator().manual_seed(int(b.seed))
                    with torch.no_grad():
                        samples = process.generate(network, batch, sampler=sampler,
                                                   steps=int(steps), generator=generator)
                    scores = self.evaluate(batch, samples, cfg)
                    key = f"{sampler}_{steps}"
                    metrics[f"sw_{key}"] = scores["sw"]
                    metrics[f"nfe_{key}"] = len(calls)
                    metrics[f"precision_{key}"] = scores.get("precision")
                    metrics[f"recall_{key}"] = scores.get("recall")
                    if "label_accuracy" in scores:
                        metrics[f"label_accuracy_{key}"] = scores["label_accuracy"]
                    metrics["sw_floor"] = scores["sw_floor"]
        finally:
            hook.remove()
        return metrics
