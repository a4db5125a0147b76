"""IRN: Invertible Image Rescaling (Xiao et al., ECCV 2020) in plain PyTorch.

``from vision_ext.irn import IRN``: ``IRN(scale=2|4)``; ``forward``/``inverse`` are the raw invertible flow,
``downscale``/``upscale`` the quantized user-facing calls. Training: :mod:`vision_ext.irn.training`.
"""

from vision_ext.irn.configuration_irn import IRNConfig
from vision_ext.irn.modeling_irn import IRN, DenseBlock, HaarTransform, InvBlock, quantize

__all__ = ["IRN", "IRNConfig", "DenseBlock", "HaarTransform", "InvBlock", "quantize"]
