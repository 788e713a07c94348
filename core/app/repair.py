"""Repair with a trained model: fill part of a user's input and keep the rest (`toolkit inpaint`).

    region = parse_region(mask="hole.png", boxes=["10,10,40,30"])
    paths = repair_file(model, Path("photo.png"), region, out_dir=Path("repaired"), n=2)
    samples = inpaint_model(model, damaged, method="repaint", steps=25, n=4, seed=0)

The work is split along the existing seams (docs/repair.md):

- the domain reads its file and the region into a `Damaged` (`Domain.read_damaged`): one example
  in the model's data space (batch["x0"]), the known mask and the conditioning made from the
  damaged input only; and writes the result (`Domain.write_repaired`);
- the domain's process fills it (`process.inpaint(network, batch, known, method=...)`; for a
  Gaussian process `core.process.GaussianDiffusion.inpaint`, which runs `core.inpainting`'s
  replacement or RePaint with any sampler);
- this module ties them together for every domain, built-in or a plugin's, with the options every
  domain shares: `--method` (`inpaint.method`, with `inpaint.jump_length` and
  `inpaint.resamplings` for RePaint), `--steps`, `--sampler`, `--seed`, `-n`, `--out`.

The repair benchmarks of the domains share `sweep_settings` (quality against NFE and RePaint's
resamplings) and `nfe_of` from here.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from omegaconf import DictConfig
from torch import Tensor
from tqdm.auto import tqdm

from diffusekit.core.app.training.inference import network_on, sampling_device
from diffusekit.core.errors import ConfigError, DataError
from diffusekit.core.inpainting import METHODS, RePaint, repaint_segments
from diffusekit.core.layers import parameter_device
from diffusekit.plugins.domain import REGION_KINDS, Damaged, Region

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SPAN = re.compile(rf"\s*({_NUMBER})\s*-\s*({_NUMBER})\s*")
_INDEX_RANGE = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


# ------------------------------------------------------------------------------ the region
def parse_box(text: str) -> tuple[float, float, float, float]:
    """"x0,y0,x1,y1" -> four floats with x0 < x1 and y0 < y1 (`ConfigError` otherwise)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(v == v and abs(v) != float("inf") for v in values):
        raise ConfigError(f"--box {text!r} is not of the form X0,Y0,X1,Y1 (four numbers)")
    x0, y0, x1, y1 = values
    if not (x0 < x1 and y0 < y1):
        raise ConfigError(f"--box {text!r} is empty: it needs X0 < X1 and Y0 < Y1")
    return x0, y0, x1, y1


def parse_span(text: str) -> tuple[float, float]:
    """"start-end" -> (start, end) with start < end (`ConfigError` otherwise)."""
    found = _SPAN.fullmatch(str(text))
    if not found:
        raise ConfigError(f"--span {text!r} is not of the form START-END (two numbers)")
    start, end = float(found.group(1)), float(found.group(2))
    if not start < end:
        raise ConfigError(f"--span {text!r} is empty: it needs START < END")
    return start, end


def parse_indices(text: str) -> tuple[int, ...]:
    """"0,1,4-7" -> (0, 1, 4, 5, 6, 7): sorted, each once (`ConfigError` otherwise)."""
    out: set[int] = set()
    for part in str(text).split(","):
        found = _INDEX_RANGE.fullmatch(part)
        if not found:
            raise ConfigError(f"--keep {text!r} is not a list of indices such as 0,1,4-7")
        first = int(found.group(1))
        last = int(found.group(2)) if found.group(2) is not None else first
        if last < first or last - first > 100_000:
            raise ConfigError(f"--keep {text!r}: the range {part.strip()!r} is empty or too long")
        out.update(range(first, last + 1))
    return tuple(sorted(out))


def parse_region(mask: str | Path | None = None, boxes: Sequence[str] = (),
                 spans: Sequence[str] = (), keep: str | None = None) -> Region:
    """The `Region` of the command line's --mask, --box, --span and --keep."""
    return Region(mask=Path(mask) if mask is not None else None,
                  boxes=tuple(parse_box(b) for b in boxes),
                  spans=tuple(parse_span(s) for s in spans),
                  keep=parse_indices(keep) if keep is not None else None)


def check_region(domain: Any, region: Region) -> None:
    """`ConfigError` unless the domain can inpaint and reads every kind the region gives (a
    region of no kind is the domain's to judge: the text domain reads [MASK] marks in the input
    itself)."""
    accepted = tuple(getattr(domain, "inpaint_regions", ()) or ())
    if not accepted:
        raise ConfigError(f"the {domain.name!r} domain cannot inpaint (it declares no "
                          "inpaint_regions)")
    options = {"mask": "--mask FILE", "box": "--box X0,Y0,X1,Y1", "span": "--span START-END",
               "keep": "--keep I,J,K-L"}
    given = region.kinds()
    wrong = [kind for kind in given if kind not in accepted]
    if wrong:
        raise ConfigError(f"the {domain.name!r} domain does not take {options[wrong[0]].split()[0]}"
                          f"; it takes {', '.join(options[k] for k in accepted if k in options)}")


def output_name(path: Path) -> str:
    """A plain name for the files written for input `path`: its stem with every character but
    letters, digits and '._+-' replaced by '_' (no path can be built from it that leaves the
    output folder), "input" when nothing is left."""
    stem = re.sub(r"[^A-Za-z0-9._+-]", "_", Path(path).stem).lstrip(".")
    return stem[:100] or "input"


# ------------------------------------------------------------------------------ pixel regions
def pixel_mask(region: Region, height: int, width: int) -> Tensor:
    """[H, W] bool, True = fill, of a 2-D input H x W pixels: the --mask image (any mode, read
    grey: a pixel > 127 is to be filled; it must be W x H pixels) joined with every --box
    (x0, y0, x1, y1 in pixels, x to the right, y down, the box [x0, x1) x [y0, y1), rounded
    outwards). `DataError` (one line) for a mask of another size, an unreadable mask, a box
    outside the image, or a region that fills nothing."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    fill = torch.zeros(height, width, dtype=torch.bool)
    if region.mask is not None:
        try:
            with Image.open(region.mask) as im:
                grey = np.asarray(im.convert("L"))
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DataError(f"mask {str(region.mask)!r} cannot be read as an image: "
                            f"{' '.join(str(exc).split())[:120]}") from None
        if grey.shape != (height, width):
            raise DataError(f"mask {str(region.mask)!r} is {grey.shape[1]} x {grey.shape[0]} "
                            f"pixels, the input {width} x {height}: they must match")
        fill |= torch.from_numpy(grey > 127)
    for x0, y0, x1, y1 in region.boxes:
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise DataError(f"--box {x0:g},{y0:g},{x1:g},{y1:g} lies outside the input of "
                            f"{width} x {height} pixels")
        fill[int(y0):int(-(-y1 // 1)), int(x0):int(-(-x1 // 1))] = True
    if not bool(fill.any()):
        raise DataError("the region fills no pixel: give --mask (white = fill) or --box "
                        "X0,Y0,X1,Y1 inside the input")
    return fill


def centre_box_mask(height: int, width: int, fraction: float) -> Tensor:
    """[H, W] bool, True = fill: the centred box covering `fraction` of each side."""
    h, w = max(1, round(height * fraction)), max(1, round(width * fraction))
    top, left = (height - h) // 2, (width - w) // 2
    fill = torch.zeros(height, width, dtype=torch.bool)
    fill[top:top + h, left:left + w] = True
    return fill


def stroke_mask(height: int, width: int, generator: torch.Generator, *, strokes: int = 3,
                width_px: float = 2.0, vertices: int = 4) -> Tensor:
    """[H, W] bool, True = fill: `strokes` random brush strokes, each a polyline through
    `vertices` uniform random points with a round brush of radius `width_px` pixels (the free-form
    masks of image-inpainting benchmarks, in miniature)."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                            torch.arange(width, dtype=torch.float64), indexing="ij")
    fill = torch.zeros(height, width, dtype=torch.bool)
    scale = torch.tensor([height - 1, width - 1], dtype=torch.float64)
    for _ in range(strokes):
        points = torch.rand(vertices, 2, generator=generator, dtype=torch.float64) * scale
        for (ay, ax), (by, bx) in zip(points[:-1].tolist(), points[1:].tolist()):
            dy, dx = by - ay, bx - ax
            length2 = max(dy * dy + dx * dx, 1e-12)
            u = (((ys - ay) * dy + (xs - ax) * dx) / length2).clamp(0.0, 1.0)
            distance2 = (ys - (ay + u * dy)) ** 2 + (xs - (ax + u * dx)) ** 2
            fill |= distance2 <= width_px ** 2
    return fill


def benchmark_masks(n: int, size: int, section: Any, seed: int) -> dict[str, Tensor]:
    """The two hole kinds of the 2-D repair benchmarks, {"box": [n, 1, S, S], "strokes":
    [n, 1, S, S]} bool, True = fill: the centre box of `section.box_fraction` of each side, and
    `section.strokes` random strokes of radius `section.stroke_width` each, seeded with `seed`."""
    box = centre_box_mask(size, size, float(section.box_fraction))[None, None].expand(n, 1, -1, -1)
    generator = torch.Generator().manual_seed(seed)
    strokes = torch.stack([stroke_mask(size, size, generator, strokes=int(section.strokes),
                                       width_px=float(section.stroke_width)) for _ in range(n)])
    return {"box": box.clone(), "strokes": strokes[:, None]}


def hole_scores(repaired: Tensor, truth: Tensor, fill: Tensor) -> dict[str, Tensor]:
    """Per image [N]: PSNR (peak 255) over the filled pixels and SSIM averaged over them
    (Gaussian window, sigma 1.5, data range 255; Wang et al. 2004, as scikit-image computes it).
    repaired, truth: [N, 1, H, W] on the 8-bit scale (grey levels, or luma Y); fill: [N, 1, H, W]
    bool, True = filled."""
    from skimage.metrics import structural_similarity

    a, b, m = repaired.double(), truth.double(), fill.double()
    mse = ((a - b) ** 2 * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp(min=1)
    psnr = 10 * torch.log10(255.0 ** 2 / mse.clamp(min=1e-10))
    ssim = []
    for ai, bi, mi in zip(a[:, 0].numpy(), b[:, 0].numpy(), fill[:, 0].numpy()):
        _, full = structural_similarity(bi, ai, data_range=255.0, gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False, full=True)
        ssim.append(float(full[mi].mean()))
    return {"hole_psnr": psnr, "hole_ssim": torch.tensor(ssim, dtype=torch.float64)}


def biharmonic(damaged: Tensor, fill: Tensor) -> Tensor:
    """Biharmonic inpainting (scikit-image's `inpaint_biharmonic`, each channel) of images
    [N, C, H, W] in [-1, 1] where fill [N, 1, H, W] is True: the classic baseline."""
    from skimage.restoration import inpaint_biharmonic

    channels = damaged.shape[1]
    out = []
    for x, f in zip(damaged, fill):
        image = x.permute(1, 2, 0).double().numpy() if channels > 1 else x[0].double().numpy()
        done = inpaint_biharmonic(image, f[0].numpy(), channel_axis=-1 if channels > 1 else None)
        done = torch.from_numpy(done)
        out.append(done.permute(2, 0, 1) if channels > 1 else done[None])
    return torch.stack(out).float().clamp(-1, 1)


# -------------------------------------------------------------------------------- the method
def inpaint_method(cfg: DictConfig, name: str | None = None,
                   resamplings: int | None = None, jump_length: int | None = None,
                   reconstruction: float | None = None) -> Any:
    """The method `process.inpaint` takes: the name `name` (default `inpaint.method`) from
    `core.inpainting.METHODS`, made with its options: "repaint" with `inpaint.jump_length` and
    `inpaint.resamplings`, both with `inpaint.reconstruction` (the reconstruction guidance weight,
    0 = off), unless given here. `ConfigError` for an option out of range."""
    section = cfg.get("inpaint") or {}
    name = str(name or section.get("method") or "replace")
    kind = METHODS.get(name)  # UnknownNameError naming the known methods
    options: dict[str, Any] = {}
    if "reconstruction" in getattr(kind, "__dataclass_fields__", {}):
        weight = section.get("reconstruction", 0.0) if reconstruction is None else reconstruction
        options["reconstruction"] = float(weight or 0.0)
    if kind is RePaint:
        jump_length = section.get("jump_length", 10) if jump_length is None else jump_length
        resamplings = section.get("resamplings", 10) if resamplings is None else resamplings
        options.update(jump_length=int(jump_length), resamplings=int(resamplings))
    try:
        return kind(**options)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"inpaint: {exc}") from None


def guided_calls(method: Any) -> int:
    """Network-call equivalents of one denoiser call of `method`: 3 with reconstruction guidance
    (a forward and a backward pass, the backward about twice a forward), else 1."""
    return 3 if float(getattr(method, "reconstruction", 0.0) or 0.0) > 0 else 1


def nfe_of(method: Any, steps: int, calls_per_step: int = 1) -> int:
    """Sampler steps a method takes on a grid of `steps` steps (RePaint redoes segments), times
    the network calls of one step (`calls_per_step`: 2 for guidance, 2 for Heun's steps ...),
    times 3 with reconstruction guidance (`guided_calls`): network-call equivalents."""
    calls_per_step *= guided_calls(method)
    if isinstance(method, RePaint):
        moves = repaint_segments(int(steps), method.jump_length, method.resamplings)
        return calls_per_step * sum(b - a for a, b in moves if a < b)
    return calls_per_step * int(steps)


@dataclass(frozen=True)
class Setting:
    """One point of a repair benchmark's sweep: a method with a sampler at a number of steps;
    with `draws` > 1, the mean of that many repairs with different noise (`mean_of_draws`)."""

    method: str
    steps: int
    sampler: str
    resamplings: int = 1
    jump_length: int = 1
    reconstruction: float = 0.0
    draws: int = 1

    def instance(self) -> Any:
        """The method as `process.inpaint` takes it."""
        if self.method == "repaint":
            return RePaint(jump_length=self.jump_length, resamplings=self.resamplings,
                           reconstruction=self.reconstruction)
        return METHODS.get(self.method)(reconstruction=self.reconstruction)

    @property
    def guided(self) -> str:
        """" +rg<weight>" with reconstruction guidance, else "": the labels' mark of it."""
        return f" +rg{self.reconstruction:g}" if self.reconstruction else ""

    @property
    def one_draw(self) -> str:
        """The label of one repair, e.g. "replace-25 (ddpm)", "repaint-10x4-j5 (ddpm)",
        "replace-10 +rg4 (ddpm)" (with reconstruction guidance of weight 4)."""
        if self.method == "repaint":
            return f"repaint-{self.steps}x{self.resamplings}-j{self.jump_length}{self.guided} ({self.sampler})"
        return f"{self.method}-{self.steps}{self.guided} ({self.sampler})"

    @property
    def label(self) -> str:
        """`one_draw`, or "mean of 8 x replace-1 (ddpm)" for the mean of 8 repairs."""
        return self.one_draw if self.draws == 1 else f"mean of {self.draws} x {self.one_draw}"

    @property
    def curve(self) -> str:
        """The curve of a quality-against-NFE figure this setting is a point of: the label
        without the step count, e.g. "replace (ddpm)", "replace +rg4 (ddpm)", "repaint (ddpm)";
        means of repairs lie on a curve over their number, e.g. "mean of replace-1 (ddpm)"."""
        if self.draws > 1:
            return f"mean of {self.one_draw}"
        return f"{self.method}{self.guided} ({self.sampler})"

    def nfe(self, calls_per_step: int = 1) -> int:
        return self.draws * nfe_of(self.instance(), self.steps, calls_per_step)

    def fields(self, calls_per_step: int = 1) -> dict[str, Any]:
        """What a benchmark row records of the setting: its label (as "setting"), method,
        sampler, steps, RePaint's options, the reconstruction weight, the repairs averaged, its
        curve and NFE."""
        return {"setting": self.label, "method": self.method, "sampler": self.sampler,
                "steps": self.steps, "resamplings": self.resamplings,
                "jump_length": self.jump_length, "reconstruction": self.reconstruction,
                "repairs_averaged": self.draws, "curve": self.curve,
                "nfe": self.nfe(calls_per_step)}


def mean_of_draws(repair: Callable[[int], Any], draws: int, seed: int,
                  mean: Callable[[list], Any] | None = None) -> Any:
    """The mean of `draws` repairs `repair(seed + k)`, k < draws (noise seeded with seed + k),
    taken by `mean` (a list of repairs to their mean: a domain's `repair_mean`; default the
    tensors' running sum over draws).

    Each repair is a draw from the model's posterior given the known part; their mean tends to
    the posterior mean E[x | known], the estimate of least squared error, which is what PSNR and
    L1-like scores reward (Blau & Michaeli 2018, "The Perception-Distortion Tradeoff": a sharp
    draw pays for its texture; SR3 / Palette report the same). One draw: repair(seed) itself."""
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if draws == 1:
        return repair(seed)
    if mean is not None:
        return mean([repair(seed + k) for k in range(draws)])
    total = repair(seed)
    for k in range(1, draws):
        total = total + repair(seed + k)
    return total / draws


def nfe_curves(rows: Sequence[Mapping[str, Any]], value: str,
               keep: Callable[[Mapping[str, Any]], bool] = lambda row: True) -> dict[str, list[tuple[int, float]]]:
    """{curve: [(nfe, row[value]), ...] sorted by NFE} over the rows that have a "curve"
    (`Setting.fields`) and pass `keep`: the lines of a quality-against-NFE figure."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        if row.get("curve") and keep(row):
            out.setdefault(row["curve"], []).append((row["nfe"], row[value]))
    return {curve: sorted(points) for curve, points in sorted(out.items())}


def nfe_panel(ax: Any, rows: Sequence[Mapping[str, Any]], value: str,
              keep: Callable[[Mapping[str, Any]], bool], references: Mapping[str, float]) -> None:
    """Draw `value` against NFE on the matplotlib axes `ax`: a line per curve of `nfe_curves`
    (RePaint dashed), each of `references` ({label: value}, the baselines) a horizontal line."""
    for curve, points in nfe_curves(rows, value, keep).items():
        ax.plot(*zip(*points), "s--" if curve.startswith("repaint") else "o-", label=curve)
    for i, (label, level) in enumerate(references.items()):
        ax.axhline(level, color=f"{0.3 + 0.25 * i:.2f}", ls=":", label=label)
    ax.set(xscale="log", xlabel="NFE")
    ax.legend(fontsize=7)


@dataclass(frozen=True)
class BenchmarkRun:
    """The sizes of one call of a domain's repair benchmark, read from its `repair:` section
    (`quick_train_steps` / `quick_n_test` with --quick), and when and how busy it started."""

    quick: bool
    train_steps: int
    n_test: int
    seed: int
    started: float
    load_start: float

    @classmethod
    def start(cls, cfg: DictConfig) -> "BenchmarkRun":
        """Read the sizes, set torch's CPU threads to `repair.threads` when given, start the clock."""
        r = cfg.repair
        quick = bool(cfg.get("quick", False))
        if r.get("threads"):
            torch.set_num_threads(int(r.threads))
        return cls(quick, int(r.quick_train_steps if quick else r.train_steps),
                   int(r.quick_n_test if quick else r.n_test), int(r.seed),
                   time.perf_counter(), round(os.getloadavg()[0], 2))

    def record_place(self, cfg: DictConfig, domain: str) -> tuple[str, Path]:
        """(record name `<domain>_repair[_quick]`, its folder: `repair.results_dir`, else
        benchmarks/results/, created)."""
        from diffusekit.core.app.results import RESULTS_DIR

        out_dir = Path(cfg.repair.results_dir) if cfg.repair.get("results_dir") else RESULTS_DIR
        out_dir.mkdir(parents=True, exist_ok=True)
        return f"{domain}_repair{'_quick' if self.quick else ''}", out_dir

    @staticmethod
    def timing_line(metrics: Mapping[str, Any], training: bool = True) -> str:
        """The records' last line: the base's training steps and seconds (with `training`), the
        whole benchmark's seconds and the load average at its start and end (`clock`). Training
        longer than the whole benchmark was (partly) done by an earlier start, and says so."""
        earlier = (" over all its starts, part or all of it by an earlier start of this benchmark "
                   "in `repair.run_dir` (resumed or reloaded)"
                   if float(metrics.get("train_seconds", 0.0)) > float(metrics["seconds"]) else "")
        training = (f"Training: the toolkit's trainer, {metrics['train_steps']} steps in "
                    f"{metrics['train_seconds']} s{earlier}; the" if training else "The")
        return (f"{training} whole benchmark {metrics['seconds']} s; 1-minute load average "
                f"{metrics['load_average_start']} at the start, {metrics['load_average_end']} at "
                "the end (a shared machine is slower than an idle one).")

    def clock(self) -> dict[str, float]:
        """The record's timing: seconds since `start` and the 1-minute load average at the start
        and now (the machine may be shared)."""
        return {"seconds": round(time.perf_counter() - self.started, 1),
                "load_average_start": self.load_start, "load_average_end": round(os.getloadavg()[0], 2)}


def sweep_settings(section: Any) -> list[Setting]:
    """The settings of a domain's `repair:` config section: replacement with each of `samplers`
    at each of `steps`, and RePaint with the first sampler at each of `repaint_steps` with each
    of `resamplings` (jump length `jump_length`), and replacement with reconstruction guidance
    of each weight of `reconstruction` at each of `reconstruction_steps` (default `steps`) with
    the first sampler, and the mean of each of `averaged` replacements (`mean_of_draws`) at each
    of `averaged_steps` (default `steps`) with the first sampler. Replacement is exact only in
    law for a sampler
    that draws fresh noise at every step (ddpm); a deterministic one keeps the start noise's
    direction (core/inpainting.py), which the sweep shows."""
    samplers = [str(name) for name in section.samplers]
    out = [Setting("replace", int(s), name) for name in samplers for s in section.steps]
    jump = int(section.get("jump_length", 5))
    for steps in section.repaint_steps:
        for r in section.resamplings:
            out.append(Setting("repaint", int(steps), samplers[0], int(r), jump))
    for weight in section.get("reconstruction") or []:
        for steps in section.get("reconstruction_steps") or section.steps:
            out.append(Setting("replace", int(steps), samplers[0], reconstruction=float(weight)))
    for draws in section.get("averaged") or []:
        for steps in section.get("averaged_steps") or section.steps:
            out.append(Setting("replace", int(steps), samplers[0], draws=int(draws)))
    return out


# ---------------------------------------------------------------------------------- running
def repeat_batch(batch: Any, n: int) -> Any:
    """A batch of one example as n copies (every tensor nested in dicts / lists with leading
    size 1 repeated on dim 0; other values as they are)."""
    if isinstance(batch, Tensor):
        return batch.expand(n, *batch.shape[1:]).clone() if batch.dim() and batch.shape[0] == 1 else batch
    if isinstance(batch, dict):
        return {k: repeat_batch(v, n) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(repeat_batch(v, n) for v in batch)
    return batch


def generator_for(network: Any, seed: int) -> torch.Generator:
    """A generator seeded with `seed` on the device of `network`'s parameters (the CPU for a
    network without any, or a plain denoiser function): the noise of a repair drawn where the
    network runs."""
    return torch.Generator(device=parameter_device(network)).manual_seed(int(seed))


def inpaint_batch(network: Any, process: Any, batch: dict, known: Any, *, method: Any = "replace",
                  sampler: str | None = None, steps: int | None = None,
                  generator: torch.Generator | None = None, progress: bool = False,
                  domain_name: str = "this") -> Any:
    """`process.inpaint` without gradients, with a progress bar over sampler steps when
    `progress`; `ConfigError` when the process cannot inpaint. It runs on the device of
    `generator` (where `network` is, `generator_for`): the batch and `known` are moved there,
    and the result comes back on the CPU, for the domain's writer and metrics."""
    if not callable(getattr(process, "inpaint", None)):
        raise ConfigError(f"the {domain_name!r} domain's process ({type(process).__name__}) "
                          "cannot inpaint (it has no inpaint method)")
    device = generator.device if generator is not None else torch.device("cpu")
    if device.type != "cpu":
        batch, known = move_data_to_device((batch, torch.as_tensor(known)), device)
    bars: list[tqdm] = []  # opened at the first step: an input refused before it shows no bar

    def step(info: dict) -> None:
        if not bars:
            bars.append(tqdm(desc="inpainting", unit="step", disable=not progress))
        bars[0].update(1)

    try:
        with torch.no_grad():
            out = process.inpaint(network, batch, known, method=method, sampler=sampler,
                                  steps=steps, generator=generator, callback=step)
        return move_data_to_device(out, "cpu") if device.type != "cpu" else out
    finally:
        for bar in bars:
            bar.close()


def inpaint_model(model: Any, damaged: Damaged, *, method: str | None = None,
                  sampler: str | None = None, steps: int | None = None, n: int = 1,
                  seed: int | None = None, average: int | None = None,
                  progress: bool = True) -> Any:
    """`n` repairs of `damaged` with a loaded `Model` (`training.models.load_model`): its
    process's `inpaint` with the method `inpaint_method(model.cfg, method)`, `steps` (default
    `sample.steps`) of `sampler` (default `inpaint.sampler`, else the model's), noise from a
    generator seeded with `seed` (default the config's). With `average` K > 1 (default
    `inpaint.average`) each of the n is the mean of K repairs, the k-th drawn with seed + k
    (`mean_of_draws`' seeds), made by the domain's `repair_mean`; `ConfigError` for a domain
    that does not average its repairs or K < 1."""
    cfg = model.cfg
    section = cfg.get("inpaint") or {}
    sampler = sampler or section.get("sampler") or cfg.sample.get("sampler") or None
    steps = int(steps or cfg.sample.steps)
    seed = int(cfg.seed if seed is None else seed)
    if average is None:
        average = section.get("average")
    average = 1 if average is None else int(average)
    if average < 1:
        raise ConfigError(f"inpaint.average must be >= 1 (repairs per mean), got {average}")
    mean = model.domain.repair_mean() if average > 1 else None
    if average > 1 and mean is None:
        raise ConfigError(f"the {model.domain.name!r} domain's repairs cannot be averaged "
                          "(--average / inpaint.average > 1); it draws each repair on its own")
    batch = repeat_batch(damaged.batch, int(n))
    known = repeat_batch(torch.as_tensor(damaged.known), int(n))
    method_instance = inpaint_method(cfg, method)

    def draw(draw_seed: int) -> Any:
        return inpaint_batch(model.network, model.process, batch, known, method=method_instance,
                             sampler=sampler, steps=steps,
                             generator=generator_for(model.network, draw_seed),
                             progress=progress, domain_name=model.domain.name)

    with network_on(model.network, sampling_device(cfg)):
        return mean_of_draws(draw, average, seed, mean)


def repair_file(model: Any, path: Path, region: Region, *, out_dir: Path, method: str | None = None,
                sampler: str | None = None, steps: int | None = None, n: int = 1,
                seed: int | None = None, average: int | None = None,
                progress: bool = True) -> list[Path]:
    """Read `path` and `region` with the model's domain, inpaint (`inpaint_model`, each of the
    `n` repairs the mean of `average` when given) and write the result into `out_dir`
    (`Domain.write_repaired`); return the paths written."""
    domain, cfg = model.domain, model.cfg
    check_region(domain, region)
    path = Path(path)
    if not path.is_file():
        raise DataError(f"input {str(path)!r} is not a file")
    if region.mask is not None and not Path(region.mask).is_file():
        raise DataError(f"mask {str(region.mask)!r} is not a file")
    damaged = domain.read_damaged(path, region, cfg)
    samples = inpaint_model(model, damaged, method=method, sampler=sampler, steps=steps, n=n,
                            seed=seed, average=average, progress=progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = domain.write_repaired(samples, damaged, out_dir, cfg) or []
    root = out_dir.resolve()
    for p in written:  # a domain's writer must stay inside --out
        if root not in Path(p).resolve().parents:
            raise DataError(f"the {domain.name!r} domain wrote {str(p)!r} outside {str(out_dir)!r}")
    return list(written)


__all__ = ["REGION_KINDS", "Region", "Damaged", "parse_box", "parse_span", "parse_indices",
           "parse_region", "check_region", "output_name", "pixel_mask", "centre_box_mask",
           "stroke_mask", "inpaint_method", "nfe_of", "guided_calls", "Setting", "nfe_curves",
           "sweep_settings", "repeat_batch", "generator_for", "inpaint_batch", "inpaint_model",
           "repair_file"]
