"""A tiny 2-D Gaussian-mixture point domain for the training and CLI tests.

Small enough that a few hundred CPU steps take seconds; `model.nan: true` makes the network
output NaN, to test that a non-finite loss stops the run.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset

from diffusekit.core.errors import DataError
from diffusekit.core.process import GaussianDiffusion
from diffusekit.plugins.domain import Domain

CONFIG = """
model:
  hidden: 64          # width of the MLP
  nan: false          # make the network output NaN (tests the non-finite loss stop)
  delay: 0.0          # seconds of sleep per forward call (slows a run down for the kill test)
data:
  n_train: 512        # training points
  n_val: 64           # validation (and test) points
  batch_size: 64      # points per batch
  file: null          # a CSV of points to train on instead of the mixture (tests bad data files)
process:
  sampler: ddim       # default sampler
trainer:
  max_steps: 30
  progress_bar: false
optim:
  lr: 3.0e-3
  warmup_steps: 5
ema:
  decay: 0.9
checkpoint_every: 10
val_every: 10
sample:
  n: 8
  val_n: 4
  eval_n: 32
  steps: 8
  batch_size: 16
"""


def mixture(n: int, seed: int) -> torch.Tensor:
    """[n, 2] points of four unit-spaced Gaussian blobs."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    idx = torch.randint(0, 4, (n,), generator=g)
    return centres[idx] + 0.1 * torch.randn(n, 2, generator=g)


class Points(Dataset):
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x0": self.x[i]}


def read_points(path: str) -> torch.Tensor:
    """[n, 2] points from a CSV file; a missing file raises OSError, garbage `DataError`."""
    rows = Path(path).read_text().split()
    try:
        return torch.tensor([[float(v) for v in row.split(",")] for row in rows]).reshape(-1, 2)
    except (ValueError, RuntimeError) as exc:
        raise DataError(f"data file {path!r} cannot be read: {exc}") from None


class PointData(L.LightningDataModule):
    def __init__(self, n_train: int, n_val: int, batch_size: int, file: str | None = None) -> None:
        super().__init__()
        self.n_train, self.n_val, self.batch_size, self.file = n_train, n_val, batch_size, file

    def train_dataloader(self):
        x = read_points(self.file) if self.file else mixture(self.n_train, 0)
        return DataLoader(Points(x), batch_size=self.batch_size,
                          shuffle=True, num_workers=0, drop_last=True)

    def val_dataloader(self):
        return DataLoader(Points(mixture(self.n_val, 1)), batch_size=self.batch_size,
                          num_workers=0)

    def test_dataloader(self):
        return DataLoader(Points(mixture(self.n_val, 2)), batch_size=self.batch_size,
                          num_workers=0)


class PointNet(nn.Module):
    def __init__(self, hidden: int, nan: bool = False, delay: float = 0.0) -> None:
        super().__init__()
        self.nan, self.delay = nan, delay
        self.net = nn.Sequential(nn.Linear(2 + 2, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                 nn.SiLU(), nn.Linear(hidden, 2))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        if self.delay and self.training:
            time.sleep(self.delay)
        emb = torch.stack([torch.sin(math.pi * c_noise), torch.cos(math.pi * c_noise)], -1)
        out = self.net(torch.cat([x, emb.to(x.dtype)], -1))
        return out * float("nan") if self.nan else out


class ToyDomain(Domain):
    name = "toy"
    description = "2-D Gaussian mixture points (tests only)"

    def default_config(self):
        return OmegaConf.create(CONFIG)

    def build_datamodule(self, cfg):
        return PointData(cfg.data.n_train, cfg.data.n_val, cfg.data.batch_size, cfg.data.file)

    def build_network(self, cfg):
        return PointNet(cfg.model.hidden, cfg.model.nan, cfg.model.delay)

    def process(self, cfg):
        return GaussianDiffusion(schedule="vp_cosine", sampler=cfg.process.sampler, steps=8)

    def evaluate(self, batch, samples, cfg):
        return {"mean_error": float((samples.mean(0) - batch["x0"].mean(0)).norm()),
                "radius": float(samples.norm(dim=-1).mean())}

    def write_samples(self, samples, out_dir, cfg):
        path = Path(out_dir) / "points.csv"
        path.write_text("\n".join(f"{a:.4f},{b:.4f}" for a, b in samples.tolist()) + "\n")
        return [path]

    def control_hints(self):
        """quadrant: the signs of a point's coordinates, [B, 2] in {-1, 1}: which blob."""
        return {"quadrant": lambda batch: torch.sign(batch["x0"])}

    def finetune_target(self, cfg):
        """A smaller training set (the machinery's smoke test: the toy has no real shift)."""
        return {"overrides": ["data.n_train=64"], "metric": "mean_error",
                "higher_is_better": False}

    def benchmark(self, cfg):
        return {"quick": bool(cfg.quick), "hidden": int(cfg.model.hidden)}
