"""The image benchmark at tiny size: both models come from the toolkit's trainer, with one budget."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from diffusekit.core.app import config
from diffusekit.domains.image.domain import ImageDomain

TINY = ["network.channels=8", "network.blocks=1", "process.tile=null", "quick=true",
        "benchmark.quick_train_steps=3", "benchmark.quick_test_crop=32",
        "benchmark.samplers=[ddim]", "benchmark.steps=[1]", "benchmark.self_ensemble=1",
        "benchmark.fetch_opencv=false", "benchmark.tile=null", "optim.warmup_steps=1",
        "data.batch_size=2", "data.patch_size=32", "trainer.progress_bar=false"]


@pytest.mark.slow  # two 3-step runs and the scoring of three crops: about 10 s
def test_quick_benchmark_trains_both_models_through_the_trainer_with_one_budget(tmp_path):
    cfg = config.compose(ImageDomain().default_config(), domain="image", overrides=[
        *TINY, f"benchmark.results_dir={tmp_path / 'results'}",
        f"benchmark.run_dir={tmp_path / 'runs'}"])
    metrics = ImageDomain().benchmark(cfg)["metrics"]
    assert metrics["train_steps"] == metrics["regression_steps"] == 3  # the same budget
    assert metrics["trainer"] == "toolkit (train_for_benchmark)" and metrics["lr_decay"] == "cosine"
    # two toolkit runs: the diffusion and the regression, each of 3 steps, cosine decay
    runs = sorted((tmp_path / "runs" / "image").iterdir())
    saved = [OmegaConf.load(run / "config.yaml") for run in runs]
    assert sorted(c.process.kind for c in saved) == ["diffusion", "regression"]
    assert all(c.trainer.max_steps == 3 and c.optim.decay == "cosine" for c in saved)
    assert all((run / "model.safetensors").is_file() for run in runs)
    record = json.loads((tmp_path / "results" / "image_quick.json").read_text())
    assert record["metrics"]["regression_steps"] == 3
    assert set(record["baselines"]) == {"bicubic", "regression"}
    text = (tmp_path / "results" / "image_quick.md").read_text()
    assert "trainer.max_steps=3 optim.decay=cosine" in text and "regression 3 steps" in text
