"""Repair in the digits domain on a fake MNIST, on CPU: `toolkit inpaint` end to end on a 2-step
model (the known pixels kept exactly, files only inside --out), its bad inputs as one line and a
non-zero exit, and the repair benchmark's code path at tiny sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffusekit.core.app import cli
from diffusekit.core.app.repair import inpaint_model, parse_region
from diffusekit.core.app.training.models import load_model
from diffusekit.domains.digits.domain import DigitsDomain
from diffusekit.domains.digits.repair import read_damaged

from command_line import run_toolkit as toolkit

TINY = ["network.channels=8", "network.mults=[1,2]", "data.batch_size=8", "trainer.max_steps=2",
        "checkpoint_every=2", "val_every=2", "trainer.limit_val_batches=1", "sample.val_n=0",
        "sample.steps=2", "evaluate.classifier.epochs=1", "trainer.progress_bar=false"]


@pytest.fixture(scope="module")
def run(fake_cache, tmp_path_factory):
    """A class-conditional digits run trained for 2 steps on the fake digits."""
    root = tmp_path_factory.mktemp("runs")
    assert cli.main(["train", "--domain", "digits", f"data.cache_file={fake_cache}",
                     f"run_dir={root}", *TINY]) == 0
    (folder,) = (root / "digits").iterdir()
    return folder


@pytest.fixture
def digit(tmp_path, fakes):
    """A 56 x 56 digit PNG (a fake digit enlarged 2x), and its path."""
    images, _ = fakes.fake_digits(1)
    path = tmp_path / "my digit.png"
    Image.fromarray(images[3]).resize((56, 56), Image.NEAREST).save(path)
    return path


@pytest.mark.parametrize(("method", "weight"), [("replace", 0), ("repaint", 0), ("replace", 3)],
                         ids=["replace", "repaint", "reconstruction-guided"])
def test_inpaint_keeps_the_known_pixels_and_writes_only_into_out(run, digit, tmp_path, capsys,
                                                                 monkeypatch, method, weight):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    code, stdout, err = toolkit(capsys, "inpaint", "--run", str(run), str(digit), "--box",
                                "10,10,30,30", "--method", method, "--steps", "4", "-n", "2",
                                "--seed", "1", "--out", str(out), "inpaint.jump_length=2",
                                "inpaint.resamplings=2", f"inpaint.reconstruction={weight}")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "my_digit-comparison.png", "my_digit-repaired-0.png", "my_digit-repaired-1.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my digit.png", "out"]
    model = load_model(run)
    damaged = read_damaged(digit, parse_region(boxes=["10,10,30,30"]), model.cfg)
    expected = ((damaged.batch["x0"][0, 0] + 1) * 127.5).round().numpy()
    known = damaged.known[0, 0].numpy()
    assert known.sum() < known.size and not known[7, 7] and known[0, 0]  # box / 2 at 28 pixels
    for k in range(2):
        with Image.open(out / f"my_digit-repaired-{k}.png") as im:
            repaired = np.asarray(im, dtype=np.float64)
        assert repaired.shape == (28, 28)
        np.testing.assert_array_equal(repaired[known], expected[known])


def test_a_mask_image_and_the_label_from_the_config(run, digit, tmp_path, capsys):
    mask = np.zeros((56, 56), dtype=np.uint8)
    mask[20:40, 5:50] = 255
    Image.fromarray(mask).save(tmp_path / "hole.png")
    code, _, err = toolkit(capsys, "inpaint", "--model", str(run), str(digit), "--mask",
                           str(tmp_path / "hole.png"), "--steps", "2", "--out",
                           str(tmp_path / "o"), "repair.label=3", "--sampler", "ddim")
    assert code == 0, err
    assert (tmp_path / "o" / "my_digit-repaired.png").is_file()
    model = load_model(run)
    damaged = DigitsDomain().read_damaged(digit, parse_region(mask=tmp_path / "hole.png"),
                                          model.cfg)
    assert damaged.batch["cond"]["label"].tolist() == [10]  # the null class by default


def test_average_writes_the_mean_of_repairs(run, digit, tmp_path, capsys):
    """-n 2 --average 3: two repairs, each the mean of three (seeds 1..3 for both)."""
    code, _, err = toolkit(capsys, "inpaint", "--run", str(run), str(digit), "--box",
                           "10,10,30,30", "--steps", "2", "-n", "2", "--average", "3",
                           "--seed", "1", "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        "my_digit-comparison.png", "my_digit-repaired-0.png", "my_digit-repaired-1.png"]
    model = load_model(run)
    damaged = read_damaged(digit, parse_region(boxes=["10,10,30,30"]), model.cfg)
    mean = inpaint_model(model, damaged, steps=2, n=2, seed=1, average=3, progress=False)
    draws = [inpaint_model(model, damaged, steps=2, n=2, seed=1 + k, progress=False)
             for k in range(3)]
    assert mean.shape[0] == 2
    torch.testing.assert_close(mean, torch.stack(draws).mean(0))


@pytest.mark.parametrize("args, words", [
    (["--mask", "{small}"], "must match"),
    (["--box", "0,0,80,20"], "outside"),
    (["--box", "3,3,1,5"], "empty"),
    (["--box", "1,2,3"], "X0,Y0,X1,Y1"),
    (["--span", "0.1-0.2"], "does not take --span"),
    (["--keep", "0,1"], "does not take --keep"),
    (["--box", "1,1,5,5", "repair.label=12"], "not a class"),
    (["--box", "1,1,5,5", "--method", "repaintt"], "repaint"),
    (["--box", "1,1,5,5", "inpaint.jump_length=0", "--method", "repaint"], "jump_length"),
    (["--box", "1,1,5,5", "sample.device=tpu9"], "not a device"),
])
def test_bad_region_is_one_line_and_a_nonzero_exit(run, digit, tmp_path, capsys, args, words):
    Image.fromarray(np.zeros((20, 20), dtype=np.uint8)).save(tmp_path / "small.png")
    args = [a.replace("{small}", str(tmp_path / "small.png")) for a in args]
    code, out, err = toolkit(capsys, "inpaint", "--run", str(run), str(digit), *args, "--out",
                             str(tmp_path / "o"))
    assert code != 0 and len(err) == 1 and err[0].startswith("error:"), err
    assert words in err[0] and "Traceback" not in err[0]


def test_an_unreadable_or_missing_input_is_one_line(run, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    for path in (tmp_path / "broken.png", tmp_path / "missing.png"):
        code, _, err = toolkit(capsys, "inpaint", "--run", str(run), str(path), "--box",
                               "1,1,5,5", "--out", str(tmp_path / "o"))
        assert code != 0 and len(err) == 1 and err[0].startswith("error:"), err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_the_repair_benchmark_writes_its_record(fake_cache, tmp_path, capsys):
    results = tmp_path / "results"
    code, out, err = toolkit(
        capsys, "benchmark", "--domain", "digits", "--repair", "--quick",
        f"data.cache_file={fake_cache}", *TINY[:3], "evaluate.classifier.epochs=1",
        "trainer.progress_bar=false", "repair.quick_train_steps=2",
        "repair.quick_n_test=6", "repair.steps=[2,3]", "repair.repaint_steps=[2]",
        "repair.resamplings=[2]", "repair.jump_length=1", "repair.mean_of=2",
        "repair.mean_steps=2", "repair.label_steps=2", "repair.samplers=[ddpm,ddim]",
        "repair.grid_rows=2", f"repair.results_dir={results}", "benchmark.lr_decay=constant",
        "repair.reconstruction=[3]", "repair.reconstruction_steps=[2]")
    assert code == 0, err
    record = json.loads((results / "digits_repair_quick.json").read_text())
    rows = record["metrics"]["rows"]
    assert {r["mask"] for r in rows} == {"box", "strokes"}
    assert {r["setting"] for r in rows} >= {"replace-2 (ddpm)", "replace-3 (ddim)", "replace-2 +rg3 (ddpm)",
                                              "repaint-2x2-j1 (ddpm)", "mean of 2 x replace-2 (ddpm)"}
    assert [r["nfe"] for r in rows if r["setting"] == "repaint-2x2-j1 (ddpm)"] == [3, 3]
    assert [r["nfe"] for r in rows if r["setting"] == "replace-2 +rg3 (ddpm)"] == [6, 6]
    assert {r["curve"] for r in rows if r["setting"] == "replace-2 +rg3 (ddpm)"} == {"replace +rg3 (ddpm)"}
    assert set(record["baselines"]) >= {"biharmonic_box", "biharmonic_strokes"}
    assert "target_box" in record["metrics"]
    assert (results / "digits_repair_quick.png").is_file()
    assert "biharmonic" in (results / "digits_repair_quick.md").read_text()
