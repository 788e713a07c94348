"""The example plugin's parts, imported from its installed copy: config, data, network,
process, a short training through the toolkit's trainer, metrics, files, benchmark, and its
midpoint sampler."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from diffusekit.core import samplers, schedules
from diffusekit.core.analytic import GaussianMixture
from diffusekit.core.app.config import compose
from diffusekit.core.process import GaussianDiffusion


@pytest.fixture(scope="module")
def domain(example_module):
    from diffusekit_example.domain import ShapesDomain

    return ShapesDomain()


@pytest.fixture(scope="module")
def cfg(domain):
    return compose(domain.default_config(), domain="example")


@pytest.fixture
def one_thread():
    """Tiny networks on a shared 2-core machine: one thread avoids oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_default_config_loads_and_composes_with_the_toolkit_defaults(domain, cfg):
    raw = domain.default_config()
    assert {"data", "network", "process", "evaluate", "benchmark"} <= set(raw)
    assert cfg.domain == "example" and cfg.trainer.max_steps == raw.trainer.max_steps
    assert isinstance(domain.process(cfg), GaussianDiffusion)


def test_datamodule_yields_batches_of_the_declared_shapes(domain, cfg):
    dm = domain.build_datamodule(cfg)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    B, S = cfg.data.batch_size, len(cfg.data.shapes)
    assert batch["x0"].shape == (B, 2) and batch["x0"].dtype == torch.float32
    label = batch["cond"]["label"]
    assert label.shape == (B,) and label.dtype == torch.int64 and 0 <= label.min() <= label.max() < S
    test = next(iter(dm.test_dataloader()))
    assert len(set(test["cond"]["label"].tolist())) == S  # every batch mixes the shapes
    assert len(dm.splits["test"]) == cfg.data.n_test * S
    # the same seed gives the same data; points sit in their shape's cell
    again = domain.build_datamodule(cfg)
    again.setup()
    assert torch.equal(again.splits["val"].x0, dm.splits["val"].x0)
    from diffusekit_example.shapes import ShapeLayout

    layout = ShapeLayout.from_config(cfg.data)
    assert (layout.nearest_label(dm.splits["val"].x0) == dm.splits["val"].label).all()


def test_network_output_has_the_input_shape(domain, cfg):
    net = domain.build_network(cfg).eval()
    x, c = torch.randn(7, 2), torch.rand(7)
    assert net(x, c, label=torch.arange(7) % 4).shape == (7, 2)
    assert net(x, c).shape == (7, 2)  # no label: the unconditional ("null") class
    assert net(x.double(), c).dtype == torch.float64


def test_training_loss_is_finite_and_decreases_through_the_trainer(domain, cfg, one_thread):
    from diffusekit.core.app.training.fit import train_for_benchmark

    torch.manual_seed(0)
    net, process = domain.build_network(cfg), domain.process(cfg)
    dm = domain.build_datamodule(cfg)
    batch = next(iter(dm.train_dataloader()))
    loss = process.training_loss(net, batch)
    assert loss.shape == (cfg.data.batch_size,) and torch.isfinite(loss).all()
    trained = train_for_benchmark(domain, cfg, 100, overrides=[
        "optim.warmup_steps=0", "trainer.log_every_n_steps=1", "trainer.progress_bar=false"])
    assert sorted(trained.losses) == list(range(100))  # every step's loss, as logged
    losses = torch.tensor([trained.losses[step] for step in range(100)])
    assert torch.isfinite(losses).all()
    assert losses[-20:].mean() < 0.85 * losses[:20].mean(), losses
    assert trained.run is None and not trained.network.training  # a temporary run, EMA weights


def test_evaluate_and_write_samples(domain, cfg, tmp_path):
    dm = domain.build_datamodule(cfg)
    batch = next(iter(dm.test_dataloader()))
    perfect = domain.evaluate(batch, batch["x0"].clone(), cfg)
    assert set(perfect) >= {"sw", "sw_floor", "precision", "recall", "label_accuracy"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in perfect.values())
    assert perfect["sw"] == 0.0 and perfect["precision"] == perfect["recall"] == 1.0
    assert perfect["label_accuracy"] == 1.0 and 0 < perfect["sw_floor"] < 0.3
    noise = domain.evaluate(batch, torch.randn_like(batch["x0"]), cfg)
    assert noise["sw"] > 3 * noise["sw_floor"] and noise["precision"] < 0.5

    paths = domain.write_samples(batch["x0"], tmp_path / "out", cfg)
    assert sorted(p.name for p in paths) == ["samples.csv", "samples.npy", "samples.png"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert np.allclose(np.load(tmp_path / "out" / "samples.npy"), batch["x0"].numpy(), atol=1e-6)
    assert (tmp_path / "out" / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_benchmark_quick_returns_metrics(domain, one_thread, tmp_path):
    cfg = compose(domain.default_config(), domain="example", overrides=[
        "quick=true", "benchmark.quick_train_steps=5", "benchmark.samplers=[ddim]",
        "benchmark.quick_steps=[3]", "benchmark.n_per_shape=50", "data.n_train=100",
        "data.batch_size=64", "trainer.progress_bar=false",
        f"benchmark.run_dir={tmp_path / 'runs'}"])
    result = domain.benchmark(cfg)
    assert {"sw_ddim_3", "nfe_ddim_3", "sw_floor", "train_seconds"} <= set(result)
    assert result["nfe_ddim_3"] == 3 and math.isfinite(result["sw_ddim_3"])
    # it trained through the toolkit's trainer: a run folder of 5 steps, with EMA weights
    (run,) = (tmp_path / "runs" / "example").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == metrics["max_steps"] == 5
    assert (run / "model.safetensors").is_file() and (run / "checkpoints" / "last.ckpt").is_file()


# ---------------------------------------------------------------------------- the sampler
@pytest.fixture(scope="module")
def midpoint(example_module):
    from diffusekit_example.sampler import sample_midpoint

    return sample_midpoint


@pytest.mark.parametrize("schedule", ["vp_cosine", "flow", "edm"])
def test_midpoint_contract(midpoint, schedule):
    sched = schedules.get(schedule)
    mixture = GaussianMixture.ring_2d()
    calls, steps = [], []

    def denoiser(x, t, **cond):
        calls.append(float(t))
        return mixture.denoiser(sched)(x, t)

    ts = schedules.time_grid(sched, 6, "log_snr")
    noise = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    x = midpoint(denoiser, noise, ts, sched, callback=steps.append)
    again = midpoint(mixture.denoiser(sched), noise, ts, sched)
    assert x.shape == noise.shape and x.dtype == noise.dtype and torch.isfinite(x).all()
    assert torch.equal(x, again)  # deterministic
    assert [s["i"] for s in steps] == list(range(6)) and float(steps[-1]["t_next"]) == 0.0
    # two calls per step, one on steps without a midpoint (the last; a zero-SNR first step)
    assert len(calls) == 2 * 6 - 1 - (schedule == "flow")
    with pytest.raises(TypeError):
        midpoint(denoiser, noise, ts, sched, eta=1.0)  # unknown options are refused


def test_midpoint_is_second_order_on_an_exact_mixture(midpoint):
    """Driven by the exact denoiser of a mixture, its error against a fine solution of the same
    probability-flow ODE falls about 4x per halved step (DDIM's: 2x), and it beats DDIM at an
    equal number of denoiser calls."""
    sched = schedules.get("vp_cosine")
    D = GaussianMixture.ring_2d().denoiser(sched)
    noise = torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    reference = midpoint(D, noise, schedules.time_grid(sched, 300, "log_snr"), sched)

    def error(sampler, n):
        x = sampler(D, noise, schedules.time_grid(sched, n, "log_snr"), sched)
        return float((x - reference).pow(2).sum(1).mean().sqrt())

    ddim = samplers.get("ddim")
    assert error(midpoint, 8) / error(midpoint, 16) > 2.8
    assert error(ddim, 8) / error(ddim, 16) < 2.5
    assert error(midpoint, 8) < 0.75 * error(ddim, 16)  # 15 vs 16 denoiser calls
