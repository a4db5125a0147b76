"""Evaluate IRN as the literature: restore = upscale(downscale(HR)), against bicubic down + bicubic up.

HR images are cropped to a multiple of the scale first (the literature's ``modcrop``); every output is
rounded to 8 bits (as a saved image) before PSNR/SSIM on the Y channel with ``crop_border = scale``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from graftkit.errors import GraftkitError
from vision_ext.irn.metrics import psnr, ssim
from vision_ext.irn.modeling_irn import IRN, quantize
from vision_ext.irn.resize import imresize

#: The paper's Table 1 (PSNR on Y): (IRN, Bicubic & Bicubic) per scale and benchmark set.
PAPER_PSNR_Y = {
    2: {"Set5": (43.99, 33.66), "DIV2K": (44.32, 31.01)},
    4: {"Set5": (36.19, 28.42), "DIV2K": (35.07, 26.66)},
}


def modcrop(image: Tensor, scale: int) -> Tensor:
    """Crop (…, H, W) to H, W divisible by ``scale`` (top-left kept)."""
    height, width = image.shape[-2:]
    if height < scale or width < scale:
        raise GraftkitError(f"image {height}×{width} is smaller than the scale {scale}")
    return image[..., : height - height % scale, : width - width % scale]


def bicubic_roundtrip(hr: Tensor, scale: int) -> tuple[Tensor, Tensor]:
    """MATLAB-bicubic LR (8-bit) and its bicubic upscale (8-bit) of an HR batch (sizes divisible by scale)."""
    lr = quantize(imresize(hr, 1 / scale))
    return lr, quantize(imresize(lr, float(scale)))


@dataclass
class ImageScores:
    name: str
    psnr_irn: float
    ssim_irn: float
    psnr_irn_z0: float
    ssim_irn_z0: float
    psnr_bicubic: float
    ssim_bicubic: float
    psnr_lr_vs_bicubic: float
    images: dict[str, Tensor] | None = None  # "hr", "bicubic", "irn_z0", "irn_sampled" when kept


@torch.inference_mode()
def restore(model: IRN, hr: Tensor, gaussian_scale: float, generator: torch.Generator | None = None
            ) -> tuple[Tensor, Tensor]:
    """IRN's LR (8-bit) and restored HR (8-bit) of an HR batch, with z ~ gaussian_scale · N(0, 1)."""
    lr, _ = model.downscale(hr)
    return lr, quantize(model.upscale(lr, gaussian_scale=gaussian_scale, generator=generator))


def evaluate_images(model: IRN, images: Iterable[tuple[str, Tensor]], seed: int = 0,
                    keep_images: bool = False) -> list[ImageScores]:
    """Scores per image ((3, H, W) in [0, 1]): IRN with z ~ N(0, 1) and z = 0, and bicubic down+up."""
    model.eval()
    scale = model.scale
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    scores = []
    for name, image in images:
        hr = modcrop(image, scale)[None].to(device)
        lr, sampled = restore(model, hr, 1.0, generator)
        _, zero = restore(model, hr, 0.0)
        bic_lr, bicubic = bicubic_roundtrip(hr, scale)
        scores.append(ImageScores(
            name=name,
            psnr_irn=psnr(sampled, hr, scale), ssim_irn=ssim(sampled, hr, scale),
            psnr_irn_z0=psnr(zero, hr, scale), ssim_irn_z0=ssim(zero, hr, scale),
            psnr_bicubic=psnr(bicubic, hr, scale), ssim_bicubic=ssim(bicubic, hr, scale),
            psnr_lr_vs_bicubic=psnr(lr, bic_lr, 0),
            images={"hr": hr[0], "bicubic": bicubic[0], "irn_z0": zero[0], "irn_sampled": sampled[0]}
            if keep_images else None,
        ))
    return scores
