"""TD — transferred discrepancy between two representations (Feng et al. 2020), with the baselines it is
compared with (linear CKA, mean CCA, SVCCA, PWCCA), all streamed from float64 sufficient statistics.

    from vision_ext.td import transferred_discrepancy, linear_cka
    result = transferred_discrepancy(features_a, features_b, labels)   # TDResult
    result.normalized, result.disagreement, result.linear_cka, result.mean_cca

See :mod:`vision_ext.td.discrepancy` for the definition, the closed form and the choices made.
"""

from vision_ext.td.discrepancy import (
    DEFAULT_RIDGE,
    ClosedFormTD,
    LinearHead,
    TDResult,
    TDWarning,
    expected_transferred_discrepancy,
    least_squares_heads,
    model_discrepancy,
    td_from_statistics,
    transferred_discrepancy,
)
from vision_ext.td.similarity import (
    canonical_correlations,
    canonical_correlations_from_statistics,
    linear_cka,
    linear_cka_from_statistics,
    mean_cca,
    pwcca,
    pwcca_from_statistics,
    svcca,
)
from vision_ext.td.statistics import RepresentationStatistics, statistics_of

__all__ = [
    "DEFAULT_RIDGE", "ClosedFormTD", "LinearHead", "RepresentationStatistics", "TDResult", "TDWarning",
    "canonical_correlations", "canonical_correlations_from_statistics", "expected_transferred_discrepancy",
    "least_squares_heads", "linear_cka", "linear_cka_from_statistics", "mean_cca", "model_discrepancy",
    "pwcca", "pwcca_from_statistics", "statistics_of", "svcca", "td_from_statistics", "transferred_discrepancy",
]
