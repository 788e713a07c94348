"""A few-step train + sample + evaluate of the image domain through the command line, on CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import skimage.data
from PIL import Image

from diffusekit.core.app import cli

TINY = ["network.channels=8", "network.mults=[1,2]", "data.patch_size=32", "data.batch_size=4",
        "data.val_patches=4", "data.test_crop=64", "trainer.max_steps=4", "checkpoint_every=2",
        "val_every=2", "trainer.limit_val_batches=1", "sample.val_n=2", "sample.steps=2",
        "process.tile=32", "process.tile_overlap=8"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Five real 96x112 crops of scikit-image's photographs, as PNG files."""
    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry"):
        Image.fromarray(np.asarray(getattr(skimage.data, name)())[100:196, 100:212]).save(
            folder / f"{name}.png")
    return folder


def toolkit(capsys, *args):
    capsys.readouterr()
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_sample_evaluate_through_the_cli(photos, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = toolkit(capsys, "train", "--domain", "image", f"data.folder={photos}",
                             "data.folder_holdout=0.4", *TINY)
    assert code == 0, err
    (run,) = (tmp_path / "runs" / "image").iterdir()
    assert (run / "model.safetensors").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "samples" / "step-000004" / "grid.png").is_file()  # validation samples
    assert json.loads((run / "metrics.json").read_text())["step"] == 4

    code, out, err = toolkit(capsys, "sample", "--run", str(run), "--sampler", "dpmpp_2m",
                             "--steps", "2", "-n", "1")
    assert code == 0, err
    folder = run / "samples" / "dpmpp_2m-2"
    names = {p.name for p in folder.iterdir()}
    assert {"grid.png", "sr-000.png", "bicubic-000.png", "low_res-000.png",
            "reference-000.png"} <= names
    with Image.open(folder / "sr-000.png") as im, Image.open(folder / "low_res-000.png") as lr:
        assert im.size == (64, 64) and lr.size == (16, 16)

    code, out, err = toolkit(capsys, "evaluate", "--run", str(run), "--steps", "2")
    assert code == 0, err
    evaluation = json.loads((run / "metrics.json").read_text())["evaluation"]["metrics"]
    for key in ("psnr_y", "ssim_y", "consistency", "bicubic_psnr_y", "bicubic_consistency"):
        assert np.isfinite(evaluation[key]), key
    assert 15.0 < evaluation["bicubic_psnr_y"] < 50.0

    # the one-step regression baseline: the same network trained as a regression, scored beside
    code, out, err = toolkit(capsys, "train", "--domain", "image", f"data.folder={photos}",
                             "data.folder_holdout=0.4", "process.kind=regression",
                             "run_dir=regression_runs", *TINY, "trainer.max_steps=2",
                             "sample.val_n=0")
    assert code == 0, err
    (regression_run,) = (tmp_path / "regression_runs" / "image").iterdir()
    run_cfg = run / "config.yaml"
    run_cfg.write_text(run_cfg.read_text().replace("regression_run: null",
                                                   f"regression_run: {regression_run}"))
    code, out, err = toolkit(capsys, "evaluate", "--run", str(run), "--steps", "1")
    assert code == 0, err
    assert "regression_psnr_y" in out and "bicubic_psnr_y" in out
