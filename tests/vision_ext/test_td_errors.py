"""TD's bad-input handling: every mistake raises a GraftkitError naming it, or warns where TD is still defined."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graftkit.errors import GraftkitError
from vision_ext.td import (
    RepresentationStatistics,
    TDWarning,
    linear_cka,
    svcca,
    transferred_discrepancy,
)


def features(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_mismatched_sample_counts_are_named():
    with pytest.raises(GraftkitError, match="features_a has 10 samples but features_b has 9"):
        transferred_discrepancy(features(10, 2), features(9, 2), torch.zeros(10, dtype=torch.long))
    with pytest.raises(GraftkitError, match="targets have 8 samples but the features have 10"):
        transferred_discrepancy(features(10, 2), features(10, 2), torch.zeros(8, dtype=torch.long))
    with pytest.raises(GraftkitError, match="features_a has 10 samples"):
        linear_cka(features(10, 2), features(9, 2))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_and_targets_are_refused(bad):
    a = features(20, 3)
    a[4, 1] = bad
    with pytest.raises(GraftkitError, match="features_a contains 1 NaN/inf"):
        transferred_discrepancy(a, features(20, 3), torch.zeros(20, dtype=torch.long))
    y = torch.randn(20, 2)
    y[0, 0] = bad
    with pytest.raises(GraftkitError, match="targets contains 1 NaN/inf"):
        transferred_discrepancy(features(20, 3), features(20, 3), y)


def test_fewer_samples_than_features_warns_and_rank_deficiency_warns_with_the_ridge():
    with pytest.warns(TDWarning, match="only 8 samples for 12 features"):
        transferred_discrepancy(features(8, 12), features(8, 2), torch.randn(8))
    a = features(50, 4)
    dup = torch.cat([a, a[:, :1], torch.ones(50, 1)], 1)  # a duplicated and a constant feature
    with pytest.warns(TDWarning, match=r"rank deficient \(numerical rank 4 of 6.*ridge 1e-06"):
        result = transferred_discrepancy(a, dup, torch.randn(50, 2))
    assert result.normalized < 1e-6  # same span: the minimum-norm head is the same predictor
    with pytest.warns(TDWarning, match="pseudo-inverse"):
        transferred_discrepancy(a, dup, torch.randn(50, 2), ridge=0.0)


def test_bad_targets_and_options_are_named():
    a, b = features(10, 2), features(10, 2)
    with pytest.raises(GraftkitError, match="class labels must be >= 0"):
        transferred_discrepancy(a, b, torch.tensor([-1] + [0] * 9))
    with pytest.raises(GraftkitError, match="label 4 is out of range for num_classes=3"):
        transferred_discrepancy(a, b, torch.tensor([4] + [0] * 9), num_classes=3)
    with pytest.raises(GraftkitError, match="regression targets must be"):
        transferred_discrepancy(a, b, torch.zeros(10, 2, 2))
    with pytest.raises(GraftkitError, match="ridge must be a finite number >= 0"):
        transferred_discrepancy(a, b, torch.randn(10), ridge=-1.0)
    with pytest.raises(GraftkitError, match="batch_size must be an integer >= 1"):
        transferred_discrepancy(a, b, torch.randn(10), batch_size=0)
    with pytest.raises(GraftkitError, match="must be a torch tensor or a numpy array, got list"):
        transferred_discrepancy([[1.0]] * 10, b, torch.randn(10))
    with pytest.raises(GraftkitError, match="need at least 2 samples"):
        transferred_discrepancy(a[:1], b[:1], torch.randn(1))
    with pytest.raises(GraftkitError, match="variance must be in"):
        svcca(a, b, variance=1.5)


def test_inconsistent_batches_are_named():
    stats = RepresentationStatistics()
    stats.update(features(5, 2), features(5, 3), torch.randn(5, 2))
    with pytest.raises(GraftkitError, match="this batch has 2 and 4 features but earlier batches had 2 and 3"):
        stats.update(features(5, 2), features(5, 4), torch.randn(5, 2))
    with pytest.raises(GraftkitError, match="labels targets but earlier batches had regression"):
        stats.update(features(5, 2), features(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(GraftkitError, match="3 target columns but earlier batches had 2"):
        stats.update(features(5, 2), features(5, 3), np.zeros((5, 3)))
    with pytest.raises(GraftkitError, match="all_reduce needs an initialised torch.distributed"):
        stats.all_reduce()
    with pytest.raises(GraftkitError, match="TD needs targets"):
        transferred_discrepancy(features(5, 2), features(5, 2), None)
