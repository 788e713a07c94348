"""Image sources, the split by image, user folders and bad image input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffusekit.core.app import cli, config
from diffusekit.core.errors import DataError
from diffusekit.domains.image.data import SRDataModule, load_images, split_images
from diffusekit.domains.image.degradation import Degradation
from diffusekit.domains.image.domain import ImageDomain


def data_config(**overrides):
    cfg = config.compose(ImageDomain().default_config(), domain="image",
                         overrides=[f"data.{k}={v}" for k, v in overrides.items()])
    return cfg


def write_photos(folder, n, size=(80, 96), seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo-{i}.png")


def test_package_sources_split_by_image_with_a_fixed_test_set():
    cfg = data_config()
    images = load_images(cfg.data)
    assert {"skimage/astronaut", "skimage/chelsea", "sklearn/china", "sklearn/flower"} <= set(images.images)
    split = split_images(list(images.images), cfg.data)
    assert split["test"] == sorted(cfg.data.test_images)
    assert split["validate"] == ["skimage/rocket"]
    assert not set(split["train"]) & (set(split["test"]) | set(split["validate"]))
    assert len(split["train"]) >= 10
    assert all(im.dtype == torch.uint8 and im.shape[0] == 3 for im in images.images.values())


def test_folder_skips_and_counts_unreadable_files(tmp_path, capsys):
    write_photos(tmp_path / "photos", 4)
    (tmp_path / "photos" / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "photos" / "tiny.png").write_bytes(b"")
    write_photos(tmp_path / "photos" / "small", 1, size=(20, 20))
    (tmp_path / "photos" / "notes.txt").write_text("ignored: not an image suffix")
    cfg = data_config(folder=str(tmp_path / "photos"), patch_size=32, test_crop=48)
    images = load_images(cfg.data)
    assert len(images.images) == 4
    assert set(images.skipped) == {"folder/broken.png", "folder/tiny.png", "folder/small/photo-0.png"}
    assert "skipped 3 of 7 images" in capsys.readouterr().err
    dm = SRDataModule.from_config(cfg, Degradation(4))
    dm.setup()
    assert len(dm.splits["train"]) == 3 and len(dm.splits["test"]) == 1
    batch = next(iter(dm.train_dataloader()))
    n = int(cfg.data.batch_size)
    assert batch["x0"].shape == (n, 3, 32, 32) and batch["cond"]["low_res"].shape == (n, 3, 8, 8)
    assert -1.0 <= batch["x0"].min() and batch["x0"].max() <= 1.0
    test = next(iter(dm.test_dataloader()))
    assert test["x0"].shape == (1, 3, 48, 48)


def test_bad_folders_raise_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_images(data_config(folder=str(tmp_path / "missing")).data)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_bytes(b"\x00\x01garbage")
    with pytest.raises(DataError, match="0 usable image"):
        load_images(data_config(folder=str(tmp_path / "junk")).data)


@pytest.mark.parametrize("make", ["missing", "garbage"])
def test_cli_bad_image_input_is_one_line_and_nonzero(tmp_path, capsys, monkeypatch, make):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "images"
    if make == "garbage":
        folder.mkdir()
        (folder / "x.png").write_bytes(b"garbage")
    code = cli.main(["train", "--domain", "image", f"data.folder={folder}", "trainer.max_steps=1"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code != 0
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and "image" in errors[0], err
    assert not any("Traceback" in line for line in err)
