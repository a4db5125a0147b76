"""The macer-vs-gaussian experiment's plumbing at toy size, and its verdict rule."""

from graftkit.experiments.macer import Budget, _macer_wins, compare, summarize


def test_compare_and_summarize_at_toy_size():
    budget = Budget(epochs=1, k=2, test_stride=150, n0=5, n=20, seeds=2, batch_size=64)
    results = compare(budget, base_seed=0, sigmas=(0.5,))
    assert set(results) == {(0.5, "gaussian"), (0.5, "macer")}
    assert all(len(runs) == 2 and len(runs[0]["rows"]) == 3 for runs in results.values())
    metrics, table = summarize(results)
    assert {"acr_macer_sigma0.5", "acr_gaussian_sigma0.5", "seconds_per_epoch_macer_sigma0.5"} <= set(metrics)
    assert [row["method"] for row in table] == ["gaussian", "macer"]
    assert all(0 <= row["cert. acc. r=0.0"] <= 1 for row in table)


def test_verdict_needs_macer_ahead_at_both_sigmas():
    base = {"acr_gaussian_sigma0.25": 0.40, "acr_gaussian_sigma0.5": 0.30}
    assert _macer_wins({**base, "acr_macer_sigma0.25": 0.45, "acr_macer_sigma0.5": 0.31}) is True
    assert _macer_wins({**base, "acr_macer_sigma0.25": 0.45, "acr_macer_sigma0.5": 0.30}) is False
    assert _macer_wins(base) is None
