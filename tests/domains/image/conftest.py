"""Image tests never see a real data cache: opencv-doc's photos unpacked in ~/.cache would change
what the package sources hold."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def empty_data_cache(monkeypatch, tmp_path):
    """$DIFFUSEKIT_DATA -> an empty folder of this test."""
    monkeypatch.setenv("DIFFUSEKIT_DATA", str(tmp_path / "empty-data-cache"))
