"""opencv-doc's photos as an image source: where they are looked for, which are read, and
`toolkit prepare --domain image` fetching them (offline: a pre-unpacked cache or a built .deb)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from diffusekit.core.app import config, debian_packages
from diffusekit.domains.image import data
from diffusekit.domains.image.data import (OPENCV_DATA, OPENCV_PHOTOS, fetch_opencv, load_images,
                                           opencv_dir, split_images)
from diffusekit.domains.image.domain import ImageDomain


def image_config(*overrides: str):
    return config.compose(ImageDomain().default_config(), domain="image", overrides=list(overrides))


def write_examples(folder, names, size=(72, 88)):
    """Random colour PNGs named `names` (and one grey JPEG, baboon) in `folder`."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name == "baboon":
            Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(folder / "baboon.jpg")
        else:
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"{name}.png")


def test_only_the_listed_photographs_are_read(tmp_path):
    write_examples(tmp_path / "ocv", ["baboon", "fruits", "chessboard", "left01", "pic1"])
    cfg = image_config(f"data.opencv_dir={tmp_path / 'ocv'}", "data.sources=[opencv]",
                       "data.test_images=[opencv/fruits]", "data.val_images=[]")
    images = load_images(cfg.data)
    assert set(images.images) == {"opencv/baboon", "opencv/fruits"}
    assert images.images["opencv/baboon"].shape == (3, 72, 88)  # grey read as 3 equal channels
    assert (images.images["opencv/baboon"][0] == images.images["opencv/baboon"][2]).all()
    assert images.skipped["opencv/apple"] == "missing"
    assert "opencv/chessboard" not in images.skipped  # not a photograph: never looked at
    split = split_images(list(images.images), cfg.data)
    assert split["test"] == ["opencv/fruits"] and split["train"] == ["opencv/baboon"]


def test_photos_are_looked_for_in_the_data_cache_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSEKIT_DATA", str(tmp_path / "cache"))
    cfg = image_config()
    assert cfg.data.opencv_dir is None
    cached = tmp_path / "cache" / "image" / "opencv-doc" / OPENCV_DATA
    assert opencv_dir(cfg.data) == cached
    assert opencv_dir(image_config(f"data.opencv_dir={tmp_path}/mine").data) == tmp_path / "mine"
    # absent: harmless, the other sources are still read
    images = load_images(cfg.data)
    assert not any(name.startswith("opencv/") for name in images.images)
    assert len(split_images(list(images.images), cfg.data)["train"]) >= 10
    write_examples(cached, ["apple", "home"])
    assert {"opencv/apple", "opencv/home"} <= set(load_images(cfg.data).images)


def test_prepare_reuses_an_unpacked_cache_and_adds_its_photos(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFUSEKIT_DATA", str(tmp_path / "cache"))
    root = tmp_path / "cache" / "image" / "opencv-doc"
    write_examples(root / OPENCV_DATA, OPENCV_PHOTOS[:3])
    (root / debian_packages.MARKER).write_text("unpacked\n")

    def no_download(*args, **kwargs):
        raise AssertionError("an unpacked cache must not be downloaded again")

    monkeypatch.setattr(debian_packages, "apt_download", no_download)
    ImageDomain().prepare(image_config())
    out = capsys.readouterr().out
    assert f"opencv-doc's photos are in {root / OPENCV_DATA}" in out
    assert "validate: 1 images; test: 3 images" in out
    # an explicit folder, a user folder or no opencv source: nothing to fetch
    for override in (f"data.opencv_dir={tmp_path}", f"data.folder={tmp_path}",
                     "data.sources=[skimage]"):
        assert fetch_opencv(image_config(override).data) is None


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_fetch_unpacks_the_package_into_the_image_cache(tmp_path, monkeypatch):
    src = tmp_path / "pkg"
    (src / "DEBIAN").mkdir(parents=True)
    (src / "DEBIAN" / "control").write_text(
        "Package: opencv-doc\nVersion: 0\nArchitecture: all\nMaintainer: t <t@example.org>\n"
        "Description: test\n")
    write_examples(src / OPENCV_DATA, ["apple"])
    deb = tmp_path / "opencv-doc_0_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(src), str(deb)], check=True,
                   capture_output=True)
    monkeypatch.setattr(debian_packages, "apt_download",
                        lambda package, folder: shutil.copy(deb, folder) and folder / deb.name)
    monkeypatch.setenv("DIFFUSEKIT_DATA", str(tmp_path / "cache"))
    cfg = image_config()
    folder = fetch_opencv(cfg.data)
    assert folder == tmp_path / "cache" / "image" / "opencv-doc" / OPENCV_DATA
    photos = {n for n in load_images(cfg.data).images if n.startswith("opencv/")}
    assert photos == {"opencv/apple"}  # the test package's one photo, not the real package's
    assert data.opencv_dir(cfg.data) == folder
    assert OmegaConf.select(cfg, "benchmark.fetch_opencv") is True
