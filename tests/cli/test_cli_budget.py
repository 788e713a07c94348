"""`toolkit train --budget`, `--preset`, mixed precision and the sampling device through the
command line: a run stopped by its time budget reports it, and bad values are one error line."""

import json

import pytest
import torch

from error_lines import one_error


def test_a_budget_stops_training_and_says_so(toolkit, tmp_path):
    code, out, err = toolkit("train", "--domain", "toy", "--budget", "1.5s",
                             "trainer.max_steps=100000", "model.delay=0.02")
    assert code == 0, err
    (run,) = (tmp_path / "runs" / "toy").iterdir()
    assert "(stopped by the time budget)" in out and run.name in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["stopped_by"] == "max_time" and metrics["step"] < 100000
    assert "max_time: 1.5s" in (run / "config.yaml").read_text()


@pytest.mark.parametrize("args, needles", [
    (["--budget", "abc"], ["--budget", "'abc'"]),
    (["--budget", "-3m"], ["--budget"]),
    (["trainer.max_time=10x"], ["trainer.max_time"]),
    (["trainer.precision=16-mixed"], ["16-mixed", "needs a GPU", "bf16-mixed"]),
    (["--preset", "gpu"], ["no preset 'gpu'", "ships none"]),
])
def test_bad_budgets_precisions_and_presets_are_one_error_line(toolkit, tmp_path, args, needles):
    code, out, err = toolkit("train", "--domain", "toy", *args)
    assert err == [one_error(code, err, *needles)]
    assert not (tmp_path / "runs").exists()


def test_config_shows_a_domains_preset(toolkit):
    code, out, err = toolkit("config", "--domain", "molecules", "--preset", "gpu",
                             "network.hidden=128")
    assert code == 0, err
    assert "n_layers: 9" in out and "hidden: 128" in out and "schedule: vp_polynomial" in out


def test_the_sampling_device_is_checked(toolkit, trained_run):
    code, out, err = toolkit("sample", "--run", str(trained_run), "sample.device=tpu9")
    assert err == [one_error(code, err, "sample.device", "not a device")]
    code, out, err = toolkit("sample", "--run", str(trained_run), "-n", "3", "sample.device=cuda")
    if torch.cuda.is_available():
        assert code == 0, err
    else:
        assert err == [one_error(code, err, "sample.device=cuda", "no GPU")]
    code, out, err = toolkit("sample", "--run", str(trained_run), "-n", "3", "sample.device=cpu")
    assert code == 0, err
