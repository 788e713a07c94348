"""A wall-clock budget (`trainer.max_time`) ends a run exactly like `trainer.max_steps` does, the
training throughput reaches the logs and metrics.json, and precisions a CPU cannot honour are
refused before anything is built."""

import json

import pytest
import torch

from diffusekit.core.app.training import train
from diffusekit.core.app.training.callbacks import read_csv_logs
from diffusekit.core.app.training.runs import check_checkpoint, load_weights
from diffusekit.core.errors import ConfigError


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    """A toy run of at most 100,000 steps that its 1.5-second budget stops (each step sleeps
    20 ms), with checkpoints and validations every 25 steps."""
    from toy_domain import ToyDomain

    from diffusekit.core.app import config

    domain = ToyDomain()
    root = tmp_path_factory.mktemp("runs")
    cfg = config.compose(domain.default_config(), domain="toy", overrides=[
        f"run_dir={root}", "trainer.max_steps=100000", "trainer.max_time=1.5s",
        "model.delay=0.02", "checkpoint_every=25", "val_every=25", "trainer.log_every_n_steps=1"])
    return domain, train(domain, cfg)


def test_a_budget_run_ends_like_a_run_that_reached_max_steps(budget_run):
    domain, run = budget_run
    metrics = json.loads(run.metrics_file.read_text())
    step = metrics["step"]
    assert 0 < step < 100000
    assert metrics["stopped_by"] == "max_time" and metrics["max_time_seconds"] == 1.5
    # the final step has everything a finished run has: checkpoint, weights, validation, samples
    assert check_checkpoint(run.last_checkpoint)["global_step"] == step
    network = domain.build_network(run.load_config(domain))
    assert load_weights(network, run.weights)["step"] == str(step)
    assert (run.samples / f"step-{step:06d}" / "points.csv").is_file()
    logged = read_csv_logs(run.logs)["val/loss"]  # Lightning logs a validation at step - 1
    assert max(logged) == step - 1 and metrics["val_loss"] == pytest.approx(logged[step - 1])
    assert metrics["train_loss"] > 0 and run.loss_curve.is_file()


def test_throughput_is_logged_every_step_and_summarised(budget_run):
    _, run = budget_run
    metrics = json.loads(run.metrics_file.read_text())
    rates = read_csv_logs(run.logs)["train/samples_per_s"]
    # every step but the first (warm-up); Lightning logs step k + 1's values at row k
    assert sorted(rates) == list(range(1, metrics["step"]))
    assert all(r > 0 for r in rates.values()) and metrics["samples_per_s"] > 0


def test_a_run_within_its_steps_says_it_reached_them(toy, toy_cfg):
    run = train(toy, toy_cfg("trainer.max_steps=4", "trainer.max_time=1h", "val_every=2",
                             "checkpoint_every=2"))
    metrics = json.loads(run.metrics_file.read_text())
    assert metrics["step"] == 4 and metrics["stopped_by"] == "max_steps"
    assert metrics["max_time_seconds"] == 3600 and metrics["precision"] == "32-true"


@pytest.mark.parametrize("value", ["abc", "10x", "-5m", "0", "00:10:00"])
def test_a_bad_budget_is_a_config_error_before_anything_is_built(toy, toy_cfg, tmp_path, value):
    with pytest.raises(ConfigError, match="trainer.max_time"):
        train(toy, toy_cfg(f"trainer.max_time='{value}'"))
    assert not (tmp_path / "runs").exists()


def test_float16_mixed_precision_on_a_cpu_is_refused(toy, toy_cfg, tmp_path):
    with pytest.raises(ConfigError, match="needs a GPU.*bf16-mixed"):
        train(toy, toy_cfg("trainer.precision=16-mixed", "trainer.accelerator=cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="needs a GPU"):
            train(toy, toy_cfg("trainer.precision=16-mixed", "trainer.accelerator=auto"))
    assert not (tmp_path / "runs").exists()
