"""The macer-vs-gaussian experiment's plumbing at toy size, and its verdict rule."""

import pytest
import torch
from torch.nn import functional as F

from graftkit.experiments.macer import (
    Budget,
    _macer_wins,
    arm_configs,
    compare,
    phase_settings,
    radius_cap,
    summarize,
    train_arms,
    validation_grid,
    validation_split,
)
from vision_ext.macer import TrainSettings, macer_loss


def test_compare_and_summarize_at_toy_size(monkeypatch):
    import vision_ext.macer.data as data

    full_split = data.digits_split
    monkeypatch.setattr(data, "digits_split", lambda split: tuple(t[:128] for t in full_split(split)))
    budget = Budget(epochs=2, warmup_epochs=1, k=2, test_stride=50, n0=5, n=20, seeds=2, batch_size=64)
    stages = []
    results = compare(budget, base_seed=0, sigmas=(0.5,), progress=stages.append)
    assert set(results) == {(0.5, "cohen"), (0.5, "gaussian"), (0.5, "macer")}
    # per seed: the warm-up, then each arm trained and certified
    assert len(stages) == 2 * 7 and stages[0] == "σ=0.5 seed 1/2: warm-up, 1 epochs"
    assert stages[1] == "σ=0.5 seed 1/2: cohen, 1 epochs" and stages[-1].startswith("σ=0.5 seed 2/2: macer: certify")
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
    configs = arm_configs(0.25, budget)
    trained = train_arms(0.25, 0, budget, (images, labels), {"a": configs["macer"], "b": configs["macer"],
                                                             "cohen": configs["cohen"]})
    same = [torch.equal(p, q) for p, q in zip(trained["a"][0].parameters(), trained["b"][0].parameters())]
    assert all(same)  # same checkpoint, same second-phase data order and noise
    assert not all(torch.equal(p, q) for p, q in zip(trained["a"][0].parameters(),
                                                     trained["cohen"][0].parameters()))
    assert configs["cohen"].k == 1 and configs["gaussian"].k == configs["macer"].k == 2
    assert configs["macer"].warmup_epochs == 0  # the shared warm-up replaces MACER's own λ = 0 epochs


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


@pytest.mark.slow
def test_validation_grid_reports_cohen_and_every_setting(monkeypatch):
    import graftkit.experiments.macer as macer

    (fit_x, fit_y), (held_x, held_y) = validation_split()
    monkeypatch.setattr(macer, "validation_split", lambda: ((fit_x[:96], fit_y[:96]), (held_x[:4], held_y[:4])))
    budget = Budget(epochs=2, warmup_epochs=1, k=2, test_stride=1, n0=5, n=20)
    rows = validation_grid(budget, 0.25, [(1.0, 4.0), (4.0, 16.0)], seeds=2)
    assert [r["arm"] for r in rows] == ["cohen", "macer λ=1.0 β=4.0", "macer λ=4.0 β=16.0"]
    assert all(len(r["per seed"]) == 2 and 0 <= r["validation ACR"] <= radius_cap(0.25, budget) for r in rows)
