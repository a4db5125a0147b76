"""The representation-similarity baselines TD is compared with: linear CKA, CCA (mean ρ), SVCCA and PWCCA.

All are computed from the centred covariances of :class:`~vision_ext.td.statistics.RepresentationStatistics`
(streamed, no N×N Gram matrix):

* linear CKA (Kornblith et al. 2019): CKA(A, B) = ‖C_AB‖²_F / (‖C_AA‖_F ‖C_BB‖_F), which equals the Gram form
  HSIC(K, L) / √(HSIC(K, K) HSIC(L, L)) with K = A Aᵀ, L = B Bᵀ. In [0, 1]; 1 for identical features;
  invariant to orthogonal maps and isotropic scaling.
* canonical correlations ρ_1 ≥ … ≥ ρ_k: the singular values of C_AA^(-1/2) C_AB C_BB^(-1/2), k = min of
  the two ranks; mean CCA = mean ρ_i (Raghu et al. 2017's ρ̄). Invariant to any invertible linear map.
* SVCCA (Raghu et al. 2017): CCA after keeping, in each representation, the fewest principal directions that
  explain ``variance`` (default 99 %) of its variance.
* PWCCA (Morcos et al. 2018): the canonical correlations averaged with weights α_i = Σ_j |⟨h_i, x_j⟩|, h_i the
  i-th canonical variate (unit norm) and x_j the j-th centred feature of the representation with fewer
  features (lower rank), so the canonical directions that carry more of that representation count more.
  Since h_i = A W_a[:, i] with W_a = C_AA^(-1/2) U, the inner products are N·(Uᵀ C_AA^(1/2))_ij: PWCCA comes
  from the covariances too. (The reference code adds the feature means back to the variates before its QR;
  here the variates are centred, as CCA defines them.)
"""

from __future__ import annotations

import torch

from graftkit.errors import GraftkitError
from vision_ext.td.linalg import Spectrum
from vision_ext.td.statistics import ArrayLike, RepresentationStatistics, statistics_of


def linear_cka_from_statistics(stats: RepresentationStatistics) -> float:
    cov = stats.covariances()
    denominator = float(torch.linalg.norm(cov["aa"]) * torch.linalg.norm(cov["bb"]))
    return float(torch.linalg.norm(cov["ab"]) ** 2) / denominator if denominator > 0 else float("nan")


def _whitened_cross_covariance(stats: RepresentationStatistics, ridge: float, variance: float | None = None,
                               ) -> tuple[Spectrum, Spectrum, torch.Tensor, int]:
    """CCA as one SVD: the spectra of C_AA and C_BB, C_AA^(-1/2) C_AB C_BB^(-1/2) and the number of canonical
    pairs; ``variance`` keeps SVCCA's leading principal directions only."""
    cov = stats.covariances()
    spec_a, spec_b = Spectrum.of(cov["aa"], ridge), Spectrum.of(cov["bb"], ridge)
    top_a = top_b = None
    if variance is not None:
        top_a, top_b = spec_a.directions_for_variance(variance), spec_b.directions_for_variance(variance)
    k = min(spec_a.rank if top_a is None else min(top_a, spec_a.rank),
            spec_b.rank if top_b is None else min(top_b, spec_b.rank))
    return spec_a, spec_b, spec_a.inverse_sqrt(top_a) @ cov["ab"] @ spec_b.inverse_sqrt(top_b), k


def canonical_correlations_from_statistics(stats: RepresentationStatistics, *, ridge: float = 0.0,
                                           variance: float | None = None) -> torch.Tensor:
    """Canonical correlations, descending; ``variance`` keeps SVCCA's leading principal directions only."""
    _, _, whitened, k = _whitened_cross_covariance(stats, ridge, variance)
    return torch.linalg.svdvals(whitened)[:k].clamp(0, 1)


def pwcca_from_statistics(stats: RepresentationStatistics, *, ridge: float = 0.0) -> float:
    spec_a, spec_b, whitened, k = _whitened_cross_covariance(stats, ridge)
    if k == 0:
        return float("nan")
    u, rho, vh = torch.linalg.svd(whitened)
    # |⟨h_i, x_j⟩| ∝ |(Uᵀ C^(1/2))_ij| on the side with fewer dimensions (the reference code's choice)
    loadings = u[:, :k].T @ spec_a.sqrt() if spec_a.rank <= spec_b.rank else vh[:k] @ spec_b.sqrt()
    alpha = loadings.abs().sum(1)
    return float((alpha * rho[:k].clamp(0, 1)).sum() / alpha.sum())


def linear_cka(features_a: ArrayLike, features_b: ArrayLike, *, batch_size: int = 8192) -> float:
    """Linear CKA between two representations (N, p) and (N, q) of the same N inputs."""
    return linear_cka_from_statistics(statistics_of(features_a, features_b, batch_size=batch_size))


def canonical_correlations(features_a: ArrayLike, features_b: ArrayLike, *, ridge: float = 0.0,
                           batch_size: int = 8192) -> torch.Tensor:
    """The canonical correlations (float64, descending) of two representations of the same N inputs;
    ``ridge`` (relative to the mean feature variance) regularises the covariances, 0 = pseudo-inverse."""
    stats = statistics_of(features_a, features_b, batch_size=batch_size)
    return canonical_correlations_from_statistics(stats, ridge=ridge)


def mean_cca(features_a: ArrayLike, features_b: ArrayLike, *, ridge: float = 0.0,
             batch_size: int = 8192) -> float:
    """Mean canonical correlation ρ̄ = (1/k) Σ ρ_i (1 for representations with the same span)."""
    return float(canonical_correlations(features_a, features_b, ridge=ridge, batch_size=batch_size).mean())


def svcca(features_a: ArrayLike, features_b: ArrayLike, *, variance: float = 0.99,
          batch_size: int = 8192) -> float:
    """SVCCA: mean canonical correlation after keeping the principal directions that explain ``variance``."""
    if not 0 < variance <= 1:
        raise GraftkitError(f"variance must be in (0, 1], got {variance}")
    stats = statistics_of(features_a, features_b, batch_size=batch_size)
    return float(canonical_correlations_from_statistics(stats, variance=variance).mean())


def pwcca(features_a: ArrayLike, features_b: ArrayLike, *, ridge: float = 0.0, batch_size: int = 8192) -> float:
    """PWCCA: canonical correlations weighted by how much of the smaller representation each accounts for."""
    return pwcca_from_statistics(statistics_of(features_a, features_b, batch_size=batch_size), ridge=ridge)
