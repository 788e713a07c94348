"""Repair in the image domain on CPU: `toolkit inpaint` with a 2-step super-resolution model and a
2-step hole model (the known pixels exactly the input's, the conditioning made without the hole's
content, files only inside --out), and its bad inputs as one line and a non-zero exit."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from diffusekit.core.app import cli
from diffusekit.core.app.repair import inpaint_model, parse_region
from diffusekit.core.app.training.models import load_model
from diffusekit.domains.image.degradation import smooth_fill
from diffusekit.domains.image.repair import read_damaged

from command_line import run_toolkit as toolkit

TINY = ["network.channels=8", "network.mults=[1,2]", "data.patch_size=32", "data.batch_size=4",
        "data.val_patches=4", "data.test_crop=64", "trainer.max_steps=2", "checkpoint_every=2",
        "val_every=2", "trainer.limit_val_batches=1", "sample.val_n=0", "sample.steps=2",
        "process.tile=32", "process.tile_overlap=8", "trainer.progress_bar=false"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Four 64 x 64 crops of scikit-image's photographs."""
    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        Image.fromarray(np.asarray(getattr(skimage.data, name)())[100:164, 100:164]).save(
            folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module", params=["bicubic", "holes"])
def run(request, photos, tmp_path_factory):
    """A 2-step image run on the photos: a super-resolution model and a hole model."""
    root = tmp_path_factory.mktemp("runs")
    assert cli.main(["train", "--domain", "image", f"data.folder={photos}",
                     "data.folder_holdout=0.5", f"run_dir={root}", *TINY,
                     f"degradation.kind={request.param}"]) == 0
    (path,) = (root / "image").iterdir()
    return path


@pytest.fixture
def photo(tmp_path):
    """A 50 x 38 photo (sides not multiples of the scale)."""
    path = tmp_path / "photo.png"
    Image.fromarray(np.asarray(skimage.data.astronaut())[:38, 200:250]).save(path)
    return path


@pytest.mark.parametrize("method", ["replace", "repaint"])
def test_inpaint_keeps_the_known_pixels(run, photo, tmp_path, capsys, monkeypatch, method):
    monkeypatch.chdir(tmp_path)
    code, _, err = toolkit(capsys, "inpaint", "--run", str(run), str(photo), "--box",
                           "10,8,30,20", "--method", method, "--steps", "3", "--out", "out",
                           "inpaint.jump_length=1", "inpaint.resamplings=2")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo-comparison.png",
                                                                    "photo-repaired.png"]
    with Image.open(photo) as a, Image.open(tmp_path / "out" / "photo-repaired.png") as b:
        given, repaired = np.asarray(a.convert("RGB")), np.asarray(b)
    assert repaired.shape == given.shape == (38, 50, 3)
    known = np.ones((38, 50), dtype=bool)
    known[8:20, 10:30] = False
    np.testing.assert_array_equal(repaired[known], given[known])


def test_average_writes_the_mean_of_repairs(run, photo, tmp_path, capsys):
    """--average K: one repair per output, the mean of K drawn with seeds seed .. seed + K - 1."""
    code, _, err = toolkit(capsys, "inpaint", "--run", str(run), str(photo), "--box",
                           "10,8,30,20", "--steps", "2", "--average", "3", "--out",
                           str(tmp_path / "out"))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo-comparison.png",
                                                                    "photo-repaired.png"]
    model = load_model(run)
    damaged = read_damaged(photo, parse_region(boxes=["10,8,30,20"]), model.cfg)
    mean = inpaint_model(model, damaged, steps=2, seed=4, average=3, progress=False).image
    draws = [inpaint_model(model, damaged, steps=2, seed=4 + k, progress=False).image
             for k in range(3)]
    torch.testing.assert_close(mean, torch.stack(draws).mean(0))
    assert not torch.equal(draws[0], draws[1])


def test_the_low_resolution_does_not_see_the_hole(run, photo, tmp_path):
    """Two photos that differ only inside the hole give the same conditioning and known part."""
    cfg = load_model(run).cfg
    with Image.open(photo) as im:
        pixels = np.asarray(im.convert("RGB")).copy()
    pixels[8:20, 10:30] = 255 - pixels[8:20, 10:30]
    other = tmp_path / "other.png"
    Image.fromarray(pixels).save(other)
    region = parse_region(boxes=["10,8,30,20"])
    a, b = read_damaged(photo, region, cfg), read_damaged(other, region, cfg)
    assert torch.equal(a.batch["cond"]["low_res"], b.batch["cond"]["low_res"])
    assert torch.equal(a.batch["x0"], b.batch["x0"])
    padded = (1, 1, 40, 52) if cfg.degradation.kind == "bicubic" else (1, 1, 38, 50)
    assert a.known.shape == padded  # padded to multiples of the scale


def test_smooth_fill_keeps_known_pixels_and_fills_a_constant_exactly():
    x = torch.full((1, 3, 9, 7), 0.25)
    known = torch.ones(1, 1, 9, 7, dtype=torch.bool)
    known[..., 2:6, 1:5] = False
    damaged = torch.where(known, x, torch.full_like(x, -1.0))
    torch.testing.assert_close(smooth_fill(damaged, known), x)


@pytest.mark.parametrize("args, words", [
    (["--mask", "{small}"], "must match"),
    (["--box", "40,0,60,10"], "outside"),
    (["--keep", "1"], "does not take --keep"),
    (["--box", "0,0,50,38"], "whole input"),
])
def test_bad_region_is_one_line_and_a_nonzero_exit(run, photo, tmp_path, capsys, args, words):
    Image.fromarray(np.zeros((20, 20), dtype=np.uint8)).save(tmp_path / "small.png")
    args = [a.replace("{small}", str(tmp_path / "small.png")) for a in args]
    code, _, err = toolkit(capsys, "inpaint", "--run", str(run), str(photo), *args, "--out",
                           str(tmp_path / "o"))
    assert code != 0 and len(err) == 1 and err[0].startswith("error:"), err
    assert words in err[0]


def test_an_unreadable_input_is_one_line(run, tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    code, _, err = toolkit(capsys, "inpaint", "--run", str(run), str(tmp_path / "notes.png"),
                           "--box", "1,1,5,5", "--out", str(tmp_path / "o"))
    assert code != 0 and len(err) == 1 and "cannot be read" in err[0], err
