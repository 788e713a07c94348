"""Fixtures of the training tests: the toy domain and a config composer for it."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toy_domain import ToyDomain  # noqa: E402

from diffusekit.core.app import config  # noqa: E402


@pytest.fixture
def toy():
    return ToyDomain()


@pytest.fixture
def toy_cfg(toy, tmp_path):
    """compose(*overrides) -> the toy domain's config with runs under tmp_path."""

    def make(*overrides: str):
        return config.compose(toy.default_config(), domain="toy",
                              overrides=[f"run_dir={tmp_path / 'runs'}", *overrides])

    return make
