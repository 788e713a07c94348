"""Tiled network calls: a partition of unity, so tiled equals untiled output."""

from __future__ import annotations

import torch
from torch import nn

from diffusekit.core.app import config
from diffusekit.domains.image.domain import ImageDomain
from diffusekit.domains.image.network import SRUNet
from diffusekit.domains.image.tiling import TiledNetwork, tile_starts, window


class Pointwise(nn.Module):
    """A network that acts pixel by pixel (1x1 convolutions), so tiling cannot change it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 3, 1)

    def forward(self, x_in, c_noise, upsampled):
        return torch.tanh(self.conv(torch.cat([x_in, upsampled], 1))) * (1 + c_noise.view(-1, 1, 1, 1))


def test_tile_starts_cover_the_image_with_the_overlap():
    for size, tile, overlap in [(100, 32, 8), (64, 32, 16), (33, 32, 8), (32, 32, 8), (10, 32, 8)]:
        starts = tile_starts(size, tile, overlap)
        assert starts[0] == 0 and starts[-1] + min(tile, size) == max(size, min(tile, size))
        for a, b in zip(starts, starts[1:]):
            assert 0 < b - a <= tile - overlap
    assert (window(8, 8) > 0).all()


def test_tiled_equals_untiled_for_a_pixelwise_network():
    torch.manual_seed(0)
    net = Pointwise()
    x, up = torch.randn(2, 3, 70, 90), torch.randn(2, 3, 70, 90)
    c = torch.rand(2)
    tiled = TiledNetwork(net, tile=32, overlap=8, batch_tiles=3)
    assert torch.allclose(tiled(x, c, upsampled=up), net(x, c, upsampled=up), atol=1e-6)


def test_sampling_a_small_image_tiled_equals_untiled():
    """The whole sampler path (ResidualDiffusion.generate) on a 48x48 image: a tile larger than
    the image is one call (bit-identical), and a pixelwise network gives the same image with
    many overlapping tiles."""
    domain = ImageDomain()
    base = ["network.channels=8", "network.mults=[1,2]", "process.steps=3"]
    low_res = torch.rand(1, 3, 12, 12) * 2 - 1
    batch = {"x0": torch.zeros(1, 3, 48, 48), "cond": {"low_res": low_res}}

    def run(network, tile):
        cfg = config.compose(domain.default_config(), domain="image",
                             overrides=[*base, f"process.tile={tile}", "process.tile_overlap=8"])
        process = domain.process(cfg)
        with torch.no_grad():
            return process.generate(network, batch, generator=torch.Generator().manual_seed(3)).image

    torch.manual_seed(0)
    unet = SRUNet(channels=8, mults=(1, 2))
    for p in unet.parameters():  # leave the zero-initialised start: a non-trivial function
        p.data.normal_(0, 0.05)
    assert torch.equal(run(unet, 64), run(unet, "null"))
    pointwise = Pointwise()
    assert torch.allclose(run(pointwise, 16), run(pointwise, "null"), atol=1e-5)
