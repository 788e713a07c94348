"""Predict and refine (process.kind=refine): the pair network, the stop-gradient between the
predictor and the diffusion, sampling, and the benchmark reading its predictor as the regression."""

from __future__ import annotations

import json

import pytest
import torch

from diffusekit.core.app import config
from diffusekit.core.regeneration import PredictorDenoiser
from diffusekit.domains.image.domain import ImageDomain
from diffusekit.domains.image.process import PredictRefine

SMALL = ["network.channels=8", "network.blocks=1", "process.tile=null"]


def refine_config(*overrides: str):
    return config.compose(ImageDomain().default_config(), domain="image",
                          overrides=["process.kind=refine", *SMALL, *overrides])


def batch_of(process, n: int = 2, size: int = 32) -> dict:
    x0 = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return {"x0": x0, "cond": {"low_res": process.degradation(x0)}}


def test_refine_builds_a_pair_and_reads_its_own_keys():
    domain = ImageDomain()
    cfg = refine_config("process.refine_scale=0.05", "process.predictor_weight=2.0")
    network, process = domain.build_network(cfg), domain.process(cfg)
    assert isinstance(network, PredictorDenoiser) and isinstance(process, PredictRefine)
    assert (process.refine_scale, process.predictor_weight) == (0.05, 2.0)
    # the other kinds keep one network
    assert not isinstance(domain.build_network(refine_config("process.kind=diffusion")),
                          PredictorDenoiser)


def test_the_diffusion_loss_does_not_train_the_predictor():
    domain = ImageDomain()
    torch.manual_seed(0)
    cfg = refine_config("process.predictor_weight=0.0")
    network, process = domain.build_network(cfg), domain.process(cfg)
    for p in network.parameters():  # non-zero heads, so every parameter gets a gradient path
        torch.nn.init.normal_(p, std=0.05)
    loss = process.training_loss(network, batch_of(process))
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    loss.mean().backward()
    assert all(p.grad is None or not p.grad.any() for p in network.predictor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in network.denoiser.parameters())
    network.zero_grad()
    weighted = domain.process(refine_config("process.predictor_weight=1.0"))
    weighted.training_loss(network, batch_of(process)).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in network.predictor.parameters())


def test_untrained_refinement_starts_from_the_predictor_estimate():
    """Zero-initialised heads: the predictor says bicubic exactly, and one sampler step from t_max
    adds almost nothing (a zero v prediction gives x0_hat = alpha_max x_t, with alpha_max small,
    times refine_scale in the image). More steps return valid images of the batch's shape."""
    domain = ImageDomain()
    cfg = refine_config()
    network, process = domain.build_network(cfg), domain.process(cfg)
    batch = batch_of(process)
    with torch.no_grad():
        base = process.predictor_samples(network, batch)
        one = process.generate(network, batch, steps=1, generator=torch.Generator().manual_seed(1))
        three = process.generate(network, batch, steps=3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(base.image, base.bicubic)
    assert 0 < (one.image - base.image).abs().max() < 0.02
    assert three.image.shape == batch["x0"].shape and three.image.abs().max() <= 1.0


@pytest.mark.slow
def test_quick_benchmark_with_refine_records_images_and_uses_the_predictor(tmp_path):
    cfg = refine_config("benchmark.quick_train_steps=2", "benchmark.quick_test_crop=32",
                        "benchmark.samplers=[ddim]", "benchmark.steps=[1]",
                        "benchmark.fetch_opencv=false", "benchmark.tile=null",
                        f"benchmark.results_dir={tmp_path}", "optim.warmup_steps=1",
                        "data.batch_size=2", "data.patch_size=32")
    cfg.quick = True
    result = ImageDomain().benchmark(cfg)
    metrics = result["metrics"]
    assert metrics["regression_steps"] == 0 and metrics["process"]["kind"] == "refine"
    assert metrics["n_train_images"] == len(metrics["train_images"]) >= 10
    assert not any(name in metrics["train_images"] for name in metrics["test_images"])
    record = json.loads((tmp_path / "image_quick.json").read_text())
    assert record["metrics"]["n_train_images"] == metrics["n_train_images"]
    assert "training images" in (tmp_path / "image_quick.md").read_text()
