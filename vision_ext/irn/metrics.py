"""Image quality metrics as the super-resolution literature computes them (shared by vision methods).

- Y channel: MATLAB ``rgb2ycbcr`` luma, Y = 16 + 65.481 R + 128.553 G + 24.966 B for RGB in [0, 1]
  (Y in [16, 235] on the 0–255 scale).
- PSNR on 0–255 values: 10 log10(255² / MSE).
- SSIM: Wang et al. 2004, 11×11 Gaussian window σ = 1.5, C1 = (0.01·255)², C2 = (0.03·255)², "valid"
  filtering, averaged over pixels (and over channels for RGB) — as the reference's ``util.calculate_ssim``.
- ``crop_border``: pixels removed from each side before measuring (the scale factor, by convention).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from graftkit.errors import GraftkitError
from vision_ext.irn.checks import check_values


def rgb_to_y(image: Tensor) -> Tensor:
    """RGB (..., 3, H, W) in [0, 1] → Y (..., 1, H, W) on the 0–255 scale (MATLAB ``rgb2ycbcr``)."""
    if image.dim() < 3 or image.shape[-3] != 3:
        raise GraftkitError(f"rgb_to_y needs (..., 3, H, W), got {tuple(image.shape)}")
    weights = torch.tensor([65.481, 128.553, 24.966], dtype=image.dtype, device=image.device)
    return 16.0 + torch.einsum("...chw,c->...hw", image, weights).unsqueeze(-3)


def _prepare(a: Tensor, b: Tensor, crop_border: int, y_channel: bool) -> tuple[Tensor, Tensor]:
    if a.shape != b.shape:
        raise GraftkitError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() not in (3, 4):
        raise GraftkitError(f"images must be (C, H, W) or (B, C, H, W), got {tuple(a.shape)}")
    for image, which in ((a, "first"), (b, "second")):
        # the literature measures 8-bit images: quantize() a network's output before scoring it
        check_values(image, f"the {which} image", unit_range=True)
    a, b = a.double(), b.double()
    if crop_border:
        if min(a.shape[-2:]) <= 2 * crop_border:
            raise GraftkitError(f"image {tuple(a.shape[-2:])} is too small for crop_border={crop_border}")
        a = a[..., crop_border:-crop_border, crop_border:-crop_border]
        b = b[..., crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        return rgb_to_y(a), rgb_to_y(b)
    return a * 255.0, b * 255.0


def psnr(a: Tensor, b: Tensor, crop_border: int = 0, y_channel: bool = True) -> float:
    """PSNR in dB of two images in [0, 1] (mean over a batch of its per-image PSNRs)."""
    a, b = _prepare(a, b, crop_border, y_channel)
    mse = ((a - b) ** 2).flatten(-3).mean(-1).reshape(-1)
    values = [math.inf if m == 0 else 10 * math.log10(255.0**2 / m) for m in mse.tolist()]
    return sum(values) / len(values)


def _gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float64,
                     device: torch.device | None = None) -> Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: Tensor, b: Tensor, crop_border: int = 0, y_channel: bool = True) -> float:
    """SSIM of two images in [0, 1] (mean over pixels, channels and batch)."""
    a, b = _prepare(a, b, crop_border, y_channel)
    if a.dim() == 3:
        a, b = a[None], b[None]
    if min(a.shape[-2:]) < 11:
        raise GraftkitError(f"SSIM needs images of at least 11×11 after cropping, got {tuple(a.shape[-2:])}")
    channels = a.shape[1]
    window = _gaussian_window(dtype=a.dtype, device=a.device).expand(channels, 1, 11, 11)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(x, window, groups=channels)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())
