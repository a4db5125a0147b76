"""The macer-vs-gaussian experiment's plumbing at toy size, and its verdict rule."""

import pytest
import torch
from torch.nn import functional as F

import graftkit.experiments.macer as macer
from graftkit.experiments import protocol
from graftkit.experiments.macer import (
    Budget,
    _macer_ahead_at_every_sigma,
    arm_configs,
    compare,
    gates,
    phase_settings,
    pick_lambda,
    radius_cap,
    summarize,
    train_arms,
    validation_split,
)
from graftkit.registry import load_all
from vision_ext.macer import TrainSettings, macer_loss


def test_compare_and_summarize_at_toy_size(monkeypatch):
    import vision_ext.macer.data as data

    full_split = data.digits_split
    monkeypatch.setattr(data, "digits_split", lambda split: tuple(t[:128] for t in full_split(split)))
    budget = Budget(epochs=2, warmup_epochs=1, k=2, test_stride=50, n0=5, n=20, batch_size=64)
    stages = []
    results = compare(budget, [3, 4], {0.5: 12.0}, progress=stages.append)
    assert set(results) == {(0.5, "cohen"), (0.5, "gaussian"), (0.5, "macer")}
    # per seed: the warm-up, then each arm trained and certified
    assert len(stages) == 2 * 7 and stages[0] == "σ=0.5 seed 1/2: warm-up, 1 epochs"
    assert stages[1] == "σ=0.5 seed 1/2: cohen, 1 epochs" and stages[-1].startswith("σ=0.5 seed 2/2: macer: certify")
    assert all(len(runs) == 2 and len(runs[0]["rows"]) == 3 for runs in results.values())
    metrics, table = summarize(results, [3, 4], {0.5: 12.0})
    assert {"acr_macer_sigma0.5", "acr_gaussian_sigma0.5", "acr_cohen_sigma0.5", "at_cap_cohen_sigma0.5",
            "clean_accuracy_macer_sigma0.5", "seconds_per_epoch_macer_sigma0.5", "acr_macer_sigma0.5_seed3",
            "acr_cohen_sigma0.5_seed4", "macer_minus_cohen_ci_low_sigma0.5", "macer_minus_cohen_ci_high_sigma0.5",
            "seeds_macer_ahead_sigma0.5"} <= set(metrics)
    gains = [metrics[f"acr_macer_sigma0.5_seed{s}"] - metrics[f"acr_cohen_sigma0.5_seed{s}"] for s in (3, 4)]
    assert metrics["macer_minus_cohen_mean_sigma0.5"] == pytest.approx(sum(gains) / 2)
    assert metrics["macer_minus_cohen_ci_low_sigma0.5"] == pytest.approx(min(gains))  # 2 seeds: spans both
    assert metrics["seeds_macer_ahead_sigma0.5"] == sum(g > 0 for g in gains)
    assert [row["method"] for row in table] == ["cohen", "gaussian", "macer"]
    assert [row["λ"] for row in table] == ["", "", 12.0]
    assert [row["noise copies per image per step"] for row in table] == [1, 2, 2]
    assert all(0 <= row["share at radius cap"] <= 1 for row in table)
    assert all(0 <= row["cert. acc. r=0.0"] <= 1 for row in table)


def _judged_metrics(low25=0.01, low50=0.01, clean=0.5, at_cap=0.05):
    metrics = {f"macer_minus_cohen_ci_low_sigma{s}": low for s, low in ((0.25, low25), (0.5, low50))}
    for arm in ("cohen", "macer"):
        for s in (0.25, 0.5):
            metrics |= {f"clean_accuracy_{arm}_sigma{s}": clean, f"at_cap_{arm}_sigma{s}": at_cap}
    return metrics | protocol.gate_metrics(gates(metrics))


def test_verdict_needs_the_paired_interval_above_zero_at_both_sigmas():
    verdict = load_all()["macer-vs-gaussian"].verdict
    assert verdict(_judged_metrics()) is True
    assert verdict(_judged_metrics(low50=0.0)) is False  # the interval touches 0
    assert verdict(_judged_metrics(low25=-0.02)) is False
    assert _macer_ahead_at_every_sigma({"macer_minus_cohen_ci_low_sigma0.25": 0.1}) is None
    # the k-copy arm's ACR does not enter the verdict
    assert verdict(_judged_metrics() | {"acr_gaussian_sigma0.25": 9.0, "acr_gaussian_sigma0.5": 9.0}) is True


@pytest.mark.parametrize("change, failed", [({"clean": 0.19}, "above_chance"), ({"clean": 0.2}, None),
                                            ({"at_cap": 0.26}, "below_cap"), ({"at_cap": 0.25}, None)])
def test_gates_leave_the_verdict_undecided(change, failed):
    metrics = _judged_metrics(**change)
    assert metrics["failed_gate"] == failed
    assert load_all()["macer-vs-gaussian"].verdict(metrics) is (None if failed else True)


def test_one_arm_below_chance_at_one_sigma_fails_the_gate():
    metrics = _judged_metrics()
    metrics["clean_accuracy_macer_sigma0.5"] = 0.1
    checks = gates(metrics)
    assert [g.passed for g in checks] == [False, True]
    assert "macer 0.100" in checks[0].detail


def test_radius_cap_is_sigma_times_the_normal_quantile_of_alpha_to_the_one_over_n():
    budget = Budget(epochs=1, warmup_epochs=0, k=1, test_stride=1, n0=10, n=500)
    assert radius_cap(0.25, budget) == pytest.approx(0.5503, abs=1e-3)  # the 0.55 at n = 500
    assert radius_cap(0.5, budget) == pytest.approx(2 * radius_cap(0.25, budget))


def test_the_two_phases_follow_the_papers_step_schedule_over_all_epochs():
    budget = Budget(epochs=16, warmup_epochs=8, k=2, test_stride=1, n0=1, n=1)
    assert budget.milestones == [7, 15]  # 200/440 and 400/440 of 16 epochs
    warmup, second = phase_settings(budget, seed=3)
    whole = TrainSettings(epochs=16, lr=budget.lr, milestones=budget.milestones)
    lrs = [warmup.lr_at(e) for e in range(1, 9)] + [second.lr_at(e) for e in range(1, 9)]
    assert lrs == pytest.approx([whole.lr_at(e) for e in range(1, 17)])
    assert (warmup.epochs, second.epochs) == (8, 8) and warmup.seed != second.seed


def test_every_arm_continues_from_the_same_warm_up():
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(64, 1, 8, 8, generator=g), torch.arange(64) % 10
    budget = Budget(epochs=2, warmup_epochs=1, k=2, test_stride=1, n0=1, n=1, batch_size=32)
    configs = arm_configs(0.25, budget, lbd=4.0)
    trained = train_arms(0.25, 0, budget, (images, labels), {"a": configs["macer"], "b": configs["macer"],
                                                             "cohen": configs["cohen"]})
    same = [torch.equal(p, q) for p, q in zip(trained["a"][0].parameters(), trained["b"][0].parameters())]
    assert all(same)  # same checkpoint, same second-phase data order and noise
    assert not all(torch.equal(p, q) for p, q in zip(trained["a"][0].parameters(),
                                                     trained["cohen"][0].parameters()))
    assert configs["cohen"].k == 1 and configs["gaussian"].k == configs["macer"].k == 2
    assert configs["macer"].warmup_epochs == 0  # the shared warm-up replaces MACER's own λ = 0 epochs
    assert (configs["macer"].lbd, configs["macer"].beta, configs["macer"].gamma) == (4.0, 16.0, 8.0)


def _reference_formulation(logits, targets, sigma, lbd, beta, gamma):
    """MACER written the way the reference code (RuntianZ/macer, macer.py) computes it: Normal.icdf, the
    hinge as |Φ⁻¹(p2) − Φ⁻¹(p1)| ≤ γ, and the term re-evaluated on the kept inputs."""
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=logits.dtype), torch.tensor(1.0, dtype=logits.dtype))
    mean_softmax = F.softmax(logits, dim=2).mean(1)
    classification = F.nll_loss(torch.log(mean_softmax + 1e-10), targets, reduction="sum")
    scores, classes = F.softmax(beta * logits, dim=2).mean(1).topk(2)
    correct = classes[:, 0] == targets
    p1, p2 = scores[correct, 0], scores[correct, 1]
    gap = normal.icdf(p2) - normal.icdf(p1)
    kept = ~torch.isnan(gap) & ~torch.isinf(gap) & (gap.abs() <= gamma)
    robustness = (normal.icdf(p2[kept]) - normal.icdf(p1[kept]) + gamma).sum() * sigma / 2
    return (classification + lbd * robustness) / len(logits)


@pytest.mark.parametrize("scale, sigma, lbd, beta, gamma", [(1.5, 0.25, 12.0, 2.0, 8.0), (0.4, 0.5, 0.5, 16.0, 8.0),
                                                             (1.0, 0.25, 4.0, 4.0, 1.0)])
def test_the_macer_arm_is_the_reference_loss_value_and_gradient(scale, sigma, lbd, beta, gamma):
    torch.manual_seed(4)
    logits = (torch.randn(12, 8, 10, dtype=torch.float64) * scale)
    targets = torch.randint(0, 10, (12,))
    targets[:6] = logits.mean(1)[:6].argmax(1)  # half correctly classified: l_R is exercised
    ours, theirs = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    terms = macer_loss(ours, targets, sigma, lbd, beta, gamma)
    expected = _reference_formulation(theirs, targets, sigma, lbd, beta, gamma)
    terms.loss.backward()
    expected.backward()
    assert terms.robustness > 0
    torch.testing.assert_close(terms.loss, expected, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-9)


def test_validation_split_is_cut_from_the_training_images_only():
    from vision_ext.macer.data import digits_split

    (fit_x, fit_y), (held_x, held_y) = validation_split()
    train_x, _ = digits_split("train")
    assert (len(fit_y), len(held_y)) == (1000, 347)
    rows = {tuple(x.flatten().tolist()) for x in train_x}
    assert all(tuple(x.flatten().tolist()) in rows for x in held_x[:50])  # never a test image
    assert not {tuple(x.flatten().tolist()) for x in fit_x} & {tuple(x.flatten().tolist()) for x in held_x}


def test_pick_lambda_takes_the_best_validation_acr_and_the_smaller_lambda_on_a_tie(monkeypatch):
    budget = Budget(epochs=2, warmup_epochs=1, k=2, test_stride=1, n0=5, n=20)
    acr_by_lambda = {1.0: 0.2, 4.0: 0.3, 12.0: 0.3}
    trained_with = []

    def fake_train_arms(sigma, seed, budget, train, arms, progress=None):
        trained_with.append((sigma, seed, len(train[1])))
        return {lbd: (config, 0.0) for lbd, config in arms.items()}

    monkeypatch.setattr(macer, "train_arms", fake_train_arms)
    monkeypatch.setattr(macer, "certify", lambda config, *args: {"acr": acr_by_lambda[config.lbd]})
    best, scores = pick_lambda(budget, 0.5, seed=1000)
    assert best == 4.0 and scores == acr_by_lambda
    assert trained_with == [(0.5, 1000, 1000)]  # the validation split's training images, the tuning seed


@pytest.mark.slow
def test_pick_lambda_trains_and_certifies_on_the_validation_split(monkeypatch):
    (fit_x, fit_y), (held_x, held_y) = validation_split()
    monkeypatch.setattr(macer, "validation_split", lambda: ((fit_x[:96], fit_y[:96]), (held_x[:8], held_y[:8])))
    budget = Budget(epochs=2, warmup_epochs=1, k=2, test_stride=1, n0=5, n=20, validation_stride=2)
    best, scores = pick_lambda(budget, 0.25, seed=1000, grid=(1.0, 4.0))
    assert best in (1.0, 4.0) and set(scores) == {1.0, 4.0}
    assert all(0 <= acr <= radius_cap(0.25, budget) for acr in scores.values())
