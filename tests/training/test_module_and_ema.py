"""The generic LightningModule's parts: EMA, warm-up, optimiser, non-finite loss, batch helpers."""

import math

import pytest
import torch
from torch import nn

from diffusekit.core.errors import NonFiniteLossError
from diffusekit.core.process import GaussianDiffusion
from diffusekit.core.app.training.module import (EMA, DiffusionModule, OptimSettings, concat_batches,
                                             slice_batch, warmup_factor)


def test_ema_follows_the_update_rule_with_and_without_warmup():
    net = nn.Linear(3, 2)
    ema = EMA(net, decay=0.9, warmup=False)
    start = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)
    torch.testing.assert_close(ema.network.weight, 0.9 * start + 0.1 * net.weight)
    assert not any(p.requires_grad for p in ema.network.parameters())

    warm = EMA(net, decay=0.999, warmup=True)
    assert warm.current_decay() == pytest.approx(1 / 10)     # (1 + 0) / (10 + 0)
    warm.update(net)
    assert int(warm.num_updates) == 1 and warm.current_decay() == pytest.approx(2 / 11)
    with pytest.raises(ValueError):
        EMA(net, decay=1.0)


def test_ema_copies_buffers_and_stays_in_eval_mode():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = EMA(net, decay=0.5)
    net.train()
    net(torch.randn(8, 2) * 5 + 3)
    ema.update(net)
    torch.testing.assert_close(ema.network[1].running_mean, net[1].running_mean)
    ema.train()
    assert not ema.network.training


def test_warmup_is_linear_then_constant():
    assert [warmup_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0


def _module(**kwargs):
    net = nn.Sequential(nn.Linear(2, 2))
    net.forward = lambda x, c_noise: nn.Sequential.forward(net, x)  # net(x_in, c_noise)
    return DiffusionModule(net, GaussianDiffusion(schedule="vp_cosine", sampler="ddim"),
                           OptimSettings(lr=0.1, warmup_steps=10, weight_decay=0.01), **kwargs)


def test_optimizer_is_adamw_over_the_network_only_with_step_warmup():
    module = _module()
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]
    assert isinstance(opt, torch.optim.AdamW) and sched["interval"] == "step"
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert trained == {id(p) for p in module.network.parameters()}
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / 10)   # first step of warm-up
    assert opt.param_groups[0]["weight_decay"] == 0.01


def test_ema_weights_are_in_the_state_dict():
    keys = _module().state_dict().keys()
    assert any(k.startswith("ema.network.") for k in keys) and "ema.num_updates" in keys


def test_non_finite_loss_raises_the_toolkit_error():
    module = _module()
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 0"):
        module._stop_if_not_finite(torch.tensor(float("nan")))
    module._stop_if_not_finite(torch.tensor(1.0))


def test_generate_uses_the_ema_network_and_keeps_the_shape():
    module = _module()
    x = {"x0": torch.zeros(5, 2)}
    out = module.generate(x, steps=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (5, 2) and torch.isfinite(out).all()


def test_batch_helpers_cut_and_join_nested_batches():
    batch = {"x0": torch.arange(6).reshape(3, 2), "cond": {"label": torch.arange(3)},
             "name": "fixed"}
    head, tail = slice_batch(batch, 2), slice_batch(batch, None, start=2)
    assert head["x0"].shape == (2, 2) and tail["cond"]["label"].tolist() == [2]
    joined = concat_batches(head, tail)
    assert torch.equal(joined["x0"], batch["x0"]) and joined["name"] == "fixed"


def test_cosine_decay_follows_the_warm_up_down_to_zero():
    o = OptimSettings(lr=1.0, warmup_steps=2, decay="cosine", total_steps=6)
    got = [o.lr_factor(s) for s in range(7)]
    # warm-up 0.5, 1; then 0.5 (1 + cos(pi p)) for p = 1/4, 2/4, 3/4, 4/4, and 0 after the budget
    want = [0.5, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4)),
            0.0, 0.0]
    assert got == pytest.approx(want, abs=1e-12)
    assert OptimSettings(lr=1.0, warmup_steps=2).lr_factor(100) == 1.0  # constant by default
    assert OptimSettings(lr=1.0, warmup_steps=50, decay="cosine", total_steps=4).lr_factor(3) \
        == pytest.approx(4 / 50)  # a budget inside the warm-up never decays
    with pytest.raises(ValueError, match="step budget"):
        OptimSettings(decay="cosine")
    with pytest.raises(KeyError, match="cosine"):
        OptimSettings(decay="cosin", total_steps=10)


def test_the_trainer_schedules_the_configured_decay():
    module = DiffusionModule(torch.nn.Linear(2, 2), None,
                             OptimSettings(lr=0.1, warmup_steps=1, decay="cosine", total_steps=3))
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(3):
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.1, 0.1 * 0.5 * (1 + math.cos(math.pi / 2)), 0.0])


def test_an_adapter_run_trains_at_optim_lr_times_adapter_lr_scale():
    from omegaconf import OmegaConf

    from diffusekit.core.app.config import training_defaults
    from diffusekit.core.app.training.fit import optim_settings
    from diffusekit.core.errors import ConfigError

    cfg = OmegaConf.merge(training_defaults(), {"optim": {"lr": 2e-4}})
    assert optim_settings(cfg).lr == pytest.approx(2e-4)  # no adapter: lr_scale is not applied
    lora = OmegaConf.merge(cfg, {"adapter": {"kind": "lora", "lr_scale": 10.0}})
    assert optim_settings(lora).lr == pytest.approx(2e-3)
    with pytest.raises(ConfigError, match="adapter.lr_scale must be > 0"):
        optim_settings(OmegaConf.merge(lora, {"adapter": {"lr_scale": 0.0}}))
