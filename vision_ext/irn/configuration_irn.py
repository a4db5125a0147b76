"""IRN configuration: architecture and loss weights, validated on construction.

Defaults follow pkuxmq/Invertible-Image-Rescaling (``options/train/train_IRN_x{2,4}.yml``): one Haar
transform + 8 coupling blocks per ×2 step, DenseBlock subnets with 32 growth channels, clamp 1, loss
weights λ_fit = 4 (×2) / 16 (×4), λ_ce = 1, λ_rec = 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from graftkit.errors import GraftkitError, check_int, check_number


def _default_guide_weight(scale: int) -> float:
    # The reference's lambda_fit_forw: 4 in train_IRN_x2.yml, 16 in train_IRN_x4.yml (and x8: 64 = scale²).
    return float(scale * scale)


@dataclass
class IRNConfig:
    """Architecture and loss settings of an :class:`~vision_ext.irn.IRN`.

    Args:
        scale: downscaling factor, a power of two (2, 4, 8): one Haar step per factor 2.
        blocks_per_step: invertible coupling blocks after each Haar transform (reference: 8).
        growth_channels: channels of each DenseBlock conv (reference ``gc``: 32).
        clamp: bound of the coupling log-scale, ``clamp * (2·sigmoid(h) − 1)`` (reference: 1).
        in_channels: image channels (3, RGB).
        guide_weight: λ_fit, weight of the LR guidance loss ``Σ(y_LR − bicubic(x))²`` (default scale²).
        distribution_weight: λ_ce, weight of ``Σ z²`` (reference: 1).
        reconstruction_weight: λ_rec, weight of the Charbonnier reconstruction loss (reference: 1).
        charbonnier_eps: ε of ``sqrt(d² + ε)`` (reference: 1e-6).
    """

    scale: int = 4
    blocks_per_step: int = 8
    growth_channels: int = 32
    clamp: float = 1.0
    in_channels: int = 3
    guide_weight: float | None = None
    distribution_weight: float = 1.0
    reconstruction_weight: float = 1.0
    charbonnier_eps: float = 1e-6

    def __post_init__(self) -> None:
        if not isinstance(self.scale, int) or self.scale < 2 or self.scale & (self.scale - 1):
            raise GraftkitError(f"scale must be a power of two >= 2 (2, 4, 8), got {self.scale!r}")
        for name in ("blocks_per_step", "growth_channels", "in_channels"):
            check_int(name, getattr(self, name))
        check_number("clamp", self.clamp, strict=True)
        if self.guide_weight is None:
            self.guide_weight = _default_guide_weight(self.scale)
        for name in ("guide_weight", "distribution_weight", "reconstruction_weight", "charbonnier_eps"):
            check_number(name, getattr(self, name))

    @property
    def steps(self) -> int:
        """Number of ×2 Haar steps: log2(scale)."""
        return self.scale.bit_length() - 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IRNConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise GraftkitError(f"unknown IRN config keys: {', '.join(unknown)}")
        return cls(**data)
