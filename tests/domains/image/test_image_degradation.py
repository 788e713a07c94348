"""Degradation, colour conversion and metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusekit.domains.image.degradation import (Degradation, bicubic_down, bicubic_up,
                                                  gaussian_blur, quantize, rgb_to_y)
from diffusekit.domains.image.metrics import consistency, psnr, psnr_y, ssim, ssim_y


def keys_cubic(x: float, a: float = -0.5) -> float:
    """Keys' cubic convolution kernel (Keys 1981), the antialiased bicubic filter with a = -0.5."""
    x = abs(x)
    if x <= 1:
        return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
    if x < 2:
        return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a
    return 0.0


@pytest.mark.parametrize("rgb, y", [((0, 0, 0), 16.0), ((255, 255, 255), 235.0),
                                    ((255, 0, 0), 16 + 65.481), ((0, 255, 0), 16 + 128.553),
                                    ((0, 0, 255), 16 + 24.966),
                                    ((128, 128, 128), 16 + 128 * 219.0 / 255)])
def test_bt601_luma_by_hand(rgb, y):
    image = torch.tensor(rgb, dtype=torch.float64).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    assert torch.allclose(rgb_to_y(image), torch.full((1, 1, 2, 2), y, dtype=torch.float64))


def test_antialiased_bicubic_downsampling_of_an_impulse_by_hand():
    """Output i of a x4 reduction is sum_j x_j k((j - 4i - 1.5) / 4) / sum_j k((j - 4i - 1.5) / 4):
    the Keys kernel (a = -0.5) widened 4 times, centred on the output pixel, renormalised over the
    taps inside the image."""
    width, j0 = 32, 13
    x = torch.zeros(1, 1, 4, width, dtype=torch.float64)
    x[..., j0] = 1.0
    out = bicubic_down(x, 4)[0, 0, 0]
    for i in range(width // 4):
        taps = [keys_cubic((j - 4 * i - 1.5) / 4) for j in range(width)]
        assert out[i].item() == pytest.approx(taps[j0] / sum(taps), abs=1e-6)


def test_downsampling_a_ramp_gives_the_block_centres():
    """A symmetric kernel maps the ramp x_j = j to its value at the output centre, 4i + 1.5,
    away from the borders."""
    x = torch.arange(64, dtype=torch.float64).view(1, 1, 1, 64).expand(1, 1, 8, 64)
    out = bicubic_down(x.contiguous(), 4)[0, 0, 0]
    interior = torch.arange(2, 14)
    assert torch.allclose(out[interior], 4 * interior.double() + 1.5, atol=1e-9)


def test_constants_survive_every_resampling_and_blur():
    c = torch.full((2, 3, 16, 24), 0.3)
    assert torch.allclose(bicubic_down(c, 4), torch.full((2, 3, 4, 6), 0.3), atol=1e-6)
    assert torch.allclose(bicubic_up(c, 4), torch.full((2, 3, 64, 96), 0.3), atol=1e-6)
    assert torch.allclose(gaussian_blur(c, 1.5), c, atol=1e-6)


def test_degradation_shapes_noise_and_errors():
    g = Degradation(scale=4, noise_std=0.05)
    x = torch.zeros(4, 3, 64, 64)
    y = g(x, torch.Generator().manual_seed(0))
    assert y.shape == (4, 3, 16, 16) and g.upsample(y).shape == x.shape
    # noise std 0.05 on [0, 1] is 0.1 on [-1, 1]
    assert (y.std() / 2).item() == pytest.approx(0.05, rel=0.05)
    with pytest.raises(ValueError, match="multiple of the scale"):
        g(torch.zeros(1, 3, 30, 32))
    with pytest.raises(ValueError):
        Degradation(scale=0)


def test_quantize_and_psnr_by_hand():
    x = torch.linspace(-1, 1, 3 * 20 * 20).view(1, 3, 20, 20)
    assert quantize(x).min() == 0 and quantize(x).max() == 255
    a = torch.full((1, 1, 8, 8), 100.0)
    assert psnr(a, a + 5.0).item() == pytest.approx(20 * math.log10(255 / 5.0))
    # a grey image 2 levels brighter in every channel: Y differs by 2 * 219 / 255
    grey = torch.full((1, 3, 16, 16), 100 / 127.5 - 1)
    brighter = torch.full((1, 3, 16, 16), 102 / 127.5 - 1)
    expected = 20 * math.log10(255 / (2 * 219 / 255))
    assert psnr_y(brighter, grey, border=4).item() == pytest.approx(expected, abs=1e-3)


def test_ssim_matches_scikit_image_and_is_one_on_identity():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 1, 40, 48, generator=g, dtype=torch.float64) * 255
    b = (a + 20 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 255)
    ref = structural_similarity(a[0, 0].numpy(), b[0, 0].numpy(), data_range=255,
                                gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ssim(a, b).item() == pytest.approx(ref, abs=1e-6)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    assert torch.allclose(ssim_y(x, x, 4), torch.ones(2, dtype=torch.float64))


def test_consistency_of_the_truth_is_high_and_of_bicubic_lower():
    import skimage.data

    hr = torch.from_numpy(np.array(skimage.data.astronaut()[:128, :128])).permute(2, 0, 1)[None]
    hr = hr.float() / 127.5 - 1
    g = Degradation(4)
    y = g(hr)
    truth, bicubic = consistency(hr, y, g).item(), consistency(g.upsample(y), y, g).item()
    assert truth > 50.0  # only 8-bit rounding separates down(x) from y
    assert 25.0 < bicubic < truth
