"""Built-in domains that declare ControlNet blocks (`Domain.control_blocks`) name blocks that
exist in their default network; on the image domain's default network a control is built from
a probe and equals the base at initialisation."""

import pytest
import torch

from diffusekit.core.app import config
from diffusekit.core.app.training.models import installed_domain
from diffusekit.core.control import (ControlBinding, Controlled, ControlNet, probe_spec,
                                     resolve_blocks)

DECLARED = ["audio", "digits", "image"]


@pytest.mark.parametrize("name", DECLARED)
def test_declared_control_blocks_exist_in_the_default_network(name):
    domain = installed_domain(name)
    cfg = config.compose(domain.default_config(), domain=name)
    network = domain.build_network(cfg)
    blocks = resolve_blocks(network, tuple(domain.control_blocks))
    assert blocks and all(not b.endswith(("conv1", "conv2")) for b in blocks)


def test_a_control_of_the_default_image_network_starts_as_the_base():
    torch.manual_seed(0)
    domain = installed_domain("image")
    cfg = config.compose(domain.default_config(), domain="image")
    network = domain.build_network(cfg).eval().requires_grad_(False)
    for p in network.parameters():  # blocks start as the identity: give them weights
        p.add_(0.05 * torch.randn_like(p))
    x, c = torch.randn(2, 3, 16, 16), torch.rand(2)
    cond = {"upsampled": torch.randn(2, 3, 16, 16)}
    blocks = resolve_blocks(network, domain.control_blocks)
    spec = probe_spec(network, blocks, (1, 16, 16), (x, c, cond), width=8)
    assert spec.blocks == tuple(blocks) and set(spec.channels) == {int(cfg.network.channels)}
    controlled = Controlled(network, [ControlBinding(ControlNet(network, spec))])
    with torch.no_grad():
        assert torch.equal(controlled(x, c, hint=torch.rand(2, 1, 16, 16), **cond),
                           network(x, c, **cond))
