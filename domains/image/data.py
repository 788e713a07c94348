"""The image domain's data: natural photographs that installed packages ship, or a user's folder.

Sources, each image named "<source>/<name>":

    skimage/*   scikit-image's sample photographs (astronaut, coffee, rocket, retina, ...)
    sklearn/*   scikit-learn's two photos (china, flower)
    opencv/*    the photographs among Debian opencv-doc's examples (`OPENCV_PHOTOS`), when that
                package is unpacked: `toolkit prepare --domain image` fetches it into the data
                cache ($DIFFUSEKIT_DATA/image, default ~/.cache/diffusekit/image) with
                `apt-get download` + `dpkg -x` (no root); `data.opencv_dir` points elsewhere.
                Skipped, and said so, when absent (tests and CI never need it)
    folder/*    every readable image of `data.folder` (replaces the sources above)

The split is by image, never by patch: `data.test_images` (a fixed held-out set) and
`data.val_images` are removed from the training images; a user folder holds out a seeded fraction.
Nothing is converted: the sources are files on this machine, read on `setup`; the only download
is opencv-doc's package, by `toolkit prepare` (which also lists the split it would use).
Unreadable files and images smaller than a training patch are skipped and counted; a folder that
yields no usable image is a `DataError` (one line on the command line). Batches:

    {"x0": [B, 3, H, W] high resolution in [-1, 1], "cond": {"low_res": [B, 3, H/s, W/s]}}

(with a hole degradation "low_res" is the smooth fill and the known mask, [B, 4, H, W]).
train: random patches (random image weighted by area, random crop, flips and 90-degree turns)
with a fresh degradation draw (a new hole); validate: fixed patches of the val images; test: whole held-out
images (cropped to a multiple of the scale, or centre crops of `data.test_crop`), one per batch.
"""

from __future__ import annotations

import logging
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from diffusekit.core.app.config import data_cache
from diffusekit.core.app.data_loading import loader_options
from diffusekit.core.errors import DataError
from diffusekit.core.registry import Registry
from diffusekit.domains.image.degradation import Degradation

log = logging.getLogger(__name__)

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina",
                  "immunohistochemistry", "brick", "grass", "gravel", "camera", "moon", "coins",
                  "page", "text", "clock")
# The photographs among opencv-doc's examples/data (about 100 images). Left out: synthetic drawings
# and logos (pic1-6, detect_blob, ellipses, gradient, HappyFish, *Logo*, opencv-logo*, templ,
# tmpl, mask, ml, chessboard, digits, notes, imageText*, cards), renders (Blender_Suzanne*),
# a disparity map (aloeGT), the 26 grey chessboard calibration shots (left01..right14), blurred
# photos (text_defocus, text_motion, licenseplate_motion: bad targets for SR), and the second
# image of near-identical pairs (aloeR, basketball2, ela_modified, graf3, leuvenB, right,
# rubberwhale2). Grey photographs: basketball1, box, box_in_scene (read as 3 equal channels).
# Smallest kept: butterfly 493 x 356; none shows a test image's scene (cat, coffee, temple).
OPENCV_PHOTOS = ("aero1", "aero3", "aloeL", "apple", "baboon", "basketball1", "board", "box",
                 "box_in_scene", "building", "butterfly", "chicky_512", "ela_original", "fruits",
                 "graf1", "home", "left", "leuvenA", "messi5", "orange", "rubberwhale1",
                 "smarties", "squirrel_cls", "starry_night", "stuff", "sudoku")
OPENCV_PACKAGE = "opencv-doc"
OPENCV_DATA = Path("usr/share/doc/opencv-doc/examples/data")  # inside the unpacked package
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def as_rgb_uint8(array: np.ndarray) -> Tensor:
    """An H x W (grey), H x W x 3 or H x W x 4 uint8 array -> [3, H, W] uint8 tensor."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit image, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"expected H x W x 3 pixels, got shape {a.shape}")
    return torch.from_numpy(np.array(a[..., :3], copy=True)).permute(2, 0, 1).contiguous()


@dataclass
class ImageSet:
    """Named images [3, H, W] uint8 and what was skipped (name -> reason)."""

    images: dict[str, Tensor] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def read_image_file(path: Path) -> Tensor:
    """[3, H, W] uint8 of an image file (PIL); raises on an unreadable or non-image file."""
    from PIL import Image

    with Image.open(path) as im:
        return as_rgb_uint8(np.asarray(im.convert("RGB")))


# name -> loader(cfg.data, out ImageSet)
SOURCES: Registry[Callable[[DictConfig, ImageSet], None]] = Registry("image source")


def _skimage(d: DictConfig, out: ImageSet) -> None:
    import skimage.data

    for name in SKIMAGE_PHOTOS:
        try:
            out.images[f"skimage/{name}"] = as_rgb_uint8(getattr(skimage.data, name)())
        except Exception as exc:  # some need a download that is not possible here
            out.skipped[f"skimage/{name}"] = " ".join(str(exc).split())[:80]


def _sklearn(d: DictConfig, out: ImageSet) -> None:
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    for path, image in zip(bunch.filenames, bunch.images):
        out.images[f"sklearn/{Path(path).stem}"] = as_rgb_uint8(image)


def _read_folder(folder: Path, prefix: str, out: ImageSet) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = f"{prefix}/{path.relative_to(folder).as_posix()}"
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            out.images[name] = read_image_file(path)
        except Exception as exc:
            out.skipped[name] = f"unreadable ({type(exc).__name__})"


def opencv_dir(d: DictConfig) -> Path:
    """The folder of opencv-doc's example images: `d.opencv_dir` when set, else the copy that
    `toolkit prepare` unpacks into the data cache, else a system-wide install of opencv-doc."""
    if d.get("opencv_dir"):
        return Path(str(d.opencv_dir)).expanduser()
    cached = data_cache("image") / OPENCV_PACKAGE / OPENCV_DATA
    system = Path("/") / OPENCV_DATA
    return cached if cached.is_dir() or not system.is_dir() else system


def fetch_opencv(d: DictConfig) -> Path | None:
    """Unpack opencv-doc into the data cache (once; `apt-get download` + `dpkg -x`, no root) when
    the opencv source is used and `d.opencv_dir` is not set; the photo folder, or None."""
    if "opencv" not in list(d.sources) or d.get("folder") or d.get("opencv_dir"):
        return None
    from diffusekit.core.app.debian_packages import unpack_package

    return unpack_package(OPENCV_PACKAGE, data_cache("image")) / OPENCV_DATA


def _opencv(d: DictConfig, out: ImageSet) -> None:
    folder = opencv_dir(d)
    if not folder.is_dir():
        log.info("image data: opencv-doc is not unpacked at %s (toolkit prepare --domain image "
                 "fetches it); its photos are not used", folder)
        return
    for stem in OPENCV_PHOTOS:
        paths = sorted(p for p in folder.glob(f"{stem}.*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            out.skipped[f"opencv/{stem}"] = "missing"
            continue
        try:
            out.images[f"opencv/{stem}"] = read_image_file(paths[0])
        except Exception as exc:
            out.skipped[f"opencv/{stem}"] = f"unreadable ({type(exc).__name__})"


SOURCES.register("skimage", _skimage)
SOURCES.register("sklearn", _sklearn)
SOURCES.register("opencv", _opencv)


def load_images(d: DictConfig) -> ImageSet:
    """Every image of `d.folder` (when set) or of the sources `d.sources`, as uint8 [3, H, W];
    images smaller than `d.patch_size` on a side are skipped. `DataError` when none is usable."""
    out = ImageSet()
    if d.get("folder"):
        folder = Path(str(d.folder)).expanduser()
        if not folder.is_dir():
            raise DataError(f"image folder {str(folder)!r} does not exist or is not a folder")
        _read_folder(folder, "folder", out)
        where = f"folder {str(folder)!r}"
    else:
        for source in d.sources:
            SOURCES.get(source)(d, out)
        where = f"sources {list(d.sources)}"
    patch = int(d.patch_size)
    for name in [n for n, im in out.images.items() if min(im.shape[-2:]) < patch]:
        out.skipped[name] = f"smaller than a {patch}-pixel patch"
        del out.images[name]
    if out.skipped:
        print(f"image data: skipped {len(out.skipped)} of {len(out.skipped) + len(out.images)} "
              f"images ({', '.join(f'{k}: {v}' for k, v in list(out.skipped.items())[:3])}"
              f"{', ...' if len(out.skipped) > 3 else ''})", file=sys.stderr)
    if len(out.images) < 2:
        raise DataError(f"image data: {len(out.images)} usable image(s) in {where} "
                        f"(need at least 2 for a train / test split; {len(out.skipped)} skipped)")
    return out


def split_images(names: list[str], d: DictConfig) -> dict[str, list[str]]:
    """{"train", "validate", "test"} lists of image names, split by image. With the package sources:
    the fixed `d.test_images` and `d.val_images`; with a folder: a `d.folder_holdout` fraction
    (at least one image) held out by a seeded shuffle, its first image for validation when more
    than one is held out."""
    names = sorted(names)
    if d.get("folder"):
        order = names[:]
        random.Random(int(d.seed)).shuffle(order)
        n_out = min(len(order) - 1, max(1, round(float(d.folder_holdout) * len(order))))
        held, train = order[:n_out], sorted(order[n_out:])
        val, test = (held[:1], held[1:]) if len(held) > 1 else (held, held)
        return {"train": train, "validate": sorted(val), "test": sorted(test)}
    test = [n for n in d.test_images if n in names]
    val = [n for n in d.val_images if n in names] or test[:1]
    train = [n for n in names if n not in test and n not in val]
    if not test or not train:
        raise DataError(f"image data: the split leaves {len(train)} training and {len(test)} "
                        f"test images (data.test_images: {list(d.test_images)})")
    return {"train": train, "validate": val, "test": test}


def to_float(image: Tensor) -> Tensor:
    """uint8 [.., 3, H, W] -> float32 in [-1, 1]."""
    return image.float() / 127.5 - 1.0


def random_patch(image: Tensor, size: int, rng: random.Random, augment: bool = True) -> Tensor:
    """A random size x size crop of [3, H, W], with random flips and 90-degree turns."""
    h, w = image.shape[-2:]
    i, j = rng.randint(0, h - size), rng.randint(0, w - size)
    patch = image[:, i:i + size, j:j + size]
    if augment:
        if rng.random() < 0.5:
            patch = patch.flip(-1)
        patch = torch.rot90(patch, rng.randint(0, 3), dims=(-2, -1))
    return patch


class RandomPatches(Dataset):
    """`length` random patches per epoch of the training images (image chosen in proportion to its
    area), each with a fresh degradation: item {"x0": [3, P, P], "cond": {"low_res": [3, P/s, P/s]}}."""

    def __init__(self, images: list[Tensor], size: int, degradation: Degradation,
                 length: int, augment: bool = True) -> None:
        self.images, self.size, self.degradation = images, size, degradation
        self.length, self.augment = length, augment
        self.areas = [im.shape[-1] * im.shape[-2] for im in images]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = random.Random(torch.randint(0, 2 ** 62, ()).item())  # follows torch's seeded RNG
        image = rng.choices(self.images, weights=self.areas)[0]
        hr = to_float(random_patch(image, self.size, rng, self.augment))
        return {"x0": hr, "cond": {"low_res": self.degradation(hr[None])[0]}}


class FixedImages(Dataset):
    """Precomputed high / low resolution pairs (validation patches, test images)."""

    def __init__(self, pairs: list[tuple[Tensor, Tensor]], names: list[str]) -> None:
        self.pairs, self.names = pairs, names

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        hr, lr = self.pairs[index]
        return {"x0": hr, "cond": {"low_res": lr}}


def crop_to_multiple(image: Tensor, multiple: int, size: int | None = None) -> Tensor:
    """Centre crop of [3, H, W] to `size` (when given and smaller) and to a multiple of `multiple`."""
    h, w = image.shape[-2:]
    th, tw = (min(h, size), min(w, size)) if size else (h, w)
    th, tw = th - th % multiple, tw - tw % multiple
    i, j = (h - th) // 2, (w - tw) // 2
    return image[:, i:i + th, j:j + tw]


class SRDataModule(L.LightningDataModule):
    """Train / validate / test splits of the photographs (see the module docstring)."""

    def __init__(self, d: DictConfig, degradation: Degradation) -> None:
        super().__init__()
        self.d, self.degradation = d, degradation
        self.splits: dict[str, list[str]] | None = None
        self.datasets: dict[str, Dataset] = {}

    @classmethod
    def from_config(cls, cfg: DictConfig, degradation: Degradation) -> "SRDataModule":
        """From the config's `data` section and the domain's degradation."""
        return cls(cfg.data, degradation)

    def prepare_data(self) -> None:
        """Read every source once and report the split (the opencv-doc download is the domain's
        `prepare`, `toolkit prepare --domain image`, not this: training never downloads)."""
        images = load_images(self.d)
        split = split_images(list(images.images), self.d)
        print("image data: " + "; ".join(f"{k}: {len(v)} images" for k, v in split.items()))

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        d, scale = self.d, self.degradation.scale
        images = load_images(d).images
        self.splits = split_images(list(images), d)
        self.datasets["train"] = RandomPatches(
            [images[n] for n in self.splits["train"]], int(d.patch_size), self.degradation,
            int(d.patches_per_epoch), bool(d.augment))
        rng = random.Random(int(d.seed))
        generator = torch.Generator().manual_seed(int(d.seed))
        val_images = [images[n] for n in self.splits["validate"]]
        val = []
        for k in range(int(d.val_patches)):
            hr = to_float(random_patch(val_images[k % len(val_images)], int(d.patch_size), rng,
                                       augment=False))
            val.append((hr, self.degradation(hr[None], generator)[0]))
        self.datasets["validate"] = FixedImages(val, [f"val-{k}" for k in range(len(val))])
        test = []
        for name in self.splits["test"]:
            hr = to_float(crop_to_multiple(images[name], scale, d.get("test_crop")))
            test.append((hr, self.degradation(hr[None], generator)[0]))
        self.datasets["test"] = FixedImages(test, list(self.splits["test"]))

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        self.setup()
        return DataLoader(self.datasets[split], batch_size=batch_size, shuffle=shuffle,
                          drop_last=shuffle, **loader_options(self.d))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", int(self.d.batch_size), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validate", int(self.d.batch_size), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Whole held-out images, one per batch (their sizes differ)."""
        return self._loader("test", 1, shuffle=False)
