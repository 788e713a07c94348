"""The image domain's quality metrics: PSNR and SSIM on the luma channel, and consistency.

As in the SR literature (Lim et al. 2017; Saharia et al. 2021), images are first saved to 8 bits
(`degradation.quantize`), converted to BT.601 luma Y (`degradation.rgb_to_y`, [16, 235]) and
cropped by `border` = scale pixels on every side, then

    PSNR = 10 log10(255^2 / MSE(Y_hat, Y))                                       [dB]
    SSIM = mean over 11x11 Gaussian windows (sigma 1.5) of
           (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),
           C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2                 (Wang et al. 2004, "valid" windows)

Consistency (Saharia et al. 2021, Sec. 4.2) asks whether the output explains its input: the PSNR
of the degraded output down_s(blur(x_hat)) against the low-resolution input y, on RGB in
[0, 255] (higher is better; bicubic upsampling itself is not perfectly consistent).
All functions take [B, 3, H, W] images in [-1, 1] and return per-image values [B].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from diffusekit.domains.image.degradation import Degradation, quantize, rgb_to_y


def crop_border(x: Tensor, border: int) -> Tensor:
    """[..., H, W] -> [..., H - 2 border, W - 2 border]."""
    return x[..., border:x.shape[-2] - border, border:x.shape[-1] - border] if border > 0 else x


def psnr(a: Tensor, b: Tensor, peak: float = 255.0) -> Tensor:
    """Per-image PSNR in dB of [B, C, H, W] tensors on a scale with maximum `peak`: [B]."""
    mse = ((a.double() - b.double()) ** 2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(peak ** 2 / mse.clamp_min(1e-10))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    k = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(k ** 2) / (2.0 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: Tensor, b: Tensor, peak: float = 255.0) -> Tensor:
    """Per-image SSIM of [B, 1, H, W] images on a [0, peak] scale (Wang et al. 2004): [B]."""
    a, b = a.double(), b.double()
    w = _gaussian_window().to(a.device)
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_a, mu_b = F.conv2d(a, w), F.conv2d(b, w)
    var_a = F.conv2d(a * a, w) - mu_a ** 2
    var_b = F.conv2d(b * b, w) - mu_b ** 2
    cov = F.conv2d(a * b, w) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(dim=1)


def luma(x: Tensor, border: int) -> Tensor:
    """[B, 3, H, W] in [-1, 1] -> 8-bit BT.601 Y with `border` pixels cropped: [B, 1, H', W']."""
    return crop_border(rgb_to_y(quantize(x)), border)


def psnr_y(x: Tensor, reference: Tensor, border: int) -> Tensor:
    """PSNR on Y with a cropped border: [B]."""
    return psnr(luma(x, border), luma(reference, border))


def ssim_y(x: Tensor, reference: Tensor, border: int) -> Tensor:
    """SSIM on Y with a cropped border: [B]."""
    return ssim(luma(x, border), luma(reference, border))


def consistency(x: Tensor, low_res: Tensor, degradation: Degradation) -> Tensor:
    """PSNR (dB) of down_s(blur(x)) against the low-resolution input, RGB on [0, 255]: [B] (a
    hole degradation: of x's known pixels against the input's, `Holes.explained`)."""
    predicted, measured = degradation.explained(quantize(x) / 127.5 - 1.0, low_res)
    return psnr(quantize(predicted), quantize(measured))


def image_metrics(x: Tensor, reference: Tensor, low_res: Tensor, degradation: Degradation,
                  prefix: str = "") -> dict[str, Tensor]:
    """{prefix}psnr_y, {prefix}ssim_y, {prefix}consistency of images x against references: [B] each."""
    border = degradation.scale
    return {f"{prefix}psnr_y": psnr_y(x, reference, border),
            f"{prefix}ssim_y": ssim_y(x, reference, border),
            f"{prefix}consistency": consistency(x, low_res, degradation)}
