"""The digits UNet (with and without a class), guided sampling through the engine's samplers,
and the metrics on inputs whose answers are known."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from diffusekit.core import samplers
from diffusekit.core.errors import ConfigError
from diffusekit.domains.digits.metrics import (DigitClassifier, cached_classifier, feature_fd,
                                               frechet_distance, label_accuracy, sample_scores)
from diffusekit.domains.digits.network import DigitUNet
from diffusekit.domains.digits.process import GuidedDiffusion


def tiny_unet(**kw) -> DigitUNet:
    return DigitUNet(**{"channels": 8, "mults": (1, 2, 2), "blocks": 1, **kw}).eval()


def test_unet_forward_with_and_without_a_class():
    torch.manual_seed(0)
    net = tiny_unet()
    for p in net.parameters():  # the zero-initialised output layers would hide the label
        torch.nn.init.normal_(p, std=0.1)
    x, t = torch.randn(4, 1, 28, 28), torch.rand(4)
    label = torch.tensor([0, 3, 7, 9])
    out = net(x, t, label=label)
    assert out.shape == x.shape and torch.isfinite(out).all()
    null = net(x, t, label=None)
    assert torch.allclose(null, net(x, t, label=torch.full((4,), net.null_label)))
    assert not torch.allclose(out, null)  # the class changes the prediction
    assert net(x, t[:1], label=label).shape == x.shape  # a scalar noise level broadcasts
    plain = tiny_unet(n_classes=0)
    assert not plain.conditional and plain(x, t, label=label).shape == x.shape
    odd = tiny_unet()(torch.randn(2, 1, 30, 30), torch.rand(2), label=torch.tensor([1, 2]))
    assert odd.shape == (2, 1, 30, 30)


def test_unet_blocks_are_plain_named_submodules_for_a_controlnet():
    names = dict(tiny_unet().named_children())
    assert {"stem", "down", "mid", "up", "head"} <= set(names)
    modules = dict(tiny_unet().named_modules())
    assert {"down.0", "down.1", "down.2", "mid", "up.0", "up.1", "up.2"} <= set(modules)


def test_label_dropout_replaces_labels_by_the_null_class_in_training_only():
    net = tiny_unet(label_dropout=1.0)
    x, t, label = torch.randn(2, 1, 28, 28), torch.rand(2), torch.tensor([1, 2])
    null_emb = net.embedding(t, None)
    net.train()
    assert torch.allclose(net.embedding(t, label), null_emb)
    net.eval()
    assert not torch.allclose(net.embedding(t, label), null_emb)


@pytest.mark.parametrize("sampler", ["ddim", "euler", "heun", "dpmpp_2m", "unipc"])
def test_guided_sampling_shape_with_any_engine_sampler(sampler):
    torch.manual_seed(0)
    net = tiny_unet()
    process = GuidedDiffusion(prediction="v", guidance=2.0, null_label=net.null_label)
    batch = {"x0": torch.zeros(3, 1, 28, 28), "cond": {"label": torch.tensor([1, 5, 9])}}
    out = process.generate(net, batch, sampler=sampler, steps=3,
                           generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 1, 28, 28) and torch.isfinite(out).all()
    assert sampler in samplers.names()


def test_guidance_is_ho_and_salimans_mix_and_w0_is_the_conditional_model():
    torch.manual_seed(0)
    net = tiny_unet()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    label = torch.tensor([2, 4])
    batch = {"x0": torch.zeros(2, 1, 28, 28), "cond": {"label": label}}
    base = GuidedDiffusion(prediction="eps", null_label=net.null_label)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor(0.5)
    d = base.denoiser(net)
    cond, uncond = d(x, t, label=label), d(x, t, label=torch.full((2,), net.null_label))
    w = 1.5
    guided = replace(base, guidance=w).sampling_denoiser(net, batch)(x, t, label=label)
    assert torch.allclose(guided, uncond + (1 + w) * (cond - uncond), atol=1e-5)  # eq. 6
    assert torch.allclose(base.sampling_denoiser(net, batch)(x, t, label=label), cond)


def test_guidance_on_an_unconditional_model_is_a_config_error():
    with pytest.raises(ConfigError, match="unconditional"):
        GuidedDiffusion(guidance=2.0, null_label=None)
    with pytest.raises(ConfigError, match=">= 0"):
        GuidedDiffusion(guidance=-1.0, null_label=10)
    assert GuidedDiffusion(guidance=0.0, null_label=None).guidance == 0.0


def test_frechet_distance_on_known_inputs():
    torch.manual_seed(0)
    a = torch.randn(500, 6)
    assert feature_fd(a, a) == pytest.approx(0.0, abs=1e-6)  # identical sets
    # two Gaussians with commuting covariances: |mu1 - mu2|^2 + sum (sqrt(l1) - sqrt(l2))^2
    mu1, mu2 = torch.zeros(3), torch.tensor([1.0, 2.0, 0.0])
    c1, c2 = torch.diag(torch.tensor([1.0, 4.0, 9.0])), torch.diag(torch.tensor([4.0, 4.0, 1.0]))
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(5.0 + 1.0 + 0.0 + 4.0)
    # a rotated pair (non-diagonal): FD is invariant under the same rotation of both
    q, _ = torch.linalg.qr(torch.randn(3, 3))
    rotated = frechet_distance(q @ mu1, q @ c1 @ q.T, q @ mu2, q @ c2 @ q.T)
    assert rotated == pytest.approx(10.0, rel=1e-6)
    assert feature_fd(a, a + 1.0) == pytest.approx(6.0, rel=1e-6)  # a shift of 1 in 6 dims


def test_label_accuracy_and_sample_scores():
    assert label_accuracy(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 0, 4])) == 0.75
    clf = DigitClassifier(10, 8)
    clf(torch.zeros(2, 1, 28, 28))
    x = torch.rand(20, 1, 28, 28) * 2 - 1
    predicted = clf.eval()(x).argmax(1)
    scores = sample_scores(clf, x, predicted, reference=(torch.zeros(8), torch.eye(8)))
    assert scores["label_accuracy"] == 1.0 and scores["classifier_fd"] >= 0


def test_classifier_is_cached_by_hash(tmp_path, fakes):
    images, labels = fakes.fake_digits(20)
    x = torch.from_numpy(images).float()[:, None] / 127.5 - 1
    y = torch.from_numpy(labels)
    recipe = {"epochs": 8, "batch_size": 32, "lr": 3e-3, "feature_dim": 16, "seed": 0}
    model, record = cached_classifier((x, y), (x, y), 10, recipe, folder=tmp_path)
    assert record["test_accuracy"] > 0.9  # the bars are easy
    assert len(list(tmp_path.glob("classifier-*.pt"))) == 1
    again, record2 = cached_classifier((x, y), (x, y), 10, recipe, folder=tmp_path)
    assert record2 == record
    for p, q in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(p, q)
    cached_classifier((x, y), (x, y), 10, {**recipe, "epochs": 1}, folder=tmp_path)
    assert len(list(tmp_path.glob("classifier-*.pt"))) == 2  # another recipe, another key
