"""Built-in domains that declare ControlNet blocks (`Domain.control_blocks`) name blocks that
exist in their default network; on the image domain's default network a control is built from
a probe and equals the base at initialisation."""

import pytest
import torch

from diffusekit.core.app import config
from diffusekit.core.app.training.models import installed_domain
from diffusekit.core.control import (ControlBinding, Controlled, ControlNet, default_blocks,
                                     probe_spec, resolve_blocks)
from diffusekit.core.errors import DataError

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


def _molecules_network():
    torch.manual_seed(0)
    domain = installed_domain("molecules")
    cfg = config.compose(domain.default_config(), domain="molecules",
                         overrides=["network.hidden=16", "network.n_layers=3"])
    network = domain.build_network(cfg).eval().requires_grad_(False)
    b, n, f = 2, 7, network.n_features
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[1, 5:] = False
    x = torch.randn(b, n, 3 + f) * mask[..., None]
    x[..., :3] -= x[..., :3].sum(1, keepdim=True) / mask.sum(1)[:, None, None] * mask[..., None]
    return network, x, torch.rand(b), {"node_mask": mask}


def _rotation() -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(3)))
    return q


@pytest.mark.parametrize("hint_shape", [(4,), (7, 4)], ids=["vector", "per-atom"])
def test_a_control_of_the_egnn_joins_its_tuple_blocks_and_stays_equivariant(hint_shape):
    """The EGNN's layers return (h, x): a control joins h and leaves the coordinates to the
    base. It starts as the base; once its projections are non-zero it changes the output, and
    with a rotation-invariant hint the controlled network stays rotation-equivariant."""
    network, x, c, cond = _molecules_network()
    blocks = default_blocks(network)
    assert blocks == ["layers.0", "layers.1"]
    spec = probe_spec(network, blocks, hint_shape, (x, c, cond), width=8)
    control = ControlNet(network, spec)
    controlled = Controlled(network, [ControlBinding(control)])
    hint = torch.randn(2, *hint_shape)
    with torch.no_grad():
        base = network(x, c, **cond)
        assert torch.equal(controlled(x, c, hint=hint, **cond), base)
        for p in control.parameters():
            p.add_(0.1 * torch.randn_like(p))
        steered = controlled(x, c, hint=hint, **cond)
        assert not torch.allclose(steered, base, atol=1e-4)
        rot = _rotation()
        turned = x.clone()
        turned[..., :3] = x[..., :3] @ rot.T
        out = controlled(turned, c, hint=hint, **cond)
    torch.testing.assert_close(out[..., :3], steered[..., :3] @ rot.T, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[..., 3:], steered[..., 3:], rtol=1e-4, atol=1e-4)


def test_a_per_element_hint_of_another_length_is_one_clear_error():
    network, x, c, cond = _molecules_network()
    spec = probe_spec(network, default_blocks(network), (7, 4), (x, c, cond), width=8)
    controlled = Controlled(network, [ControlBinding(ControlNet(network, spec))])
    with pytest.raises(DataError, match="shape"):
        controlled(x, c, hint=torch.randn(2, 5, 4), **cond)
