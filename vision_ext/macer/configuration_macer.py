"""Hyper-parameters of MACER and of Cohen et al.'s Gaussian-augmentation baseline, validated on creation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from graftkit.errors import GraftkitError, check_int, check_number

Objective = Literal["macer", "gaussian"]


@dataclass
class MacerConfig:
    """Training objective for a smoothed classifier.

    - ``objective``: ``"macer"`` (Zhai et al. 2020) or ``"gaussian"`` (Cohen et al. 2019: cross-entropy on
      noisy copies). Both draw ``k`` Gaussian copies x + δ, δ ~ N(0, σ²I), of every input, so a comparison
      spends the same forward/backward compute.
    - ``sigma``: noise level σ (the same σ is used to certify).
    - ``k``: noise samples per input (paper: 16).
    - ``lbd``: λ, weight of the robustness loss (paper, Cifar-10: 12 for σ ∈ {0.25, 0.5}, 4 for σ = 1).
    - ``beta``: β, inverse temperature of the softmax in the robustness term (paper: 16).
    - ``gamma``: γ, hinge on the certified-radius surrogate ξ (paper: 8).
    - ``warmup_epochs``: MACER only: λ = 0 (the soft-smoothed cross-entropy alone) for this many first epochs
      (not in the paper, which starts with λ on: 0 keeps the paper's schedule).
    """

    objective: Objective = "macer"
    sigma: float = 0.25
    k: int = 16
    lbd: float = 12.0
    beta: float = 16.0
    gamma: float = 8.0
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        if self.objective not in ("macer", "gaussian"):
            raise GraftkitError(f"objective must be 'macer' or 'gaussian', got {self.objective!r}")
        check_sigma(self.sigma)
        check_int("k (noise samples per input)", self.k)
        check_number("lbd", self.lbd)
        check_number("gamma", self.gamma)
        check_int("warmup_epochs", self.warmup_epochs, minimum=0)
        check_number("beta (inverse temperature)", self.beta, strict=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def at_epoch(self, epoch: int) -> MacerConfig:
        """The objective of (1-based) ``epoch``: λ = 0 during the warm-up."""
        return replace(self, lbd=0.0) if epoch <= self.warmup_epochs else self


def check_sigma(sigma: float) -> None:
    """σ must be a finite positive number: σ ≤ 0 would certify nothing and NaN silently poisons training."""
    check_number("sigma (noise level)", sigma, strict=True)
