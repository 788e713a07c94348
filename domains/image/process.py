"""How the image domain trains and samples: residual diffusion (SR3) and its regression baseline.

Both processes speak the toolkit's process seam (`training_loss(network, batch)`,
`generate(network, batch, ...)`) over batches {"x0": HR [B, 3, H, W], "cond": {"low_res": LR}}
and hand the same network up_s(y) as its `upsampled` conditioning. Every "up_s(y)" below is the
degradation's `upsample(y)`: with a hole degradation (degradation.py) the smooth fill of the
holes, the network also sees the known mask (`seen`), and `generate` fills the holes only.

`ResidualDiffusion` (SR3, Saharia et al. 2021, with the residual target of SRDiff, Li et al. 2022
and of Whang et al. 2022): the diffusion variable is the scaled residual over bicubic,

    r0 = (x - up_s(y)) / residual_scale,      x_hat = up_s(y) + residual_scale * r0_hat,

which is near zero in flat regions, so fewer steps suffice than for the image itself
(`residual: false` diffuses x itself, as SR3 does). Any engine sampler draws r0 through
`core.process.GaussianDiffusion`; every network call goes through `TiledNetwork`, so whole images
of any size are sampled in bounded memory without seams.

`Regression`: the same network, fed zeros for x_t and c_noise = 0, trained with the MSE of the
scaled residual: x_hat = up_s(y) + residual_scale * net(0, 0, up_s(y)), one network call. It
estimates the conditional mean E[x | y], the PSNR-optimal answer diffusion is compared with.

`PredictRefine` (predict and refine, Whang et al. 2022, "Deblurring via Stochastic Refinement",
Sec. 3): a predictor network g (the regression above) gives x_init = g(y), and the diffusion
draws the residual over it, conditioned on it (in the place of up_s(y)):

    r0 = (x - sg(x_init)) / refine_scale,     x_hat = x_init + refine_scale * r0_hat,
    L = L_diffusion(r0 | x_init) + predictor_weight * |g(y) - x|^2 / n     (StoRM, eq. 10)

with sg a stop-gradient, as StoRM trains its predictor (Lemercier et al. 2023): g is exactly the
regression baseline, trained in the same run, so what diffusion adds over regression is read off
one model. Both networks are one `core.regeneration.PredictorDenoiser` module, and the loss is
`core.regeneration.regeneration_loss`, shared with the audio domain's StoRM. One sampler step
from t_max returns x_init plus the predicted mean residual (at the quick budget it measured below
the predictor alone, see README).

`self_ensemble` (geometric self-ensemble, Lim et al. 2017, "Enhanced Deep Residual Networks for
Single Image Super-Resolution", Sec. 4.3, EDSR+): any process's output averaged over the eight
symmetries g of the square (k quarter turns, optionally after a flip), each applied to the input
and undone on the output:

    x_hat = (1 / |G|) sum_{g in G} g^{-1}( SR( g(y) ) ),      NFE = |G| x the sampler's NFE.

Bicubic downsampling by an integer factor commutes with every g (a symmetric kernel on a grid
that maps onto itself), so each term explains y as well as the plain output, and so does their
mean. With a diffusion sampler the mean moves towards the posterior mean: higher PSNR, smoother
texture, as averaging samples does.

Optional back-projection (Irani & Peleg 1991) makes any output explain its input exactly up to
the blur: x <- x + up_s(y - down_s(blur(x))), `back_projection` times. Off by default; the
benchmark reports outputs with and without it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor

from diffusekit.core.errors import ConfigError
from diffusekit.core.process import GaussianDiffusion
from diffusekit.core.regeneration import regeneration_loss
from diffusekit.core.registry import Registry
from diffusekit.domains.image.degradation import Degradation, degradation_of
from diffusekit.domains.image.tiling import TiledNetwork


@dataclass
class SRSamples:
    """What a super-resolution process generates for a batch (all [B, 3, H, W] in [-1, 1], the
    low resolution [B, 3, H/s, W/s], or a hole model's fill and mask [B, 4, H, W]); `reference`
    is the batch's high resolution, if it had one."""

    image: Tensor
    bicubic: Tensor
    low_res: Tensor
    reference: Tensor | None = None

    def __len__(self) -> int:
        return self.image.shape[0]


def back_project(x: Tensor, low_res: Tensor, degradation: Degradation, iterations: int) -> Tensor:
    """Make x explain its input y: iterative back-projection, x <- x + up_s(y - down_s(blur(x))),
    `iterations` times (a hole degradation puts the known pixels back: `project`)."""
    return degradation.project(x, low_res, iterations)


@dataclass(frozen=True, eq=False)
class _SRBase:
    degradation: Degradation
    residual: bool = True
    residual_scale: float = 0.1
    tile: int | None = None
    tile_overlap: int = 32
    batch_tiles: int = 4
    back_projection: int = 0

    def conditioning(self, batch: dict) -> tuple[Tensor, Tensor]:
        """(low_res [B, C, h, w], up_s(low_res) [B, 3, H, W]) of a batch (a hole degradation:
        (fill and mask [B, 4, H, W], the fill))."""
        low_res = batch["cond"]["low_res"]
        return low_res, self.degradation.upsample(low_res)

    def seen(self, low_res: Tensor) -> dict[str, Tensor]:
        """The network's conditioning keywords: {"upsampled": up_s(y)} ([B, cond_channels, H, W]:
        a hole degradation adds the known mask)."""
        return {"upsampled": self.degradation.seen(low_res)}

    def target(self, x0: Tensor, upsampled: Tensor) -> Tensor:
        """What the network learns: (x - up_s(y)) / residual_scale, or x itself."""
        return (x0 - upsampled) / self.residual_scale if self.residual else x0

    def image(self, out: Tensor, upsampled: Tensor) -> Tensor:
        """The inverse of `target`, clamped to [-1, 1]."""
        x = upsampled + self.residual_scale * out if self.residual else out
        return x.clamp(-1.0, 1.0)

    def tiled(self, network: Callable[..., Tensor]) -> TiledNetwork:
        return TiledNetwork(network, self.tile, self.tile_overlap, self.batch_tiles,
                            align=self.degradation.scale)

    def finish(self, out: Tensor, batch: dict, low_res: Tensor, upsampled: Tensor,
               back_projection: int | None = None) -> SRSamples:
        return self.samples(self.image(out, upsampled), batch, low_res, upsampled, back_projection)

    def samples(self, x: Tensor, batch: dict, low_res: Tensor, upsampled: Tensor,
                back_projection: int | None = None) -> SRSamples:
        """`SRSamples` of the image x [B, 3, H, W] in [-1, 1], back-projected when asked (a hole
        model's known pixels are always put back exactly)."""
        n = self.back_projection if back_projection is None else back_projection
        if n:
            x = back_project(x, low_res, self.degradation, n).clamp(-1.0, 1.0)
        known = self.degradation.known(low_res)
        if known is not None:
            x = torch.where(known, upsampled, x)
        return SRSamples(x, upsampled.clamp(-1.0, 1.0), low_res, batch.get("x0"))


@dataclass(frozen=True, eq=False)
class ResidualDiffusion(_SRBase):
    """SR3 residual diffusion around a `GaussianDiffusion` (see the module docstring)."""

    diffusion: GaussianDiffusion | None = None  # required; no default built at import time,
    # which would look up schedules and so load the plugins while this module is half imported

    def __post_init__(self) -> None:
        if not isinstance(self.diffusion, GaussianDiffusion):
            raise TypeError("ResidualDiffusion needs diffusion=GaussianDiffusion(...)")

    @property
    def sampler(self) -> str:
        """The default sampler's name (the toolkit reads it for run folders)."""
        return self.diffusion.sampler

    def training_loss(self, network: Callable[..., Tensor], batch: dict,
                      generator: torch.Generator | None = None) -> Tensor:
        """[B] denoising loss of the network on the (scaled residual) target."""
        low_res, upsampled = self.conditioning(batch)
        inner = {"x0": self.target(batch["x0"], upsampled), "cond": self.seen(low_res)}
        return self.diffusion.training_loss(network, inner, generator=generator)

    def generate(self, network: Callable[..., Tensor], batch: dict, *, sampler: str | None = None,
                 steps: int | None = None, grid: str | None = None,
                 generator: torch.Generator | None = None,
                 callback: Callable[[dict], None] | None = None,
                 back_projection: int | None = None, **sampler_options: Any) -> SRSamples:
        """Super-resolve batch["cond"]["low_res"] with any engine sampler, tile by tile (a hole
        model: fill its holes, the known pixels kept by replacement, `inpaint`)."""
        low_res, upsampled = self.conditioning(batch)
        known = self.degradation.known(low_res)
        if known is not None:
            out = self.inpaint(network, {**batch, "x0": upsampled}, known, sampler=sampler,
                               steps=steps, grid=grid, generator=generator, callback=callback,
                               **sampler_options)
            return replace(out, reference=batch.get("x0"))
        inner = {"x0": upsampled, "cond": self.seen(low_res)}
        out = self.diffusion.generate(self.tiled(network), inner, sampler=sampler, steps=steps,
                                      grid=grid, generator=generator, callback=callback,
                                      **sampler_options)
        return self.finish(out, batch, low_res, upsampled, back_projection)

    def inpaint(self, network: Callable[..., Tensor], batch: dict, known: Tensor, *,
                method: Any = "replace", sampler: str | None = None, steps: int | None = None,
                grid: str | None = None, generator: torch.Generator | None = None,
                callback: Callable[[dict], None] | None = None, **sampler_options: Any
                ) -> SRSamples:
        """Fill batch["x0"] (HR [B, 3, H, W] in [-1, 1]) where `known` ([B, 1, H, W] or
        [B, 3, H, W] bool) is False, conditioned on batch["cond"]["low_res"], which the caller
        made from the damaged image alone (`repair.read_damaged`: the hole filled smoothly from
        its surroundings first). The residual's known part is (x0 - up_s(y)) / residual_scale
        there, so the image's known pixels come out as given; no back-projection (y is not a
        measurement of the hole)."""
        low_res, upsampled = self.conditioning(batch)
        x0 = batch["x0"]
        known = torch.as_tensor(known, device=x0.device).bool().expand_as(x0)
        inner = {"x0": self.target(x0, upsampled), "cond": self.seen(low_res)}
        out = self.diffusion.inpaint(self.tiled(network), inner, known, method=method,
                                     sampler=sampler, steps=steps, grid=grid, generator=generator,
                                     callback=callback, **sampler_options)
        return self.finish(out, batch, low_res, upsampled, back_projection=0)


@dataclass(frozen=True, eq=False)
class Regression(_SRBase):
    """The one-step regression baseline with the same network (see the module docstring)."""

    sampler: str | None = None

    def predict(self, network: Callable[..., Tensor], low_res: Tensor) -> Tensor:
        """net(0, 0, up_s(y)): [B, 3, H, W]."""
        base = self.degradation.upsample(low_res)
        zeros_t = torch.zeros(base.shape[0], device=base.device, dtype=base.dtype)
        return network(torch.zeros_like(base), zeros_t, **self.seen(low_res))

    def training_loss(self, network: Callable[..., Tensor], batch: dict,
                      generator: torch.Generator | None = None) -> Tensor:
        """[B] mean squared error of the prediction against the target."""
        low_res, upsampled = self.conditioning(batch)
        error = F.mse_loss(self.predict(network, low_res), self.target(batch["x0"], upsampled),
                           reduction="none")
        return error.flatten(1).mean(dim=1)

    def generate(self, network: Callable[..., Tensor], batch: dict, *,
                 callback: Callable[[dict], None] | None = None,
                 back_projection: int | None = None, **ignored: Any) -> SRSamples:
        """One (tiled) network call; sampler, steps and generator are ignored."""
        low_res, upsampled = self.conditioning(batch)
        out = self.predict(self.tiled(network), low_res)
        if callback is not None:
            callback({"i": 0})
        return self.finish(out, batch, low_res, upsampled, back_projection)


@dataclass(frozen=True, eq=False)
class PredictRefine(_SRBase):
    """Predict and refine (see the module docstring); the network is a `PredictorDenoiser`.

    refine_scale:     the refinement residual x - x_init is divided by this.
    predictor_weight: weight of the predictor's mean squared error in the training loss.
    """

    diffusion: GaussianDiffusion | None = None  # required (see ResidualDiffusion)
    refine_scale: float = 0.1
    predictor_weight: float = 1.0
    two_networks: ClassVar[bool] = True  # the domain builds a PredictorDenoiser

    def __post_init__(self) -> None:
        if not isinstance(self.diffusion, GaussianDiffusion):
            raise TypeError("PredictRefine needs diffusion=GaussianDiffusion(...)")
        if not self.refine_scale > 0:
            raise ValueError(f"process.refine_scale must be > 0, got {self.refine_scale}")
        if self.degradation.cond_channels != 3:
            raise ConfigError("process.kind=refine is for super-resolution (degradation.kind="
                              "bicubic): its refiner is conditioned on an RGB estimate alone")

    @property
    def sampler(self) -> str:
        """The default sampler's name (the toolkit reads it for run folders)."""
        return self.diffusion.sampler

    def initial(self, predictor: Callable[..., Tensor], upsampled: Tensor) -> Tensor:
        """x_init = up_s(y) + residual_scale * g(0, 0, up_s(y)) [B, 3, H, W] (not clamped)."""
        zeros_t = torch.zeros(upsampled.shape[0], device=upsampled.device, dtype=upsampled.dtype)
        out = predictor(torch.zeros_like(upsampled), zeros_t, upsampled=upsampled)
        return upsampled + self.residual_scale * out if self.residual else out

    def training_loss(self, network: Any, batch: dict,
                      generator: torch.Generator | None = None) -> Tensor:
        """[B] diffusion loss of the residual over sg(x_init) + predictor_weight * the
        predictor's mean squared error (on the same scale as `Regression`'s)."""
        x0 = batch["x0"]
        _, upsampled = self.conditioning(batch)

        def diffusion_loss(base: Tensor) -> Tensor:  # base = sg(x_init)
            inner = {"x0": (x0 - base) / self.refine_scale, "cond": {"upsampled": base}}
            return self.diffusion.training_loss(network.denoiser, inner, generator=generator)

        return regeneration_loss(self.initial(network.predictor, upsampled), x0, diffusion_loss,
                                 self.predictor_weight,
                                 scale=self.residual_scale if self.residual else 1.0)

    def predictor_samples(self, network: Any, batch: dict, *,
                          back_projection: int | None = None, **ignored: Any) -> SRSamples:
        """The predictor alone (the regression baseline inside this model), tile by tile."""
        low_res, upsampled = self.conditioning(batch)
        x_init = self.initial(self.tiled(network.predictor), upsampled)
        return self.samples(x_init.clamp(-1.0, 1.0), batch, low_res, upsampled, back_projection)

    def generate(self, network: Any, batch: dict, *, sampler: str | None = None,
                 steps: int | None = None, grid: str | None = None,
                 generator: torch.Generator | None = None,
                 callback: Callable[[dict], None] | None = None,
                 back_projection: int | None = None, **sampler_options: Any) -> SRSamples:
        """One predictor call, then any engine sampler draws the refinement, tile by tile."""
        low_res, upsampled = self.conditioning(batch)
        x_init = self.initial(self.tiled(network.predictor), upsampled)
        inner = {"x0": x_init, "cond": {"upsampled": x_init}}
        out = self.diffusion.generate(self.tiled(network.denoiser), inner, sampler=sampler,
                                      steps=steps, grid=grid, generator=generator,
                                      callback=callback, **sampler_options)
        x = (x_init + self.refine_scale * out).clamp(-1.0, 1.0)
        return self.samples(x, batch, low_res, upsampled, back_projection)


# the elements of D4 as (quarter turns k, flipped first): identity first
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, flip) for flip in (False, True)
                                               for k in range(4))
# ensemble sizes: every (8 // n)-th element of DIHEDRAL, a subgroup that holds the identity
ENSEMBLE_SIZES = (1, 2, 4, 8)


def transform(x: Tensor, k: int, flip: bool) -> Tensor:
    """g(x) for x [..., H, W]: a horizontal flip (if `flip`), then k counter-clockwise quarter
    turns; [..., W, H] for odd k."""
    if flip:
        x = x.flip(-1)
    return torch.rot90(x, k, dims=(-2, -1))


def inverse_transform(x: Tensor, k: int, flip: bool) -> Tensor:
    """g^{-1}(x): undo `transform(., k, flip)`."""
    x = torch.rot90(x, -k, dims=(-2, -1))
    return x.flip(-1) if flip else x


def self_ensemble(process: Any, network: Any, batch: dict, transforms: int = 8,
                  **options: Any) -> SRSamples:
    """The mean over `transforms` elements of D4 (1, 2, 4 or 8; the identity always among them)
    of process.generate on the transformed batch (see the module docstring); `options` go to
    every generate call, so a `generator` draws fresh noise for each. bicubic / low_res /
    reference are the batch's own.

    batch: {"x0": HR [B, 3, H, W] (optional), "cond": {"low_res": [B, 3, h, w]}}.
    """
    if transforms not in ENSEMBLE_SIZES:
        raise ValueError(f"self-ensemble over 1, 2, 4 or 8 transforms, got {transforms}")
    group = DIHEDRAL[:: 8 // transforms]
    total, plain = None, None
    for k, flip in group:
        moved = {**batch, "cond": {**batch["cond"],
                                   "low_res": transform(batch["cond"]["low_res"], k, flip)}}
        if batch.get("x0") is not None:
            moved["x0"] = transform(batch["x0"], k, flip)
        out = process.generate(network, moved, **options)
        image = inverse_transform(out.image, k, flip)
        if total is None:  # the identity comes first: its output gives bicubic and low_res
            total, plain = image, out
        else:
            total = total + image
    mean = (total / len(group)).clamp(-1.0, 1.0)
    return SRSamples(mean, plain.bicubic, plain.low_res, batch.get("x0"))


@dataclass(frozen=True, eq=False)
class SelfEnsemble:
    """A process whose `generate` is `self_ensemble` of `inner` over `transforms` symmetries
    (`process.self_ensemble` > 1); training and every other attribute are the inner process's."""

    inner: Any
    transforms: int = 8  # one of ENSEMBLE_SIZES (self_ensemble checks it)

    def __getattr__(self, name: str) -> Any:  # only reached for names not defined here
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def training_loss(self, network: Any, batch: dict,
                      generator: torch.Generator | None = None) -> Tensor:
        return self.inner.training_loss(network, batch, generator=generator)

    def generate(self, network: Any, batch: dict, **options: Any) -> SRSamples:
        return self_ensemble(self.inner, network, batch, self.transforms, **options)


# keys of the `process:` section that are one process class's own fields
OWN_KEYS = ("refine_scale", "predictor_weight")

# process.kind -> the class `build_process` builds
PROCESSES: Registry[type] = Registry("image process")
PROCESSES.register("diffusion", ResidualDiffusion)
PROCESSES.register("regression", Regression)
PROCESSES.register("refine", PredictRefine)


def build_process(cfg: DictConfig) -> Any:
    """The `process.kind` process of a config, wrapped in a `SelfEnsemble` when
    `process.self_ensemble` asks for more than one symmetry."""
    single = _single_process(cfg)
    transforms = int(cfg.process.get("self_ensemble") or 1)
    if transforms not in ENSEMBLE_SIZES:
        raise ConfigError(f"process.self_ensemble must be 1, 2, 4 or 8, got {transforms}")
    return SelfEnsemble(single, transforms) if transforms != 1 else single


def _single_process(cfg: DictConfig) -> Any:
    p = cfg.process
    common = dict(degradation=degradation_of(cfg), residual=bool(p.residual),
                  residual_scale=float(p.residual_scale),
                  tile=int(p.tile) if p.tile else None, tile_overlap=int(p.tile_overlap),
                  batch_tiles=int(p.batch_tiles), back_projection=int(p.back_projection))
    kind = PROCESSES.get(p.kind)
    if p.kind == "regression":
        return kind(**common)
    diffusion = GaussianDiffusion.from_config(p)
    names = {f.name for f in fields(kind)}
    own = {k: float(p[k]) for k in OWN_KEYS if k in names and p.get(k) is not None}
    return kind(**common, **own, diffusion=diffusion)
