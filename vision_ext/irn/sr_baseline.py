"""The super-resolution baseline IRN is compared with: bicubic down + a learned convolutional upscaler.

The paper's claim is that downscaling and upscaling *jointly* (IRN) restores better than any upscaler that
has to work from a fixed bicubic LR. :class:`ConvUpscaler` is that fixed-LR alternative at IRN's small size: an
EDSR-style residual conv stack (no normalisation) at LR resolution, a pixel shuffle, and the MATLAB-bicubic
upscale of the LR added as a skip. The last conv starts at zero, so the untrained upscaler *is* bicubic
upscaling and training can only learn a correction to it. :func:`train_upscaler` trains it on the same random
patches (:class:`~vision_ext.irn.training.PatchSampler`: whole-image bicubic LR, flips and transposes) with
the same optimiser settings, schedule and steps as IRN's :class:`~vision_ext.irn.training.TrainConfig`; the
LR input is rounded to 8 bits, as it is at test time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from graftkit.errors import GraftkitError, check_int
from vision_ext.irn.checks import check_values
from vision_ext.irn.evaluation import bicubic_roundtrip, modcrop
from vision_ext.irn.modeling_irn import quantize
from vision_ext.irn.resize import imresize
from vision_ext.irn.training import PatchSampler, TrainConfig


class _ResidualBlock(nn.Module):
    """conv-ReLU-conv with an identity skip (EDSR's block, no batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ConvUpscaler(nn.Module):
    """Upscale an LR image (B, 3, h, w) in [0, 1] by ``scale``: bicubic(LR) + pixel_shuffle(convs(LR)).

    ``channels`` features, ``blocks`` residual blocks of two 3×3 convs; 32 channels and 4 blocks give 78,348
    parameters (IRN ×2 with 4 blocks of growth 8 has 86,328).
    """

    def __init__(self, scale: int = 2, channels: int = 32, blocks: int = 4) -> None:
        super().__init__()
        for name, value in (("scale", scale), ("channels", channels), ("blocks", blocks)):
            check_int(name, value)
        self.scale = scale
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*(_ResidualBlock(channels) for _ in range(blocks)))
        self.tail = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # untrained = bicubic upscaling exactly
        nn.init.zeros_(self.tail.bias)

    def forward(self, lr: Tensor) -> Tensor:
        if lr.dim() != 4 or lr.shape[1] != 3:
            raise GraftkitError(f"the upscaler takes an RGB batch (B, 3, h, w), got {tuple(lr.shape)}")
        check_values(lr, "LR image", unit_range=True)
        features = self.head(lr)
        residual = F.pixel_shuffle(self.tail(features + self.body(features)), self.scale)
        return imresize(lr, float(self.scale)) + residual


def train_upscaler(model: ConvUpscaler, images: Sequence[Tensor], config: TrainConfig,
                   on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``model`` in place to restore HR patches of ``images`` from their 8-bit bicubic LR (L1 loss, as
    EDSR); Adam with ``config``'s lr, betas, weight decay, milestones and gradient clip, for ``config.steps``
    steps of ``config.batch_size`` patches. Returns the per-step losses."""
    sampler = PatchSampler(images, config.patch_size, model.scale, config.flip_rotate, seed=config.seed)
    optimizer, scheduler = config.optimizer(model.parameters())
    model.train()
    losses: list[float] = []
    for step in range(config.steps):
        hr, lr = sampler.sample(config.batch_size)
        loss = F.l1_loss(model(quantize(lr)), hr)
        if not torch.isfinite(loss):
            raise GraftkitError(f"the upscaler's loss became non-finite at step {step + 1}; lower the lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, losses[-1])
    model.eval()
    return losses


@torch.inference_mode()
def sr_restore(model: ConvUpscaler, hr: Tensor) -> Tensor:
    """The baseline's restore of an HR batch (sides divisible by the scale): the 8-bit MATLAB-bicubic LR
    upscaled by ``model``, rounded to 8 bits."""
    hr = modcrop(hr, model.scale)
    lr, _ = bicubic_roundtrip(hr, model.scale)
    return quantize(model(lr))
