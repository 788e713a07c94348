"""A complete diffusekit plugin in one file: the domain "points", 2-D points on a ring of Gaussians.

docs/plugins.md walks through it. Shipped in a distribution whose pyproject.toml declares the
entry point `points = "points_domain"` (group "diffusekit"), it makes `toolkit train --domain
points` work like any built-in domain; tests/test_docs.py finds it through such an entry point
and trains, samples and evaluates it.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader

from diffusekit.core.process import GaussianDiffusion
from diffusekit.plugins import Domain, hookimpl

# The domain's defaults, merged over the toolkit's (see `toolkit config --domain points`). A
# packaged plugin keeps them in a config.yaml beside its domain module instead.
CONFIG = """
trainer:
  max_steps: 3000          # optimiser steps (about 15 s on one CPU core)
optim:
  lr: 3.0e-3               # a small MLP on 2-D points takes a large learning rate
  warmup_steps: 50         # linear warm-up, then a constant rate
ema:
  decay: 0.99              # a short run: a short averaging horizon
checkpoint_every: 500
val_every: 500
sample:
  n: 1000                  # points drawn by `toolkit sample`
  val_n: 200               # points drawn at each validation
  eval_n: 1000             # held-out points `toolkit evaluate` generates for and scores
  batch_size: 1000         # the metrics compare whole point clouds: one large batch
data:
  modes: 8                 # Gaussians evenly spaced on a circle
  radius: 2.0              # radius of that circle
  std: 0.1                 # standard deviation of each Gaussian
  n_train: 8000            # training points (a fresh draw per split)
  n_test: 1000             # validation and test points
  batch_size: 256
  seed: 0                  # the splits use seed, seed + 1, seed + 2
network:
  hidden: 128              # width of the MLP
  n_frequencies: 8         # sin / cos features of the noise level, frequencies 1 .. 2^(n-1)
process:                   # diffusekit.core.process.GaussianDiffusion
  schedule: vp_cosine
  prediction: eps          # the network predicts the noise (v measured worse here)
  weighting: eps_mse
  sampler: dpmpp_2m        # any name of `diffusekit.core.samplers.names()`
  steps: 20
"""


def ring(n: int, modes: int, radius: float, std: float, seed: int) -> Tensor:
    """[n, 2] points: `modes` Gaussians of standard deviation `std` on a circle of `radius`."""
    g = torch.Generator().manual_seed(seed)
    angle = 2 * math.pi * torch.randint(0, modes, (n,), generator=g) / modes
    centres = radius * torch.stack([angle.cos(), angle.sin()], dim=-1)
    return centres + std * torch.randn(n, 2, generator=g)


class RingData(L.LightningDataModule):
    """Train / validation / test draws of `ring`, as batch dicts {"x0": [B, 2]}."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def _loader(self, n: int, offset: int, train: bool = False) -> DataLoader:
        c = self.cfg
        points = ring(n, c.modes, c.radius, c.std, c.seed + offset)
        return DataLoader([{"x0": p} for p in points], batch_size=c.batch_size,
                          shuffle=train, drop_last=train)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.cfg.n_train, 0, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.cfg.n_test, 1)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.cfg.n_test, 2)


class PointNet(nn.Module):
    """The raw network net(x_in [B, 2], c_noise [B]) -> [B, 2] (here: v): an MLP over the point
    and Fourier features of the noise level (c_noise = t in [0, 1])."""

    def __init__(self, hidden: int, n_frequencies: int) -> None:
        super().__init__()
        self.register_buffer("freqs", 2.0 ** torch.arange(n_frequencies), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 + 2 * n_frequencies, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2))

    def forward(self, x_in: Tensor, c_noise: Tensor) -> Tensor:
        angles = c_noise.to(x_in.dtype).reshape(-1, 1) * self.freqs.to(x_in.dtype)
        features = torch.cat([angles.sin(), angles.cos()], dim=-1).expand(len(x_in), -1)
        return self.mlp(torch.cat([x_in, features], dim=-1))


def sliced_wasserstein(a: Tensor, b: Tensor, n_projections: int = 128, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance of two equally large clouds a, b: [N, 2]: the 1-D distance
    of their sorted projections, averaged over fixed random directions."""
    g = torch.Generator().manual_seed(seed)
    directions = nn.functional.normalize(torch.randn(2, n_projections, generator=g), dim=0)
    pa, pb = (a.float() @ directions).sort(0).values, (b.float() @ directions).sort(0).values
    return float((pa - pb).abs().mean())


class PointsDomain(Domain):
    """What the toolkit needs from a domain; it brings training, sampling, runs and the CLI."""

    name = "points"
    description = "2-D points on a ring of Gaussians (the example of docs/plugins.md)"

    def default_config(self) -> DictConfig:
        return OmegaConf.create(CONFIG)

    def build_datamodule(self, cfg: DictConfig) -> RingData:
        return RingData(cfg.data)

    def build_network(self, cfg: DictConfig) -> PointNet:
        return PointNet(cfg.network.hidden, cfg.network.n_frequencies)

    def process(self, cfg: DictConfig) -> GaussianDiffusion:
        return GaussianDiffusion.from_config(cfg.process)

    def evaluate(self, batch: dict, samples: Tensor, cfg: DictConfig) -> dict[str, float]:
        """sw: sliced Wasserstein-1 to the held-out points; on_ring: share of samples within
        3 standard deviations of a mode's centre."""
        c = cfg.data
        angle = 2 * math.pi * torch.arange(c.modes) / c.modes
        centres = c.radius * torch.stack([angle.cos(), angle.sin()], dim=-1)
        nearest = torch.cdist(samples.float(), centres).min(dim=1).values
        return {"sw": sliced_wasserstein(samples, batch["x0"]),
                "on_ring": float((nearest < 3 * c.std).float().mean())}

    def write_samples(self, samples: Tensor, out_dir: Path, cfg: DictConfig) -> list[Path]:
        path = Path(out_dir) / "points.csv"
        path.write_text("".join(f"{x:.5f},{y:.5f}\n" for x, y in samples.tolist()))
        return [path]


@hookimpl
def register_domains(register) -> None:
    """The plugin's one hook: discovery imports this module and calls it once per process."""
    register(PointsDomain())
