"""The macer-vs-gaussian experiment's plumbing at toy size, and its verdict rule."""

import pytest

from graftkit.experiments.macer import Budget, _macer_wins, compare, radius_cap, summarize


def test_compare_and_summarize_at_toy_size():
    budget = Budget(epochs=1, k=2, test_stride=150, n0=5, n=20, seeds=2, batch_size=64)
    stages = []
    results = compare(budget, base_seed=0, sigmas=(0.5,), progress=lambda *a: stages.append(a))
    assert set(results) == {(0.5, "cohen"), (0.5, "gaussian"), (0.5, "macer")}
    assert len(stages) == 6 and stages[0][0].startswith("σ=0.5 cohen") and stages[0][1:] == (1, 2)
    assert all(len(runs) == 2 and len(runs[0]["rows"]) == 3 for runs in results.values())
    metrics, table = summarize(results)
    assert {"acr_macer_sigma0.5", "acr_gaussian_sigma0.5", "acr_cohen_sigma0.5", "at_cap_cohen_sigma0.5",
            "seconds_per_epoch_macer_sigma0.5"} <= set(metrics)
    assert [row["method"] for row in table] == ["cohen", "gaussian", "macer"]
    assert [row["noise copies per image per step"] for row in table] == [1, 2, 2]
    assert all(0 <= row["share at radius cap"] <= 1 for row in table)
    assert all(0 <= row["cert. acc. r=0.0"] <= 1 for row in table)


def test_verdict_needs_macer_ahead_of_the_papers_one_sample_baseline_at_both_sigmas():
    base = {"acr_cohen_sigma0.25": 0.40, "acr_cohen_sigma0.5": 0.30,
            "acr_gaussian_sigma0.25": 0.90, "acr_gaussian_sigma0.5": 0.90}  # the k-copy arm is not judged
    assert _macer_wins({**base, "acr_macer_sigma0.25": 0.45, "acr_macer_sigma0.5": 0.31}) is True
    assert _macer_wins({**base, "acr_macer_sigma0.25": 0.45, "acr_macer_sigma0.5": 0.30}) is False
    assert _macer_wins(base) is None


def test_radius_cap_is_sigma_times_the_normal_quantile_of_alpha_to_the_one_over_n():
    budget = Budget(epochs=1, k=1, test_stride=1, n0=10, n=500)
    assert radius_cap(0.25, budget) == pytest.approx(0.5503, abs=1e-3)  # the 0.55 at n = 500
    assert radius_cap(0.5, budget) == pytest.approx(2 * radius_cap(0.25, budget))
