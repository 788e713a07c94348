"""The image domain's hole degradation (`degradation.kind=holes`, photo inpainting): what a
training pair looks like, a hole model's network and samples (the known pixels kept exactly), and
the repair benchmark on held-out photos writing its record."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
import torch
from omegaconf import OmegaConf
from PIL import Image

from diffusekit.core.app import cli
from diffusekit.domains.image.degradation import (DEGRADATIONS, Degradation, Holes,
                                                  degradation_of, smooth_fill)
from diffusekit.domains.image.domain import ImageDomain
from diffusekit.domains.image.metrics import image_metrics

from command_line import run_toolkit as toolkit

TINY = ["network.channels=8", "network.blocks=2", "data.patch_size=32", "data.batch_size=4",
        "data.val_patches=4", "data.test_crop=32", "sample.val_n=0", "sample.steps=2",
        "process.tile=32", "process.tile_overlap=8", "trainer.progress_bar=false",
        "degradation.kind=holes"]


def _photos(x: int = 0) -> torch.Tensor:
    image = np.asarray(skimage.data.astronaut())[100 + x:148 + x, 120:168]
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def test_a_training_pair_keeps_the_known_pixels_and_marks_the_hole():
    holes = Holes(box_share=0.5, box_min=0.2, box_max=0.5, strokes=3, stroke_width=3.0)
    x = torch.cat([_photos(k) for k in range(0, 64, 8)])  # 8 photos of 48 x 48
    y = holes(x, torch.Generator().manual_seed(0))
    assert y.shape == (8, 4, 48, 48) and Holes.cond_channels == 4 and holes.scale == 1
    known = holes.known(y)
    assert set(y[:, 3].unique().tolist()) <= {0.0, 1.0}
    lost = (~known).flatten(1).float().mean(1)
    assert bool((lost > 0.0).all()) and bool((lost < 0.75).all())
    torch.testing.assert_close(y[:, :3][known.expand(-1, 3, -1, -1)],
                               x[known.expand(-1, 3, -1, -1)])
    assert torch.equal(holes.upsample(y), y[:, :3]) and torch.equal(holes.seen(y), y)
    # the view blackens the holes; project puts the known pixels back exactly
    view = holes.view(y)
    assert bool((view[(~known).expand(-1, 3, -1, -1)] == -1.0).all())
    noise = torch.randn_like(x)
    projected = holes.project(noise, y, 1)
    assert torch.equal(projected[known.expand(-1, 3, -1, -1)], x[known.expand(-1, 3, -1, -1)])
    # boxes and strokes both occur, with the same seed the same holes
    assert torch.equal(holes(x, torch.Generator().manual_seed(0)), y)


def test_the_degradation_registry_and_bad_hole_options():
    assert set(DEGRADATIONS.names()) >= {"bicubic", "holes"}
    cfg = OmegaConf.create({"degradation": {"kind": "bicubic", "scale": 4, "blur_sigma": 0.0,
                                            "noise_std": 0.0, "holes": {}}})
    assert degradation_of(cfg) == Degradation(4)
    cfg.degradation.kind = "holes"
    cfg.degradation.holes = {"box_max": 0.3, "unshuffle": 2}
    assert degradation_of(cfg) == Holes(box_max=0.3, unshuffle=2)
    with pytest.raises(ValueError):
        Holes(box_min=0.6, box_max=0.5)


def test_a_hole_model_conditions_on_the_mask_and_keeps_the_known_pixels():
    from diffusekit.core.app.config import compose

    domain = ImageDomain()
    cfg = compose(domain.default_config(), domain="image", overrides=[
        "degradation.kind=holes", "network.channels=8", "network.blocks=1", "process.steps=3"])
    network, process = domain.build_network(cfg).eval(), domain.process(cfg)
    assert network.scale == 4  # the trunk keeps the SR model's resolution
    assert network.stem.in_channels == (3 + 4) * 16
    with torch.no_grad():  # a random network draws anything in the holes ...
        for p in network.head.parameters():
            p.normal_(0, 0.5)
    x = _photos()
    known = torch.ones(1, 1, 48, 48, dtype=torch.bool)
    known[..., 10:30, 5:25] = False
    y = process.degradation.damaged_condition(smooth_fill(x, known), known)
    batch = {"x0": x, "cond": {"low_res": y}}
    with torch.no_grad():
        out = process.generate(network, batch, generator=torch.Generator().manual_seed(0))
    # ... but every sample keeps the known pixels exactly, and says so in the metrics
    assert torch.equal(out.image[known.expand(-1, 3, -1, -1)], x[known.expand(-1, 3, -1, -1)])
    assert not torch.equal(out.image, out.bicubic)
    assert torch.equal(out.reference, x)
    scores = image_metrics(out.image, x, y, process.degradation)
    assert float(scores["consistency"]) > 100.0


def test_refine_is_refused_for_a_hole_model(tmp_path, capsys):
    code, _, err = toolkit(capsys, "train", "--domain", "image", "degradation.kind=holes",
                           "process.kind=refine", f"run_dir={tmp_path}")
    assert code != 0 and len(err) == 1 and "super-resolution" in err[0], err


def test_the_repair_benchmark_writes_its_record(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        Image.fromarray(np.asarray(getattr(skimage.data, name)())[100:180, 100:180]).save(
            folder / f"{name}.png")
    results = tmp_path / "results"
    code, out, err = toolkit(
        capsys, "benchmark", "--domain", "image", "--repair", "--quick", *TINY[:-1],
        f"data.folder={folder}", "data.folder_holdout=0.5", "benchmark.fetch_opencv=false",
        "repair.quick_train_steps=2", "repair.quick_n_test=4", "repair.crop=32",
        "repair.steps=[1,2]", "repair.repaint_steps=[2]", "repair.resamplings=[2]",
        "repair.jump_length=1", "repair.reconstruction=[3]", "repair.reconstruction_steps=[2]",
        "repair.figure_rows=2", f"repair.results_dir={results}", "benchmark.lr_decay=constant")
    assert code == 0, err
    record = json.loads((results / "image_repair_quick.json").read_text())
    metrics, baselines = record["metrics"], record["baselines"]
    assert metrics["n_test"] == 4 and metrics["crop"] == 32 and metrics["train_steps"] == 2
    assert metrics["train_overrides"] == ["degradation.kind=holes"]
    settings = {(row["mask"], row["setting"]) for row in metrics["rows"]}
    assert ("box", "replace-2 (ddpm)") in settings and ("strokes", "replace-1 (ddim)") in settings
    assert ("box", "repaint-2x2-j1 (ddpm)") in settings
    assert ("box", "replace-2 +rg3 (ddpm)") in settings
    assert {row["nfe"] for row in metrics["rows"] if "+rg3" in row["setting"]} == {6}
    means = [row for row in metrics["rows"] if row["repairs_averaged"] > 1]  # the config's default
    assert {(row["mask"], row["setting"], row["nfe"]) for row in means} >= {
        ("box", "mean of 8 x replace-1 (ddpm)", 8), ("strokes", "mean of 2 x replace-1 (ddpm)", 2)}
    for kind in ("box", "strokes"):
        for name in ("biharmonic", "smooth_fill", "regression"):  # regression: same network, steps
            assert 5.0 < baselines[f"{name}_{kind}"]["hole_psnr"] < 80.0
        assert baselines[f"regression_{kind}"]["nfe"] == 1
        target = metrics[f"target_{kind}"]
        assert target["beats_biharmonic"] == (target["best_hole_psnr"]
                                              > target["biharmonic_hole_psnr"])
    assert 0.1 < metrics["hole_fraction"]["box"] < 0.25
    assert all(0.0 < row["hole_ssim"] <= 1.0 for row in metrics["rows"])
    assert (results / "image_repair_quick.png").stat().st_size > 10_000
    text = (results / "image_repair_quick.md").read_text()
    assert "target" in text and "regression baseline (same network and steps)" in text
    assert metrics["regression_train_seconds"] > 0
