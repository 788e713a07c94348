"""The example domain's data module: splits of `ShapeLayout.sample` served as batch dicts.

Nothing is downloaded and there is nothing to cache (`prepare_data` has nothing to do). Batches:

    {"x0": [B, 2] float32, "cond": {"label": [B] int64}}      (conditional, the default)
    {"x0": [B, 2] float32}                                     (data.conditional: false)

where label i means `shapes[i]` of the config. Points are shuffled within each split, so every
batch, also of the unshuffled val / test loaders, mixes the shapes.
"""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from diffusekit_example.shapes import ShapeLayout


class ShapePoints(Dataset):
    """An in-memory split: item i is {"x0": [2], "cond": {"label": []}} (or {"x0"} only)."""

    def __init__(self, x0: Tensor, label: Tensor, conditional: bool = True) -> None:
        assert x0.shape == (label.shape[0], 2), "x0 must be [N, 2] with one label per point"
        self.x0, self.label, self.conditional = x0, label, conditional

    def __len__(self) -> int:
        return self.x0.shape[0]

    def __getitem__(self, i: int) -> dict:
        item = {"x0": self.x0[i]}
        if self.conditional:
            item["cond"] = {"label": self.label[i]}
        return item


class ShapesDataModule(L.LightningDataModule):
    """Train / val / test splits of `layout.sample`, with seeds seed, seed + 1, seed + 2.

    layout: which shapes and where (`shapes.ShapeLayout`); n_train, n_val, n_test: points per
    shape and split; conditional: whether batches carry cond={"label": ...}.
    """

    def __init__(self, layout: ShapeLayout, *, n_train: int = 4000, n_val: int = 500,
                 n_test: int = 1000, seed: int = 0, conditional: bool = True,
                 batch_size: int = 256, num_workers: int = 0) -> None:
        super().__init__()
        self.layout = layout
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.seed, self.conditional = seed, conditional
        self.batch_size, self.num_workers = batch_size, num_workers
        self.splits: dict[str, ShapePoints] = {}

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "ShapesDataModule":
        """Build from the `data` section of the domain config."""
        d = cfg.data
        return cls(ShapeLayout.from_config(d), n_train=int(d.n_train), n_val=int(d.n_val),
                   n_test=int(d.n_test), seed=int(d.seed), conditional=bool(d.conditional),
                   batch_size=int(d.batch_size), num_workers=int(d.num_workers))

    def prepare_data(self) -> None:
        """Nothing to download or cache: the data are generated on the fly."""

    def setup(self, stage: str | None = None) -> None:
        for offset, split in enumerate(("train", "val", "test")):
            if split not in self.splits:
                x0, label = self.layout.sample(self.sizes[split], self.seed + offset)
                self.splits[split] = ShapePoints(x0, label, self.conditional)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        return DataLoader(self.splits[split], batch_size=self.batch_size, shuffle=shuffle,
                          drop_last=shuffle, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def full_batch(self, split: str = "test") -> dict:
        """A whole split as one batch dict (for evaluation and benchmarks)."""
        self.setup()
        data = self.splits[split]
        batch = {"x0": data.x0}
        if self.conditional:
            batch["cond"] = {"label": data.label}
        return batch
