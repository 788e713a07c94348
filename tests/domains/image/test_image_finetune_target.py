"""The image domain's customisation target: pages of text built into the data cache, a valid
folder split, at most 10% of the base's training pixels, scans only in training."""

from __future__ import annotations

import numpy as np
import pytest

from diffusekit.core.app import config
from diffusekit.core.errors import DataError
from diffusekit.domains.image.data import SRDataModule, load_images, split_images
from diffusekit.domains.image.degradation import degradation_of
from diffusekit.domains.image.documents import (
    DOCUMENTS_FOLDER, MAX_SHARE, PAGE_SIZE, TEST_PAGES, base_training_data, build_documents,
    render_page)
from diffusekit.domains.image.domain import ImageDomain


def image_config(*overrides: str):
    return config.compose(ImageDomain().default_config(), domain="image", overrides=overrides)


def test_finetune_target_builds_a_small_document_set_in_the_data_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFUSEKIT_DATA", str(tmp_path / "data"))
    cfg = image_config()
    target = ImageDomain().finetune_target(cfg)
    assert (target["metric"], target["higher_is_better"]) == ("psnr_y", True)
    folder = tmp_path / "data" / "image" / DOCUMENTS_FOLDER
    assert f"data.folder={folder}" in target["overrides"]

    on_target = config.override(cfg, overrides=target["overrides"])
    images = load_images(on_target.data).images
    split = split_images(list(images), on_target.data)
    assert len(split["test"]) == TEST_PAGES and len(split["validate"]) == 1
    # the base's skimage source holds both scans: they must never be scored
    scans = [n for n in images if "-scan-" in n]
    assert len(scans) == 2 and set(scans) <= set(split["train"])
    assert all("-page-" in name for name in split["test"] + split["validate"])
    assert all(images[n].shape == (3, *PAGE_SIZE) for n in split["test"])

    base_images, base_pixels = base_training_data(cfg.data)
    pixels = sum(images[n].shape[-1] * images[n].shape[-2] for n in split["train"])
    assert 0 < pixels <= MAX_SHARE * base_pixels
    assert len(split["train"]) < base_images

    module = SRDataModule.from_config(on_target, degradation_of(on_target))
    batch = next(iter(module.test_dataloader()))
    assert batch["x0"].shape == (1, 3, *PAGE_SIZE) and batch["x0"].min() >= -1
    assert batch["cond"]["low_res"].shape == (1, 3, PAGE_SIZE[0] // 4, PAGE_SIZE[1] // 4)


def test_pages_hold_dark_text_on_light_paper_and_follow_the_seed():
    page = render_page(0)
    assert page.shape == (*PAGE_SIZE, 3) and page.dtype == np.uint8
    grey = page.mean(axis=-1)
    ink = (grey < 100).mean()
    assert np.median(grey) > 200 and 0.02 < ink < 0.3  # mostly paper, a fair share of strokes
    assert np.array_equal(page, render_page(0)) and not np.array_equal(page, render_page(1))


@pytest.mark.parametrize("seed", [1, 7])
def test_scans_stay_in_training_for_any_data_seed(tmp_path, seed):
    d = image_config(f"data.seed={seed}").data
    docs = build_documents(d, tmp_path / "docs")
    assert sorted(n for n in docs.split["train"] if "-scan-" in n) == sorted(
        n.name for n in (tmp_path / "docs").glob("*-scan-*.png"))
    assert len(docs.split["test"]) == TEST_PAGES


def test_a_rebuild_replaces_its_own_files_and_refuses_a_foreign_one(tmp_path):
    d = image_config().data
    build_documents(image_config("data.seed=3").data, tmp_path / "docs")
    docs = build_documents(d, tmp_path / "docs")
    assert sorted(p.name for p in docs.folder.iterdir()) == sorted(
        sum(docs.split.values(), []))
    (docs.folder / "holiday.jpg").write_bytes(b"mine")
    with pytest.raises(DataError, match="holiday.jpg"):
        build_documents(d, docs.folder)
    assert (docs.folder / "holiday.jpg").read_bytes() == b"mine"


def test_a_base_on_a_small_folder_is_refused(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("DIFFUSEKIT_DATA", str(tmp_path / "data"))
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        Image.fromarray(np.full((128, 128, 3), 40 * i, np.uint8)).save(photos / f"p{i}.png")
    with pytest.raises(DataError, match="at most 10%"):
        ImageDomain().finetune_target(image_config(f"data.folder={photos}"))
