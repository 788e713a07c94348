"""The image denoisers: shapes, the identity start, the config registry and grid-aligned tiles."""

from __future__ import annotations

import pytest
import torch

from diffusekit.core.app import config
from diffusekit.domains.image.domain import ImageDomain
from diffusekit.domains.image.network import NETWORKS, LRSRNet, SRUNet
from diffusekit.domains.image.tiling import TiledNetwork, tile_starts


@pytest.mark.parametrize("size", [(32, 48), (30, 45)])  # multiples of the scale, and not
def test_lr_network_maps_hr_to_hr_and_starts_at_zero(size):
    torch.manual_seed(0)
    net = LRSRNet(channels=16, blocks=2, scale=4)
    x, up = torch.randn(2, 3, *size), torch.randn(2, 3, *size)
    out = net(x, torch.rand(2), upsampled=up)
    assert out.shape == (2, 3, *size)
    assert torch.count_nonzero(out) == 0  # zero-initialised head: the bicubic image at the start
    for p in net.parameters():  # past the identity start
        torch.nn.init.normal_(p, std=0.1)
    a = net(x, torch.full((2,), 0.1), upsampled=up)
    b = net(x, torch.full((2,), 0.9), upsampled=up)
    assert not torch.allclose(a, b)  # the noise level reaches the output through the FiLM


def test_network_kind_is_picked_from_the_registry():
    domain = ImageDomain()
    assert set(NETWORKS.names()) >= {"unet", "lr"}
    for kind, cls in [("lr", LRSRNet), ("unet", SRUNet)]:
        cfg = config.compose(domain.default_config(), domain="image", overrides=[
            f"network.kind={kind}", "network.channels=8", "network.blocks=1"])
        assert isinstance(domain.build_network(cfg), cls)


def test_tile_starts_align_to_the_low_resolution_grid():
    for size, tile, overlap in [(100, 32, 8), (700, 128, 32), (512, 256, 32), (36, 32, 8)]:
        starts = tile_starts(size, tile, overlap, align=4)
        assert all(s % 4 == 0 for s in starts) and starts[-1] == size - tile
        for a, b in zip(starts, starts[1:]):
            assert 0 < b - a <= tile - overlap
    assert tile_starts(100, 32, 8) == tile_starts(100, 32, 8, align=1)


def test_aligned_tiles_of_the_lr_network_match_the_whole_image_away_from_seams():
    """With grid-aligned tiles the LR network sees the same pixel grid in every tile, so tiled and
    untiled outputs agree where a tile's receptive field lies inside it (the blend centre)."""
    torch.manual_seed(0)
    net = LRSRNet(channels=8, blocks=1, scale=4)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, up, c = torch.randn(1, 3, 96, 96), torch.randn(1, 3, 96, 96), torch.rand(1)
    tiled = TiledNetwork(net, tile=80, overlap=64, batch_tiles=2, align=4)(x, c, upsampled=up)
    whole = net(x, c, upsampled=up)  # 5 LR convolutions: a receptive radius of 20 HR pixels
    assert torch.allclose(tiled[..., 44:52, 44:52], whole[..., 44:52, 44:52], atol=1e-5)
