"""A real (tiny) training run in-process: the run folder, export, sampling, evaluation, errors."""

import csv
import json

import pytest
import torch
from omegaconf import OmegaConf
from toy_domain import ToyDomain

from diffusekit.core.app import config
from diffusekit.core.errors import CheckpointError, NonFiniteLossError, RunDirError
from diffusekit.core.app.training import RunDir, evaluate_run, load_run, sample_run, train
from diffusekit.core.app.training.runs import check_checkpoint, load_weights


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """30 steps of the toy domain: checkpoints at 10, 20, 30, validation at 10, 20, 30."""
    domain = ToyDomain()
    root = tmp_path_factory.mktemp("runs")
    cfg = config.compose(domain.default_config(), domain="toy",
                         overrides=[f"run_dir={root}", "trainer.log_every_n_steps=1"])
    return domain, train(domain, cfg)


def test_run_folder_has_everything(finished_run):
    _, run = finished_run
    assert run.path.parent.parent.name != "" and run.path.parent.name == "toy"
    saved = OmegaConf.load(run.config_file)
    assert saved.domain == "toy" and saved.trainer.max_steps == 30 and saved.model.hidden == 64
    assert run.last_checkpoint.is_file() and run.best_checkpoint.is_file()
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    assert check_checkpoint(run.last_checkpoint)["global_step"] == 30
    assert run.weights.is_file() and run.loss_curve.stat().st_size > 1000
    assert sorted(p.name for p in run.samples.iterdir()) == [
        "step-000010", "step-000020", "step-000030"]
    assert (run.samples / "step-000030" / "points.csv").read_text().count("\n") == 4  # val_n
    metrics = json.loads(run.metrics_file.read_text())
    assert metrics["step"] == 30 and metrics["world_size"] == 1
    assert metrics["train_loss"] > 0 and metrics["val_loss"] > 0
    rows = list(csv.DictReader((run.logs / "version_0" / "metrics.csv").open()))
    assert any(r.get("train/loss") for r in rows) and any(r.get("val/loss") for r in rows)


def test_exported_weights_are_the_ema_weights_of_the_last_checkpoint(finished_run):
    domain, run = finished_run
    state = check_checkpoint(run.last_checkpoint)["state_dict"]
    network, process, cfg = load_run(domain, run)
    for name, value in network.state_dict().items():
        torch.testing.assert_close(value, state[f"ema.network.{name}"])
        assert not torch.equal(value, state[f"network.{name}"])  # EMA, not the raw weights


def test_sample_and_evaluate_from_the_run(finished_run):
    domain, run = finished_run
    paths = sample_run(domain, run, sampler="euler", steps=4, n=6, progress=False)
    assert [p.name for p in paths] == ["points.csv"] and paths[0].parent.name == "euler-4"
    assert paths[0].read_text().count("\n") == 6
    result = evaluate_run(domain, run, steps=4, n=20, progress=False)
    assert result["n"] == 20 and set(result["metrics"]) == {"mean_error", "radius"}
    assert json.loads(run.metrics_file.read_text())["evaluation"]["n"] == 20


def test_sampling_in_several_batches_writes_parts(finished_run):
    domain, run = finished_run
    paths = sample_run(domain, run, steps=2, n=40, progress=False)  # sample.batch_size = 16
    assert sorted(p.parent.name for p in paths) == ["part-000", "part-001", "part-002"]
    assert sum(p.read_text().count("\n") for p in paths) == 40


def test_missing_and_corrupt_runs_and_weights(finished_run, tmp_path):
    domain, run = finished_run
    with pytest.raises(RunDirError, match="does not exist"):
        RunDir.open(tmp_path / "nope")
    with pytest.raises(RunDirError, match="no config.yaml"):
        RunDir.open(tmp_path)
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        check_checkpoint(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_weights(domain.build_network(run.load_config()), tmp_path / "model.safetensors")
    wrong = ToyDomain().build_network(config.compose(domain.default_config(),
                                                     overrides=["model.hidden=8"]))
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_weights(wrong, run.weights)


def test_resume_needs_a_readable_checkpoint(toy, toy_cfg, tmp_path):
    run = RunDir.create(tmp_path / "runs", "toy")
    run.save_config(toy_cfg())
    with pytest.raises(CheckpointError, match="no checkpoint to resume"):
        train(toy, toy_cfg(), resume=run)
    run.checkpoints.mkdir()
    run.last_checkpoint.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="cannot be read"):
        train(toy, toy_cfg(), resume=run)


def test_nan_loss_stops_the_run_with_a_clear_message(toy, toy_cfg):
    with pytest.raises(NonFiniteLossError, match=r"training loss is nan at step 0"):
        train(toy, toy_cfg("model.nan=true", "sample.val_n=0"))
