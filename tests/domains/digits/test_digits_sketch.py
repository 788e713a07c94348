"""Sketch -> digit (issue 17, part 4), on CPU: the digits domain's ControlNet hints (Canny edges,
a 7 x 7 thumbnail) on drawn digits, the edge F1 and thumbnail error on known maps, and an edge
control (and a thumbnail one beside it) trained and sampled through the command line on a fake
MNIST."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffusekit.core.app import cli
from diffusekit.core.control import ControlSpec
from diffusekit.core.errors import DataError
from diffusekit.domains.digits import sketch
from diffusekit.domains.digits.domain import DigitsDomain

TINY = ["network.channels=8", "network.mults=[1,2]", "data.batch_size=8", "trainer.max_steps=2",
        "checkpoint_every=2", "val_every=2", "trainer.limit_val_batches=1", "sample.val_n=0",
        "sample.steps=2", "sample.batch_size=10", "evaluate.classifier.epochs=1",
        "trainer.progress_bar=false"]


# a control's zero layers move visibly in 2 steps: no warm-up, a high rate, a short EMA
MOVE = ["optim.lr=0.02", "optim.warmup_steps=0", "ema.decay=0.5"]


def square(side: int = 28, top: int = 8, size: int = 12) -> torch.Tensor:
    """One digit [1, 1, side, side] in the model's range: a bright filled square on black."""
    x = -torch.ones(1, 1, side, side)
    x[..., top:top + size, top:top + size] = 1.0
    return x


# ------------------------------------------------------------------------------------ hints
def test_the_domain_declares_the_sketch_hints_and_blocks():
    domain = DigitsDomain()
    assert set(domain.control_hints()) == {"edges", "thumbnail"}
    assert domain.control_blocks == ("down.*.blocks.*", "mid")


def test_edges_of_a_drawn_square_lie_on_its_border():
    edges = sketch.edge_hint({"x0": square()})
    assert edges.shape == (1, 1, 28, 28) and edges.dtype == torch.float32
    assert set(edges.unique().tolist()) <= {0.0, 1.0}
    on = edges[0, 0].nonzero()
    assert len(on) > 20
    # every edge pixel within a pixel of the square's border (rows / columns 8 and 19)
    border = torch.zeros(28, 28)
    border[7:21, 7:21], border[9:19, 9:19] = 1, 0
    assert border[on[:, 0], on[:, 1]].all()
    assert edges[0, 0, 12:16, 12:16].sum() == 0 and edges[0, 0, :5].sum() == 0
    assert sketch.edge_hint({"x0": -torch.ones(2, 1, 28, 28)}).sum() == 0  # blank: no edges


def test_the_thumbnail_is_the_7x7_mean_of_the_digit():
    x = square(top=8, size=12)  # cells 2..4 full, rows / columns 8..19 = cells 2..4
    thumb = sketch.thumbnail_hint({"x0": torch.cat([x, -torch.ones_like(x)])})
    assert thumb.shape == (2, 1, 7, 7)
    expected = torch.zeros(7, 7)
    expected[2:5, 2:5] = 1.0
    assert torch.allclose(thumb[0, 0], expected) and thumb[1].sum() == 0
    half = -torch.ones(1, 1, 28, 28)
    half[..., :2, :] = 1.0  # two of a cell's four rows: half its intensity
    assert torch.allclose(sketch.thumbnail_hint({"x0": half})[0, 0, 0], torch.full((7,), 0.5))


# ---------------------------------------------------------------------------------- metrics
def test_edge_f1_on_known_maps():
    a = torch.zeros(1, 1, 16, 16)
    a[0, 0, 4, 3:12] = 1  # a horizontal line
    shifted = torch.roll(a, 1, dims=2)  # one row down
    far = torch.roll(a, 6, dims=2)
    assert sketch.edge_map_f1(a, a, 1).item() == 1.0
    assert sketch.edge_map_f1(a, a, 0).item() == 1.0
    assert sketch.edge_map_f1(shifted, a, 1).item() == 1.0
    assert sketch.edge_map_f1(shifted, a, 0).item() == 0.0
    diagonal = torch.roll(a, (1, 1), dims=(2, 3))  # chessboard distance 1
    assert sketch.edge_map_f1(diagonal, a, 1).item() == 1.0
    assert sketch.edge_map_f1(far, a, 1).item() == 0.0  # disjoint
    half = a.clone()
    half[0, 0, 4, 8:12] = 0  # 5 of the 9 pixels: P = 1, R = 5/9 -> F1 = 2 (5/9) / (14/9)
    assert sketch.edge_map_f1(half, a, 0).item() == pytest.approx(10 / 14)
    empty = torch.zeros_like(a)
    assert sketch.edge_map_f1(empty, empty).item() == 1.0
    assert sketch.edge_map_f1(empty, a).item() == 0.0 and sketch.edge_map_f1(a, empty).item() == 0.0
    assert sketch.edge_map_f1(torch.cat([a, a]), torch.cat([a, far])).tolist() == [1.0, 0.0]


def test_edge_f1_and_thumbnail_error_of_samples_against_their_hints():
    x = square()
    edges, thumb = sketch.edge_hint({"x0": x}), sketch.thumbnail_hint({"x0": x})
    assert sketch.edge_f1(x, edges) == 1.0 and sketch.thumbnail_error(x, thumb) == 0.0
    moved = torch.roll(x, 6, dims=3)
    assert sketch.edge_f1(moved, edges) < 0.5
    assert sketch.edge_f1(torch.cat([x, x]), edges[0]) == 1.0  # one hint for every sample
    # a blank sample against the square's thumbnail: the square covers 9 of 49 cells
    assert sketch.thumbnail_error(-torch.ones_like(x), thumb) == pytest.approx(9 / 49)
    assert sketch.thumbnail_error(x, sketch.to_unit(x)) == 0.0  # a full-size reference is pooled
    with pytest.raises(DataError, match="3 hints for 2 samples"):
        sketch.edge_f1(torch.cat([x, x]), edges.expand(3, -1, -1, -1))
    with pytest.raises(DataError, match="cannot be compared"):
        sketch.edge_map_f1(edges, edges[..., :20])
    with pytest.raises(DataError, match=r"grey images \[B, 1, H, W\]"):
        sketch.thumbnail_error(x[0, 0], thumb)


# ----------------------------------------------------------------- through the command line
def toolkit(capsys, *args):
    capsys.readouterr()
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _digits(folder):
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.rglob("digit-*.png"))])


def test_an_edge_control_trains_and_samples_with_a_png_hint(fake_cache, tmp_path, capsys,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "runs"
    common = [f"data.cache_file={fake_cache}", f"run_dir={root}", *TINY]
    code, _, err = toolkit(capsys, "train", "--domain", "digits", *common)
    assert code == 0, err
    (run,) = (root / "digits").iterdir()
    code, _, err = toolkit(capsys, "export", "--run", run, "--to", tmp_path / "base")
    assert code == 0, err
    controls = {}
    for hint in ("edges", "thumbnail"):
        before = set((root / "digits").iterdir())
        code, _, err = toolkit(capsys, "train", "--domain", "digits", "--control-of",
                               tmp_path / "base", f"control.hint={hint}", *common, *MOVE)
        assert code == 0, err
        (controls[hint],) = set((root / "digits").iterdir()) - before
        assert (controls[hint] / "control" / "control.safetensors").is_file()
    import json

    spec = ControlSpec.from_dict(json.loads(
        (controls["edges"] / "control" / "control.json").read_text())["spec"])
    assert spec.hint_shape == (1, 28, 28) and spec.blocks[-1] == "mid"
    assert spec.blocks[0] == "down.0.blocks.0"
    spec = ControlSpec.from_dict(json.loads(
        (controls["thumbnail"] / "control" / "control.json").read_text())["spec"])
    assert spec.hint_shape == (1, 7, 7)

    edges = sketch.edge_hint({"x0": square()})[0, 0]
    Image.fromarray((edges.numpy() * 255).astype(np.uint8)).save(tmp_path / "edges.png")

    def sample(*args):
        out = tmp_path / f"s{len(list(tmp_path.glob('s*')))}"
        code, _, err = toolkit(capsys, "sample", *args, "-n", "4", "--seed", "5", "--steps", "2",
                               "--out", out)
        assert code == 0, err
        return _digits(out)

    base = sample("--model", tmp_path / "base")
    hinted = sample("--run", controls["edges"], "--hint", tmp_path / "edges.png")
    assert hinted.shape == (4, 28, 28) and not np.array_equal(hinted, base)
    assert np.array_equal(sample("--run", controls["edges"], "--hint", tmp_path / "edges.png",
                                 "--control-scale", "0"), base)
    # both controls: the thumbnail's hints made from the data, the edges' from the file
    both = sample("--run", controls["edges"], "--hint", tmp_path / "edges.png",
                  "--control", f"{controls['thumbnail']}=1")
    assert both.shape == (4, 28, 28) and not np.array_equal(both, hinted)
    # evaluate scores a control's samples against the hints they were drawn for
    for hint, metric in (("edges", "edge_f1"), ("thumbnail", "thumbnail_error")):
        code, out, err = toolkit(capsys, "evaluate", "--run", controls[hint], "-n", "6",
                                 "--steps", "2")
        assert code == 0, err
        (line,) = [line.split() for line in out.splitlines() if line.split()[:1] == [metric]]
        assert 0.0 <= float(line[1]) <= 1.0
    Image.fromarray(np.zeros((7, 7), np.uint8)).save(tmp_path / "small.png")
    code, _, err = toolkit(capsys, "sample", "--run", controls["edges"], "--hint",
                           tmp_path / "small.png")
    assert code != 0 and "holds shape [1, 7, 7]" in err and "[1, 28, 28]" in err
