"""Invertible Image Rescaling (Xiao et al., ECCV 2020) as a plain PyTorch module.

The flow maps an image x (B, 3, H, W) to y = [y_LR, z] (B, 3·4^k, H/2^k, W/2^k), k = log2(scale): per ×2 step a
Haar wavelet transform (low band + 3 high bands) then ``blocks_per_step`` affine coupling blocks whose
first 3 channels become the low-resolution image and the rest the latent z. The inverse takes [y_LR, z]
back to x exactly (up to float error).
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from graftkit.errors import GraftkitError, check_number
from vision_ext.irn.checks import check_values
from vision_ext.irn.configuration_irn import IRNConfig


class HaarTransform(nn.Module):
    r"""One level of the orthogonal 2-D Haar wavelet transform, as a channel-expanding invertible map.

    Each 2×2 block [[a, b], [c, d]] of each channel becomes four sub-bands

    .. math::
        L = \tfrac{a+b+c+d}{4},\; H_1 = \tfrac{a-b+c-d}{4},\; H_2 = \tfrac{a+b-c-d}{4},\; H_3 = \tfrac{a-b-c+d}{4}

    laid out band-major: output channels ``[L(all C), H1(all C), H2(all C), H3(all C)]`` — the reference's
    layout, so the first C channels are the 2×2 average (a box-downscaled image).
    """

    def forward(self, x: Tensor) -> Tensor:
        a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
        c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
        return torch.cat(((a + b + c + d), (a - b + c - d), (a + b - c - d), (a - b - c + d)), dim=1) / 4

    def inverse(self, y: Tensor) -> Tensor:
        low, h1, h2, h3 = y.chunk(4, dim=1)
        batch, channels, height, width = low.shape
        a = low + h1 + h2 + h3
        b = low - h1 + h2 - h3
        c = low + h1 - h2 - h3
        d = low - h1 - h2 + h3
        top = torch.stack((a, b), dim=-1).reshape(batch, channels, height, 2 * width)
        bottom = torch.stack((c, d), dim=-1).reshape(batch, channels, height, 2 * width)
        x = torch.stack((top, bottom), dim=-2).reshape(batch, channels, 2 * height, 2 * width)
        return x.contiguous(memory_format=_memory_format(y))


class DenseBlock(nn.Module):
    """The reference's 5-conv DenseNet subnet (3×3 convs, LeakyReLU 0.2, each conv sees all earlier maps).

    Init as the reference with ``init: xavier``: convs 1–4 Xavier-normal ×0.1, zero bias; the last conv all
    zero, so every coupling block starts as the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, growth_channels: int = 32) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels + i * growth_channels, growth_channels, 3, padding=1) for i in range(4)
        )
        self.out = nn.Conv2d(in_channels + 4 * growth_channels, out_channels, 3, padding=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in self.convs:
            nn.init.xavier_normal_(conv.weight)
            with torch.no_grad():
                conv.weight.mul_(0.1)
            nn.init.zeros_(conv.bias)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for conv in self.convs:
            features.append(F.leaky_relu(conv(torch.cat(features, dim=1)), 0.2))
        return self.out(torch.cat(features, dim=1))


class InvBlock(nn.Module):
    r"""Affine coupling block on the split x = [x1 (first ``split`` channels), x2 (the rest)]:

    .. math::
        y_1 = x_1 + \phi(x_2),\qquad
        s = c\,(2\,\sigma(\rho(y_1)) - 1),\qquad
        y_2 = x_2 \odot e^{s} + \eta(y_1)

    with the log-scale soft-clamped to (−c, c) (the reference's ``InvBlockExp``: φ = F, ρ = H, η = G).
    """

    def __init__(self, channels: int, split: int, growth_channels: int = 32, clamp: float = 1.0) -> None:
        super().__init__()
        self.split, self.clamp = split, clamp
        rest = channels - split
        self.phi = DenseBlock(rest, split, growth_channels)
        self.rho = DenseBlock(split, rest, growth_channels)
        self.eta = DenseBlock(split, rest, growth_channels)

    def _log_scale(self, y1: Tensor) -> Tensor:
        return self.clamp * (torch.sigmoid(self.rho(y1)) * 2 - 1)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        y1 = x1 + self.phi(x2)
        y2 = x2 * torch.exp(self._log_scale(y1)) + self.eta(y1)
        return torch.cat((y1, y2), dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        y1, y2 = y[:, : self.split], y[:, self.split :]
        x2 = (y2 - self.eta(y1)) * torch.exp(-self._log_scale(y1))
        x1 = y1 - self.phi(x2)
        return torch.cat((x1, x2), dim=1)


class _Quantize(torch.autograd.Function):
    """8-bit rounding with a straight-through gradient (identity, as the reference's ``Quant``)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: ANN001 - autograd.Function signature
        return torch.round(x.clamp(0, 1) * 255) / 255

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001
        return grad


def quantize(x: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to 8 bits; the gradient passes straight through."""
    return _Quantize.apply(x)


class IRN(nn.Module):
    """Invertible Image Rescaling network.

    ``forward(x) -> y`` and ``inverse(y) -> x`` are the raw flow (no quantization): y[:, :3] is the LR image
    and y[:, 3:] the latent z. ``downscale(hr) -> (lr, z)`` quantizes the LR to 8 bits;
    ``upscale(lr, z=None)`` samples z ~ N(0, 1) when not given (``gaussian_scale=0`` uses zeros).

    Inputs are float images in [0, 1], shape (B, 3, H, W). ``forward`` needs H, W divisible by ``scale``;
    ``downscale`` pads other sizes by edge replication and ``upscale(..., size=(H, W))`` crops back.
    NaN or infinite inputs (images, y, z, ``gaussian_scale``) raise ``GraftkitError``, and so do images
    outside [0, 1] (0–255 ones, say) given to ``downscale``/``upscale`` (the raw flow takes any finite
    tensor); the value checks are skipped while ``torch.compile``/``torch.export`` trace.
    """

    def __init__(self, scale: int | None = None, *, config: IRNConfig | None = None, **overrides: object) -> None:
        super().__init__()
        if config is None:
            config = IRNConfig(scale=4 if scale is None else scale, **overrides)  # type: ignore[arg-type]
        elif scale is not None or overrides:
            raise GraftkitError("pass either config= or scale/keyword overrides, not both")
        self.config = config
        self.haar = HaarTransform()
        blocks = []
        channels = config.in_channels
        for _ in range(config.steps):
            channels *= 4
            blocks.append(nn.ModuleList(
                InvBlock(channels, config.in_channels, config.growth_channels, config.clamp)
                for _ in range(config.blocks_per_step)
            ))
        self.levels = nn.ModuleList(blocks)
        # channels-last weights (inputs follow in forward/inverse): on CPU the dense blocks' narrow convs ran
        # 1.4-1.7x faster at inference and 1.3x per training step than in NCHW (benchmarks/bench_irn.py);
        # model.to(memory_format=torch.contiguous_format) switches back, inputs then follow that
        self.to(memory_format=torch.channels_last)

    @property
    def scale(self) -> int:
        return self.config.scale

    @property
    def latent_channels(self) -> int:
        return self.config.in_channels * (self.scale**2 - 1)

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, DenseBlock):
                module.reset_parameters()

    def _memory_format(self) -> torch.memory_format:
        """The layout of the conv weights, which the flow's activations are kept in."""
        return _memory_format(self.levels[0][0].phi.convs[0].weight)

    def _check_image(self, x: Tensor, what: str, channels: int) -> None:
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise GraftkitError(f"{what} must be a 4-D tensor (B, C, H, W), got {shape}")
        if x.shape[1] != channels:
            raise GraftkitError(f"{what} must have {channels} channels, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise GraftkitError(f"{what} must be a float tensor in [0, 1], got dtype {x.dtype}")

    def forward(self, x: Tensor) -> Tensor:
        """Raw flow HR → [LR, z] of any finite tensor (a bijection, no range check: ``downscale`` is the
        call for images); H and W must be divisible by ``scale``."""
        self._check_image(x, "input image", self.config.in_channels)
        if x.shape[-2] % self.scale or x.shape[-1] % self.scale:
            raise GraftkitError(
                f"image size {tuple(x.shape[-2:])} is not divisible by the scale {self.scale}; "
                "use downscale(), which pads, or crop the image"
            )
        check_values(x, "input image")
        return self._flow(x)

    def _flow(self, x: Tensor) -> Tensor:
        out = x.contiguous(memory_format=self._memory_format())
        for blocks in self.levels:
            out = self.haar(out)
            for block in blocks:
                out = block(out)
        return out

    def inverse(self, y: Tensor) -> Tensor:
        """Raw inverse flow [LR, z] → HR."""
        self._check_image(y, "flow output y", self.config.in_channels * self.scale**2)
        check_values(y, "flow output y")
        return self._inverse_flow(y)

    def _inverse_flow(self, y: Tensor) -> Tensor:
        out = y.contiguous(memory_format=self._memory_format())
        for blocks in reversed(self.levels):
            for block in reversed(blocks):
                out = block.inverse(out)
            out = self.haar.inverse(out)
        return out

    def downscale(self, hr: Tensor) -> tuple[Tensor, Tensor]:
        """HR (B, 3, H, W) in [0, 1] → (LR quantized to 8 bits (B, 3, ⌈H/s⌉, ⌈W/s⌉), z).

        Sizes not divisible by the scale are padded by edge replication; pass ``size=hr.shape[-2:]`` to
        :meth:`upscale` to crop the restored image back.
        """
        self._check_image(hr, "HR image", self.config.in_channels)
        check_values(hr, "HR image", unit_range=True)
        height, width = hr.shape[-2:]
        pad_h, pad_w = -height % self.scale, -width % self.scale
        if pad_h or pad_w:
            hr = F.pad(hr, (0, pad_w, 0, pad_h), mode="replicate")
        y = self._flow(hr)
        channels = self.config.in_channels
        return quantize(y[:, :channels]), y[:, channels:]

    def upscale(
        self,
        lr: Tensor,
        z: Tensor | None = None,
        *,
        gaussian_scale: float = 1.0,
        size: tuple[int, int] | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """LR (B, 3, h, w) → HR (B, 3, h·s, w·s) (cropped to ``size`` when given).

        z: the latent from :meth:`downscale`, or None to sample ``gaussian_scale · N(0, 1)``
        (``gaussian_scale=0``: z = 0, the distribution's mode); ``gaussian_scale`` must be finite and >= 0.
        size: (height, width), positive and at most the upscaled size.
        """
        self._check_image(lr, "LR image", self.config.in_channels)
        check_number("gaussian_scale", gaussian_scale)
        batch, _, height, width = lr.shape
        full = (height * self.scale, width * self.scale)
        if size is not None:
            if (not isinstance(size, tuple | list) or len(size) != 2
                    or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in size)):
                raise GraftkitError(f"size must be (height, width), two positive integers, got {size!r}")
            if size[0] > full[0] or size[1] > full[1]:
                raise GraftkitError(f"size {tuple(size)} is larger than the upscaled image {full}")
        check_values(lr, "LR image", unit_range=True)
        latent_shape = (batch, self.latent_channels, height, width)
        if z is None:
            z = torch.randn(latent_shape, generator=generator, device=lr.device, dtype=lr.dtype) * gaussian_scale
        elif not isinstance(z, Tensor) or tuple(z.shape) != latent_shape:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise GraftkitError(f"z must have shape {latent_shape} for this LR image, got {shape}")
        else:
            check_values(z, "z")
        hr = self._inverse_flow(torch.cat((lr, z.to(lr.dtype)), dim=1))
        if size is not None:
            hr = hr[..., : size[0], : size[1]]
        return hr

    def extra_repr(self) -> str:
        c = self.config
        return (f"scale={c.scale}, blocks_per_step={c.blocks_per_step}, growth_channels={c.growth_channels}, "
                f"clamp={c.clamp}")


def _memory_format(x: Tensor) -> torch.memory_format:
    """The layout to keep: channels-last when ``x`` is stored that way (and not also plain contiguous)."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format

