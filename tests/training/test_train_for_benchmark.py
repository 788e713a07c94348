"""`train_for_benchmark`: a benchmark's model comes from the trainer of `toolkit train`."""

import tempfile
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from diffusekit.core.app.training import load_run, train, train_for_benchmark
from diffusekit.core.errors import ConfigError


def test_kept_run_is_a_toolkit_run_of_the_asked_steps(toy, toy_cfg, tmp_path):
    work = tmp_path / "bench-runs"
    trained = train_for_benchmark(toy, toy_cfg(), 12, work,
                                  overrides=["model.hidden=32", "trainer.log_every_n_steps=1"])
    assert trained.run is not None and trained.run.path.parent == work / "toy"
    saved = OmegaConf.load(trained.run.config_file)
    assert saved.trainer.max_steps == 12 and saved.model.hidden == 32  # the overrides applied
    assert saved.val_every == saved.checkpoint_every == 12 and saved.sample.val_n == 0  # < 500
    assert not trained.run.samples.exists()  # no validation samples: training time only
    assert sorted(trained.losses) == list(range(12)) and trained.seconds > 0
    assert trained.final_loss(4) == pytest.approx(sum(trained.losses[s] for s in range(8, 12)) / 4)
    # the network is the run's EMA network, as `load_run` gives it
    network, _, cfg = load_run(toy, trained.run)
    assert cfg.trainer.max_steps == 12 and not trained.network.training
    for (name, a), (_, b) in zip(trained.network.state_dict().items(),
                                 network.state_dict().items()):
        assert torch.equal(a, b), name
    assert not (tmp_path / "runs").exists()  # cfg.run_dir is not where it goes


def test_same_weights_as_train_with_the_same_settings(toy, toy_cfg, tmp_path):
    """One training path: the helper's model is the one `train` makes from the same config."""
    trained = train_for_benchmark(toy, toy_cfg(), 10, tmp_path / "a")
    reference = train(toy, toy_cfg("trainer.max_steps=10", "val_every=10",
                                   "checkpoint_every=10", "sample.val_n=0"))
    network, _, _ = load_run(toy, reference)
    for (name, a), (_, b) in zip(trained.network.state_dict().items(),
                                 network.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


def test_temporary_run_is_removed(toy, toy_cfg, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    trained = train_for_benchmark(toy, toy_cfg(), 3)
    assert trained.run is None and list(scratch.iterdir()) == []
    x = torch.randn(4, 2)
    assert trained.network(x, torch.rand(4)).shape == (4, 2)  # usable after the folder is gone
    assert not (tmp_path / "runs").exists()


def test_no_steps_or_an_unknown_key_is_a_config_error(toy, toy_cfg, tmp_path):
    with pytest.raises(ConfigError, match="at least one training step"):
        train_for_benchmark(toy, toy_cfg(), 0, tmp_path)
    with pytest.raises(ConfigError, match="model.hiden"):
        train_for_benchmark(toy, toy_cfg(), 2, tmp_path, overrides=["model.hiden=3"])
    assert not Path(tmp_path, "toy").exists()



def test_a_crashed_benchmark_run_resumes_from_its_last_checkpoint(toy, toy_cfg, tmp_path,
                                                                  monkeypatch, capsys):
    """A benchmark's training checkpoints as it goes; called again with the same work folder and
    config it continues the crashed run instead of starting over, and a finished run is reused."""
    from diffusekit.core.app.training import fit
    from diffusekit.core.app.training.module import DiffusionModule

    monkeypatch.setattr(fit, "BENCHMARK_CHECKPOINT_EVERY", 4)
    plain = DiffusionModule.training_step

    def crash_at_six(self, batch, batch_idx):
        if self.global_step == 6:
            raise RuntimeError("killed")
        return plain(self, batch, batch_idx)

    work = tmp_path / "bench-runs"
    with monkeypatch.context() as patch:
        patch.setattr(DiffusionModule, "training_step", crash_at_six)
        with pytest.raises(RuntimeError, match="killed"):
            train_for_benchmark(toy, toy_cfg(), 12, work)
    (crashed,) = (work / "toy").iterdir()
    trained = train_for_benchmark(toy, toy_cfg(), 12, work)
    assert "resuming" in capsys.readouterr().err
    assert trained.run.path == crashed and list((work / "toy").iterdir()) == [crashed]
    assert trained.run.read_metrics()["resumed_at_steps"] == [4]
    assert trained.run.resume_checkpoint()[1] == 12  # trained to the end
    again = train_for_benchmark(toy, toy_cfg(), 12, work)  # finished: reloaded, not retrained
    assert again.run.path == crashed
    for (name, a), (_, b) in zip(trained.network.state_dict().items(),
                                 again.network.state_dict().items()):
        assert torch.equal(a, b), name
    # a benchmark's own section is never read by training: a change there finds the same run
    moved = train_for_benchmark(toy, toy_cfg("sample.n=3"), 12, work, own_section="sample")
    assert moved.run.path == crashed
    quick = train_for_benchmark(toy, toy_cfg("quick=true"), 12, work)  # --quick sizes only
    assert quick.run.path == crashed
    elsewhere = train_for_benchmark(toy, toy_cfg("sample.device=cpu"), 12, work)  # sweeps only
    assert elsewhere.run.path == crashed
    # a run saved before a key was added to the defaults still matches (the key takes its default)
    saved = crashed / "config.yaml"
    text = saved.read_text()
    assert "  average: 1\n" in text
    saved.write_text(text.replace("  average: 1\n", ""))
    older = train_for_benchmark(toy, toy_cfg(), 12, work)
    assert older.run.path == crashed
    other = train_for_benchmark(toy, toy_cfg(), 8, work)  # another config: a new run
    assert other.run.path != crashed
