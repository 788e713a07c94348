"""Pictures of the image domain: PNG files, the comparison grid, the quality-vs-steps plot.

    save_png(image, path)                      one [3, H, W] image in [-1, 1] as an 8-bit PNG
    comparison_grid(samples, path, zoom)       bicubic | diffusion | ground truth, one row per
                                               image, each with a zoomed crop of its busiest region
    quality_plot(rows, path)                   PSNR-Y, SSIM-Y and consistency against steps

Matplotlib is used through its object API (no pyplot, no global backend).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from diffusekit.domains.image.degradation import quantize


def to_uint8(image: Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> H x W x 3 uint8."""
    return quantize(image.detach().cpu().float()).to(torch.uint8).permute(1, 2, 0).numpy()


def save_png(image: Tensor, path: Path) -> Path:
    """Write [3, H, W] in [-1, 1] as an 8-bit RGB PNG; return the path."""
    from PIL import Image

    Image.fromarray(to_uint8(image)).save(path)
    return Path(path)


def busiest_box(image: Tensor, side: int) -> tuple[int, int]:
    """Top-left corner of the side x side window of [3, H, W] with the most local variance
    (where super-resolution has the most to do)."""
    grey = image.detach().float().mean(dim=0, keepdim=True)[None]
    detail = (grey - F.avg_pool2d(grey, 3, 1, 1, count_include_pad=False)).abs()
    score = F.avg_pool2d(detail, side, stride=max(1, side // 4))
    k = int(score.flatten().argmax())
    stride = max(1, side // 4)
    return (k // score.shape[-1]) * stride, (k % score.shape[-1]) * stride


def comparison_grid(samples: Any, path: Path, zoom: int = 4, max_images: int = 8,
                    base_name: str = "bicubic") -> Path:
    """bicubic (or the degradation's `base_name`) | diffusion | ground truth (when known), a
    zoomed crop under each: one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    n = min(len(samples), max_images)
    columns = [(base_name, samples.bicubic), ("diffusion", samples.image)]
    if samples.reference is not None:
        columns.append(("ground truth", samples.reference))
    h, w = samples.image.shape[-2:]
    side = max(8, min(h, w) // max(1, zoom))
    aspect = h / w
    fig = Figure(figsize=(3.2 * len(columns), 3.2 * n * (aspect + 1.0)), dpi=100)
    FigureCanvasAgg(fig)
    for row in range(n):
        reference = samples.reference[row] if samples.reference is not None else samples.image[row]
        top, left = busiest_box(reference, side)
        for col, (title, images) in enumerate(columns):
            ax = fig.add_subplot(2 * n, len(columns), 2 * row * len(columns) + col + 1)
            ax.imshow(to_uint8(images[row]))
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), side, side, fill=False,
                                   edgecolor="yellow", linewidth=1.2))
            ax.set_title(title, fontsize=9)
            ax.axis("off")
            ax = fig.add_subplot(2 * n, len(columns), (2 * row + 1) * len(columns) + col + 1)
            crop = images[row][:, top:top + side, left:left + side]
            ax.imshow(to_uint8(crop), interpolation="nearest")
            ax.set_title(f"{title}, zoom", fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def quality_plot(rows: list[dict], baselines: dict[str, dict[str, float]], path: Path,
                 title: str = "") -> Path:
    """Three panels (psnr_y, ssim_y, consistency) against sampler steps, one line per sampler
    (rows: {"sampler", "steps", metric: value}); baselines drawn as horizontal lines."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = [("psnr_y", "PSNR-Y (dB)"), ("ssim_y", "SSIM-Y"), ("consistency", "consistency (dB)")]
    fig = Figure(figsize=(13, 4), dpi=100)
    FigureCanvasAgg(fig)
    samplers = sorted({r["sampler"] for r in rows})
    for i, (key, label) in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for s in samplers:
            pts = sorted((r["steps"], r[key]) for r in rows if r["sampler"] == s)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=s)
        for j, (name, values) in enumerate(sorted(baselines.items())):
            if key in values:
                ax.axhline(values[key], linestyle="--", color=f"C{len(samplers) + j}", label=name)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="sampler steps", ylabel=label)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
