"""Geometric self-ensemble: the eight symmetries, their inverses, and the averaging."""

from __future__ import annotations

import itertools

import pytest
import torch

from diffusekit.core.app import config
from diffusekit.core.errors import ConfigError
from diffusekit.domains.image.domain import ImageDomain
from diffusekit.domains.image.process import (DIHEDRAL, SRSamples, inverse_transform,
                                              self_ensemble, transform)


def test_the_eight_symmetries_are_distinct_and_inverted():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    moved = [transform(x, k, flip) for k, flip in DIHEDRAL]
    assert len(DIHEDRAL) == 8 and DIHEDRAL[0] == (0, False)
    for a, b in itertools.combinations(moved, 2):
        assert a.shape != b.shape or not torch.equal(a, b)
    for (k, flip), m in zip(DIHEDRAL, moved):
        assert m.shape[-2:] == ((5, 4) if k % 2 else (4, 5))
        assert torch.equal(inverse_transform(m, k, flip), x)
    # a quarter turn is counter-clockwise: the top-right corner goes to the top-left
    assert transform(x, 1, False)[0, 0, 0, 0] == x[0, 0, 0, -1]


class RampProcess:
    """A stand-in process: nearest upsampling of the input plus a ramp along the width of
    whatever frame it is given (not equivariant), so the ensemble must average the ramp out."""

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, network, batch, **options):
        self.calls += 1
        low_res = batch["cond"]["low_res"]
        up = low_res.repeat_interleave(4, -2).repeat_interleave(4, -1)
        ramp = torch.linspace(-0.2, 0.2, up.shape[-1]).expand_as(up)
        return SRSamples(up + ramp, up, low_res, batch.get("x0"))


@pytest.mark.parametrize("transforms", [1, 2, 4, 8])
def test_the_ensemble_undoes_each_transform_and_averages(transforms):
    low_res = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(0)) - 0.5
    x0 = torch.zeros(2, 3, 24, 24)
    process = RampProcess()
    out = self_ensemble(process, None, {"x0": x0, "cond": {"low_res": low_res}}, transforms)
    up = low_res.repeat_interleave(4, -2).repeat_interleave(4, -1)
    assert process.calls == transforms
    assert torch.equal(out.bicubic, up) and torch.equal(out.low_res, low_res)
    assert out.reference is x0
    error = out.image - up  # nearest upsampling commutes with every symmetry: only the ramp is left
    if transforms == 1:
        torch.testing.assert_close(error, torch.linspace(-0.2, 0.2, 24).expand_as(up))
    elif transforms == 2:  # identity + flip: the ramp cancels against its mirror image
        torch.testing.assert_close(error, torch.zeros_like(up), atol=1e-6, rtol=0)
    else:  # ramps along the width and along the height, each with its mirror: all cancel
        torch.testing.assert_close(error, torch.zeros_like(up), atol=1e-6, rtol=0)


def test_a_bad_ensemble_size_is_refused():
    with pytest.raises(ValueError, match="1, 2, 4 or 8"):
        self_ensemble(RampProcess(), None, {"cond": {"low_res": torch.zeros(1, 3, 4, 4)}}, 3)


def test_the_ensemble_of_the_diffusion_process_keeps_shape_range_and_consistency():
    """On the real process (tiny untrained network, odd-sized image): a valid image of the
    input's shape, as consistent with the input as the plain output."""
    domain = ImageDomain()
    cfg = config.compose(domain.default_config(), domain="image",
                         overrides=["network.channels=8", "network.blocks=1", "process.tile=16",
                                    "process.tile_overlap=4"])
    network, process = domain.build_network(cfg), domain.process(cfg)
    x0 = torch.rand(1, 3, 28, 36, generator=torch.Generator().manual_seed(1)) * 2 - 1
    batch = {"x0": x0, "cond": {"low_res": process.degradation(x0)}}
    with torch.no_grad():
        out = self_ensemble(process, network, batch, 8, steps=2,
                            generator=torch.Generator().manual_seed(0))
    assert out.image.shape == x0.shape and out.image.abs().max() <= 1.0
    down = process.degradation.downsample(out.image)
    plain = process.degradation.downsample(out.bicubic)
    low_res = batch["cond"]["low_res"]
    assert (down - low_res).abs().mean() <= (plain - low_res).abs().mean() + 0.02


def test_process_self_ensemble_wraps_the_process_for_train_sample_and_evaluate():
    """`process.self_ensemble=4`: the domain's process averages 4 symmetries when generating and
    trains exactly like the plain process; attributes pass through to it."""
    from diffusekit.domains.image.process import ResidualDiffusion, SelfEnsemble

    domain = ImageDomain()
    small = ["network.channels=8", "network.blocks=1", "process.tile=null"]
    plain_cfg = config.compose(domain.default_config(), domain="image", overrides=small)
    cfg = config.compose(domain.default_config(), domain="image",
                         overrides=[*small, "process.self_ensemble=4"])
    plain, wrapped = domain.process(plain_cfg), domain.process(cfg)
    assert isinstance(plain, ResidualDiffusion)
    assert isinstance(wrapped, SelfEnsemble) and wrapped.transforms == 4
    assert wrapped.sampler == plain.sampler and wrapped.degradation.scale == 4
    network = domain.build_network(cfg)
    x0 = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    batch = {"x0": x0, "cond": {"low_res": plain.degradation(x0)}}
    torch.testing.assert_close(
        wrapped.training_loss(network, batch, generator=torch.Generator().manual_seed(3)),
        plain.training_loss(network, batch, generator=torch.Generator().manual_seed(3)))
    with torch.no_grad():
        got = wrapped.generate(network, batch, steps=1, generator=torch.Generator().manual_seed(4))
        want = self_ensemble(plain, network, batch, 4, steps=1,
                             generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(got.image, want.image)
    bad = config.compose(domain.default_config(), domain="image",
                         overrides=[*small, "process.self_ensemble=3"])
    with pytest.raises(ConfigError, match="1, 2, 4 or 8"):
        domain.process(bad)
