"""Regularised inverses of covariance matrices through their eigendecomposition (float64)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: eigenvalues below RANK_TOL × the largest one count as zero (numerical rank, pseudo-inverse cut-off).
RANK_TOL = 1e-10


@dataclass
class Spectrum:
    """C = U diag(λ) Uᵀ with the ridge ``shift`` = ridge × mean eigenvalue (= ridge × mean feature variance).

    A relative ridge keeps everything built on it invariant to orthogonal maps and global rescaling of the
    features. With ``shift == 0`` eigenvalues under the cut-off are dropped: the Moore–Penrose pseudo-inverse.
    """

    eigenvalues: torch.Tensor  # ascending, clamped at 0
    eigenvectors: torch.Tensor
    shift: float

    @classmethod
    def of(cls, covariance: torch.Tensor, ridge: float) -> Spectrum:
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        eigenvalues = eigenvalues.clamp_min(0)
        return cls(eigenvalues, eigenvectors, ridge * float(eigenvalues.mean()))

    @property
    def dim(self) -> int:
        return self.eigenvalues.numel()

    @property
    def rank(self) -> int:
        """Numerical rank of the covariance (of the centred features)."""
        return int((self.eigenvalues > RANK_TOL * float(self.eigenvalues.max())).sum())

    def _kept(self, top: int | None = None) -> torch.Tensor:
        keep = self.eigenvalues + self.shift > RANK_TOL * float(self.eigenvalues.max())
        if top is not None:
            keep &= torch.arange(self.dim, device=keep.device) >= self.dim - top
        return keep

    def _apply(self, power: float, top: int | None = None) -> torch.Tensor:
        keep = self._kept(top)
        scale = torch.zeros_like(self.eigenvalues)
        scale[keep] = (self.eigenvalues[keep] + self.shift) ** power
        return (self.eigenvectors * scale) @ self.eigenvectors.T

    def inverse(self) -> torch.Tensor:
        """(C + shift·I)⁻¹, or the pseudo-inverse C⁺ when shift is 0."""
        return self._apply(-1.0)

    def inverse_sqrt(self, top: int | None = None) -> torch.Tensor:
        """(C + shift·I)^(-1/2) (pseudo-inverse square root when shift is 0), restricted to the ``top``
        leading eigen-directions when given (SVCCA's truncation)."""
        return self._apply(-0.5, top)

    def sqrt(self) -> torch.Tensor:
        """(C + shift·I)^(1/2) on the kept eigen-directions."""
        return self._apply(0.5)

    def directions_for_variance(self, fraction: float) -> int:
        """The fewest leading eigen-directions that explain ``fraction`` of the total variance."""
        descending = self.eigenvalues.flip(0)
        total = float(descending.sum())
        if total == 0:
            return 0
        cumulative = torch.cumsum(descending, 0) / total
        return min(int((cumulative < fraction - 1e-12).sum()) + 1, self.dim)
