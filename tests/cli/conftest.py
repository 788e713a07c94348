"""The command line tests: `toolkit` in-process with the toy domain added, and its output."""

import sys
from pathlib import Path

import pytest

TRAINING_TESTS = Path(__file__).resolve().parents[1] / "training"
sys.path.insert(0, str(TRAINING_TESTS))

from toy_domain import ToyDomain  # noqa: E402

from diffusekit.core.app import cli  # noqa: E402
from diffusekit.core.registry import Registry, UnknownNameError  # noqa: E402


@pytest.fixture
def toolkit(toolkit, monkeypatch):
    """tests/conftest.py's in-process `toolkit`, with the toy domain resolvable by name; runs
    go under tmp_path/runs unless run_dir is given."""
    toy = ToyDomain()
    installed, installed_names = cli.get_domain, cli._domain_names

    def names():
        return sorted({"toy", *installed_names()})

    def get_domain(name):
        if name == "toy":
            return toy
        if name in names():
            return installed(name)
        known = Registry("domain")
        for known_name in names():
            known.register(known_name, object())
        raise UnknownNameError(known.unknown_message(name))

    monkeypatch.setattr(cli, "get_domain", get_domain)
    monkeypatch.setattr(cli, "_domain_names", names)
    return toolkit


@pytest.fixture
def trained_run(toolkit, tmp_path):
    """A finished 10-step toy run (folder path)."""
    code, out, err = toolkit("train", "--domain", "toy", "trainer.max_steps=10",
                             "checkpoint_every=5", "val_every=5", "sample.val_n=2")
    assert code == 0, err
    (run,) = (tmp_path / "runs" / "toy").iterdir()
    return run


@pytest.fixture
def base(toolkit, trained_run, tmp_path):
    """The finished 10-step toy run exported as a model folder."""
    code, _, err = toolkit("export", "--run", str(trained_run), "--to", str(tmp_path / "base"))
    assert code == 0, err
    return tmp_path / "base"
