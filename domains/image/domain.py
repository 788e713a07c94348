"""The image domain: x4 super-resolution of photographs with a residual SR3 diffusion.

`ImageDomain` implements the `diffusekit.plugins.Domain` methods; training (`toolkit train
--domain image`), sampling, checkpoints and the command line come from the toolkit:

    prepare(cfg)           unpacks Debian opencv-doc's photos into the data cache (data.fetch_opencv)
    build_datamodule(cfg)  -> data.SRDataModule     {"x0": HR, "cond": {"low_res": LR}}
    build_network(cfg)     -> network.LRSRNet / SRUNet  net(x_in, c_noise, upsampled=up_s(LR))
    process(cfg)           -> process.ResidualDiffusion (or Regression, PredictRefine: `process.kind`)
    evaluate(batch, samples, cfg)      PSNR-Y, SSIM-Y, consistency of the samples, of bicubic,
                                       and of a regression run when `evaluate.regression_run` is set
    write_samples(samples, out, cfg)   sr/bicubic/low-res/reference PNGs and grid.png
    finetune_target(cfg)               pages of text, `benchmark --finetune`'s target (documents.py)
    read_damaged / write_repaired      `toolkit inpaint`: a photo + --mask / --box (repair.py)
    repair_benchmark(cfg)              `--repair`: a hole model against biharmonic on held-out
                                       photos (repair_benchmark.py)
    benchmark(cfg)                     see `benchmark.py`
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig

from diffusekit.core.errors import RunDirError
from diffusekit.core.regeneration import PredictorDenoiser
from diffusekit.domains.image.degradation import degradation_of
from diffusekit.domains.image.figures import comparison_grid, save_png
from diffusekit.domains.image.metrics import image_metrics
from diffusekit.domains.image.network import NETWORKS
from diffusekit.domains.image.process import PROCESSES, SRSamples, build_process
from diffusekit.plugins import Damaged, Domain, Region


class ImageDomain(Domain):
    """x4 super-resolution of natural photographs (SR3-style residual diffusion)."""

    name = "image"
    description = "x4 super-resolution of photographs: SR3-style residual diffusion (LR net or UNet)"
    # LoRA's default targets (adapter.targets): every convolution of the LR network, from the
    # stem that reads the inputs to the head that writes the output (4.7% of its parameters at
    # rank 4); the FiLM and noise-embedding Linears stay frozen
    adapter_targets = ("stem", "body.*.conv1", "body.*.conv2", "tail", "head")
    control_blocks = ("body.*",)  # a ControlNet joins every residual block of the LR trunk
    inpaint_regions = ("mask", "box")  # toolkit inpaint: a mask image or boxes, in pixels

    def __init__(self) -> None:
        self._regression: tuple[str, Any, Any] | None = None  # (run path, network, process)

    def prepare(self, cfg: DictConfig) -> None:
        """Fetch opencv-doc's photos into the data cache (once; not with `data.opencv_dir` or
        `data.folder` set), then read every source and print the split."""
        from diffusekit.domains.image.data import fetch_opencv

        folder = fetch_opencv(cfg.data)
        if folder is not None:
            print(f"image data: opencv-doc's photos are in {folder}")
        super().prepare(cfg)

    def build_datamodule(self, cfg: DictConfig) -> Any:
        from diffusekit.domains.image.data import SRDataModule  # Lightning: imported when needed

        return SRDataModule.from_config(cfg, degradation_of(cfg))

    def build_network(self, cfg: DictConfig) -> torch.nn.Module:
        """The denoiser `network.kind` names (network.NETWORKS: unet | lr); a `PredictorDenoiser`
        pair of two of them for a process that needs two (process.kind=refine)."""
        build = NETWORKS.get(str(cfg.network.get("kind", "unet")))
        degradation = degradation_of(cfg)
        if getattr(PROCESSES.get(str(cfg.process.kind)), "two_networks", False):
            return PredictorDenoiser(build(cfg.network, degradation),
                                     build(cfg.network, degradation))
        return build(cfg.network, degradation)

    def process(self, cfg: DictConfig) -> Any:
        """The `process.kind` process, wrapped in a `SelfEnsemble` when `process.self_ensemble`
        asks for more than one symmetry (`process.build_process`)."""
        return build_process(cfg)

    def _regression_model(self, cfg: DictConfig) -> tuple[Any, Any] | None:
        path = cfg.evaluate.get("regression_run")
        if not path:
            return None
        if self._regression is None or self._regression[0] != str(path):
            from diffusekit.core.app.training.inference import load_run
            from diffusekit.core.app.training.runs import RunDir

            network, process, run_cfg = load_run(self, RunDir.open(str(path)))
            if run_cfg.process.kind != "regression":
                raise RunDirError(f"evaluate.regression_run {str(path)!r} was trained with "
                                  f"process.kind={run_cfg.process.kind}, not regression")
            self._regression = (str(path), network, process)
        return self._regression[1], self._regression[2]

    def evaluate(self, batch: dict, samples: SRSamples, cfg: DictConfig) -> dict[str, float]:
        """Mean over the batch of psnr_y, ssim_y, consistency (dB) of the samples, and the same
        with the prefixes bicubic_ and (with `evaluate.regression_run`) regression_."""
        degradation = degradation_of(cfg)
        reference = batch["x0"].to(samples.image.device)
        low_res = samples.low_res
        scores = image_metrics(samples.image, reference, low_res, degradation)
        scores.update(image_metrics(samples.bicubic, reference, low_res, degradation, "bicubic_"))
        regression = self._regression_model(cfg)
        if regression is not None:
            network, process = regression
            with torch.no_grad():
                out = process.generate(network, batch)
            scores.update(image_metrics(out.image, reference, low_res, degradation, "regression_"))
        return {k: float(v.detach().mean()) for k, v in scores.items()}

    def write_samples(self, samples: SRSamples, out_dir: Path, cfg: DictConfig) -> list[Path]:
        """sr-<i>.png, bicubic-<i>.png, low_res-<i>.png, reference-<i>.png (when known) and
        grid.png (bicubic | diffusion | ground truth with zoomed crops)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        degradation = degradation_of(cfg)
        paths = []
        for i in range(len(samples)):
            paths.append(save_png(samples.image[i], out_dir / f"sr-{i:03d}.png"))
            paths.append(save_png(samples.bicubic[i], out_dir / f"bicubic-{i:03d}.png"))
            paths.append(save_png(degradation.view(samples.low_res[i:i + 1])[0],
                                  out_dir / f"low_res-{i:03d}.png"))
            if samples.reference is not None:
                paths.append(save_png(samples.reference[i], out_dir / f"reference-{i:03d}.png"))
        o = cfg.output
        paths.append(comparison_grid(samples, out_dir / "grid.png", int(o.zoom), int(o.max_images),
                                     base_name=degradation.base_name))
        return paths

    def read_damaged(self, path: Path, region: Region, cfg: DictConfig) -> Damaged:
        """A photo and the pixels to fill; the low resolution is made from the photo with the
        hole filled smoothly from its surroundings, never from what is missing (repair.py)."""
        from diffusekit.domains.image.repair import read_damaged

        return read_damaged(path, region, cfg)

    def repair_mean(self) -> Callable[[list[SRSamples]], SRSamples]:
        """`toolkit inpaint --average K`: the K repairs' images averaged (the rest of the first's)."""
        return lambda draws: replace(draws[0], image=torch.stack([d.image for d in draws]).mean(0))

    def write_repaired(self, samples: SRSamples, damaged: Damaged, out_dir: Path,
                       cfg: DictConfig) -> list[Path]:
        """<name>-repaired[-k].png at the input's size and <name>-comparison.png (repair.py)."""
        from diffusekit.domains.image.repair import write_repaired

        return write_repaired(samples, damaged, out_dir, cfg)

    def finetune_target(self, cfg: DictConfig) -> dict[str, Any]:
        """The customisation benchmark's target: pages of printed text (`documents.py`), 8.9% of
        the base's training pixels by default, scored by PSNR-Y on held-out rendered pages."""
        from diffusekit.domains.image.documents import document_target

        _, overrides = document_target(cfg)
        return {"overrides": overrides, "metric": "psnr_y", "higher_is_better": True}

    def repair_benchmark(self, cfg: DictConfig) -> dict[str, Any]:
        """Hole PSNR-Y / SSIM-Y of a hole model's repairs of held-out photos against biharmonic
        inpainting (repair_benchmark.py)."""
        from diffusekit.domains.image.repair_benchmark import run_repair_benchmark

        return run_repair_benchmark(self, cfg)

    def benchmark(self, cfg: DictConfig) -> dict[str, Any]:
        """Diffusion against bicubic and regression at 1..32 steps (see `benchmark.py`)."""
        from diffusekit.domains.image.benchmark import run_benchmark

        return run_benchmark(self, cfg)
