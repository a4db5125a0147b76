"""MATLAB-style ``imresize(..., 'bicubic')``: the reference LR of the SR/rescaling literature.

Like MATLAB (and the reference's ``data/util.py::imresize``): Keys cubic kernel with a = −0.5, pixel-centre
alignment ``x = u/s + ½(1 − 1/s)``, antialiasing when downscaling (kernel stretched by 1/s and scaled by s),
weights normalised to sum 1, symmetric (mirror) padding at the borders. Implemented as two dense
(out × in) weight matrices, one per axis, applied by matmul: exact, differentiable, device-agnostic.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from graftkit.errors import GraftkitError
from vision_ext.irn.checks import check_values


def cubic(x: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = −0.5 (MATLAB's ``cubic``)."""
    ax = x.abs()
    ax2, ax3 = ax**2, ax**3
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def resize_weights(in_length: int, out_length: int, scale: float, antialias: bool = True,
                   dtype: torch.dtype = torch.float64) -> Tensor:
    """The (out_length, in_length) matrix W with ``out = W @ in`` along one axis."""
    kernel_width = 4.0
    stretch = antialias and scale < 1
    if stretch:
        kernel_width /= scale
    u = torch.arange(1, out_length + 1, dtype=torch.float64)
    x = u / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate of each output pixel centre
    left = torch.floor(x - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # 1-based
    distance = x[:, None] - indices
    weights = scale * cubic(distance * scale) if stretch else cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # symmetric padding: index 0 → 1, −1 → 2, in+1 → in, … (MATLAB's aux = [1:in, in:-1:1])
    period = 2 * in_length
    wrapped = torch.remainder(indices.long() - 1, period)
    source = torch.where(wrapped < in_length, wrapped, period - 1 - wrapped)
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    matrix.scatter_add_(1, source, weights)
    return matrix.to(dtype)


def imresize(image: Tensor, scale: float | None = None, size: tuple[int, int] | None = None,
             antialias: bool = True) -> Tensor:
    """Bicubic resize of (..., H, W) by ``scale`` (output ⌈H·scale⌉ × ⌈W·scale⌉) or to ``size``, as MATLAB.

    No clamping or rounding: quantize the result yourself when an 8-bit image is wanted.
    """
    if (scale is None) == (size is None):
        raise GraftkitError("imresize needs exactly one of scale or size")
    if image.dim() < 2 or not image.is_floating_point():
        raise GraftkitError(f"imresize needs a float tensor (..., H, W), got {image.dtype} {tuple(image.shape)}")
    check_values(image, "the image to resize")
    height, width = image.shape[-2:]
    if size is None:
        if not scale > 0:
            raise GraftkitError(f"scale must be > 0, got {scale}")
        size = (math.ceil(height * scale), math.ceil(width * scale))
        scales = (scale, scale)
    else:
        scales = (size[0] / height, size[1] / width)
    rows = resize_weights(height, size[0], scales[0], antialias).to(image.device, image.dtype)
    cols = resize_weights(width, size[1], scales[1], antialias).to(image.device, image.dtype)
    return rows @ image @ cols.T
