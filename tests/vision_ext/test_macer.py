"""The math of randomized smoothing (Cohen et al.) and of the MACER loss (Zhai et al.)."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import beta as beta_dist
from scipy.stats import norm
from torch import nn

from graftkit.errors import GraftkitError
from vision_ext.macer import (
    ABSTAIN,
    MacerConfig,
    Smooth,
    average_certified_radius,
    certified_accuracy,
    certified_radius,
    clopper_pearson_lower,
    gaussian_augmentation_loss,
    macer_loss,
    noisy_copies,
)
from vision_ext.macer.smoothing import certify_dataset, summarize_certification
from vision_ext.models import LeNet


class Constant(nn.Module):
    """Always predicts ``label``."""

    def __init__(self, label: int, classes: int = 10) -> None:
        super().__init__()
        self.label, self.classes = label, classes

    def forward(self, x):
        return nn.functional.one_hot(torch.full((len(x),), self.label), self.classes).float()


class Threshold(nn.Module):
    """Class 0 when pixel (0, 0, 0) is below ``t`` else class 1: P(class 0 | x + δ) = Φ((t − x₀₀₀)/σ)."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x):
        below = (x[:, 0, 0, 0] < self.t).float()
        return torch.stack([below, 1 - below, torch.zeros_like(below)], dim=1)


@pytest.mark.parametrize("successes, trials, alpha", [(1, 10, 0.05), (50, 100, 0.001), (99_000, 100_000, 0.001),
                                                      (7, 7, 0.01), (3, 1000, 0.2)])
def test_clopper_pearson_is_the_beta_quantile(successes, trials, alpha):
    expected = beta_dist.ppf(alpha, successes, trials - successes + 1)
    assert clopper_pearson_lower(successes, trials, alpha) == pytest.approx(expected, rel=1e-12)


def test_clopper_pearson_closed_forms():
    # all successes: P(Beta(n, 1) <= p) = p^n, so the bound is alpha^(1/n); no success: 0
    assert clopper_pearson_lower(100, 100, 0.001) == pytest.approx(0.001 ** (1 / 100), rel=1e-12)
    assert clopper_pearson_lower(0, 100, 0.001) == 0.0
    with pytest.raises(GraftkitError, match="successes"):
        clopper_pearson_lower(11, 10, 0.01)


def test_radius_formula():
    assert certified_radius(norm.cdf(1.0), 0.5) == pytest.approx(0.5)
    assert certified_radius(0.975, 0.25) == pytest.approx(0.25 * 1.959963984540054)
    assert certified_radius(0.5, 1.0) == 0.0
    assert certified_radius(0.49, 1.0) == 0.0


def test_certify_constant_classifier_gets_the_largest_radius_n_allows():
    smooth = Smooth(Constant(3), 10, sigma=0.5)
    prediction, radius = smooth.certify(torch.zeros(1, 8, 8), n0=10, n=100, alpha=0.001, batch_size=32)
    assert prediction == 3
    assert radius == pytest.approx(0.5 * norm.ppf(0.001 ** (1 / 100)))  # 0.5 · 1.5005


def test_certify_abstains_on_a_coin_flip_and_bounds_a_biased_coin():
    x = torch.zeros(1, 4, 4)
    assert Smooth(Threshold(0.0), 3, sigma=0.5).certify(x, 100, 2000, 0.001, 500) == (ABSTAIN, 0.0)

    sigma, p_true = 0.5, 0.99
    smooth = Smooth(Threshold(sigma * norm.ppf(p_true)), 3, sigma=sigma, seed=7)
    prediction, radius = smooth.certify(x, 100, 5000, 0.001, 700)
    smooth.reseed(7)  # replay the same draws: selection, then estimation
    smooth.sample_counts(x, 100, 700)
    n_a = int(smooth.sample_counts(x, 5000, 700)[0])
    assert prediction == 0
    assert radius == pytest.approx(sigma * norm.ppf(beta_dist.ppf(0.001, n_a, 5000 - n_a + 1)))
    assert 0.8 < radius < sigma * norm.ppf(p_true)


def test_sample_counts_are_batched_seeded_and_complete():
    smooth = Smooth(Threshold(0.1), 3, sigma=1.0, seed=3)
    x = torch.zeros(1, 4, 4)
    counts = smooth.sample_counts(x, 1050, 100)
    assert counts.sum() == 1050 and counts[2] == 0
    smooth.reseed(3)
    assert torch.equal(smooth.sample_counts(x, 1050, 100), counts)
    assert abs(counts[0] / 1050 - norm.cdf(0.1)) < 0.05


@pytest.mark.parametrize("counts, alpha, expected", [((60, 40, 0), 0.05, ABSTAIN), ((62, 38, 0), 0.05, 0),
                                                     ((38, 62, 0), 0.05, 1), ((0, 61, 39), 0.03, ABSTAIN),
                                                     ((0, 61, 39), 0.04, 1)])
def test_predict_uses_the_two_sided_binomial_test(monkeypatch, counts, alpha, expected):
    # two-sided p-values: 60 of 100 → 0.0569, 61 → 0.0352, 62 → 0.0210
    smooth = Smooth(Constant(0, 3), 3, sigma=0.25)
    monkeypatch.setattr(smooth, "sample_counts", lambda *args: torch.tensor(counts))
    assert smooth.predict(torch.zeros(1, 4, 4), n=100, alpha=alpha, batch_size=10) == expected


def test_predict_end_to_end():
    x = torch.zeros(1, 4, 4)
    assert Smooth(Threshold(0.5 * norm.ppf(0.9)), 3, 0.5).predict(x, 1000, 0.001, 256) == 0
    assert Smooth(Threshold(0.0), 3, 0.5).predict(x, 1000, 0.001, 256) == ABSTAIN


def test_certified_accuracy_and_acr():
    radii, correct = [0.0, 0.3, 0.6, 1.2], [False, True, True, False]
    assert certified_accuracy(radii, correct, [0.0, 0.25, 0.5, 0.75]) == [0.5, 0.5, 0.25, 0.0]
    assert average_certified_radius(radii, correct) == pytest.approx(0.9 / 4)


def test_certify_dataset_rows_do_not_depend_on_order():
    images, labels = torch.zeros(3, 1, 4, 4), torch.tensor([0, 1, 0])
    images[1, 0, 0, 0] = 1.0  # pushes pixel (0,0,0) above the threshold: class 1
    smooth = Smooth(Threshold(0.3), 3, sigma=0.5, seed=11)
    rows = certify_dataset(smooth, images, labels, n0=20, n=400, alpha=0.01, batch_size=128)
    assert [r["predict"] for r in rows] == [0, 1, 0] and all(r["correct"] for r in rows)
    alone = certify_dataset(Smooth(Threshold(0.3), 3, 0.5, seed=12), images[1:], labels[1:], 20, 400, 0.01, 128)
    assert alone[0]["radius"] == rows[1]["radius"]
    summary = summarize_certification(rows)
    assert summary["grid"][:3] == [0.0, 0.25, 0.5] and summary["certified_accuracy"][0] == 1.0
    assert summary["acr"] == pytest.approx(np.mean([r["radius"] for r in rows]))


def _reference_macer(logits, targets, sigma, lbd, beta, gamma):
    """MACER in numpy/scipy, one input at a time."""
    z = logits.detach().double().numpy()
    total_c, total_r = 0.0, 0.0
    for zi, y in zip(z, targets.tolist()):
        soft = np.exp(zi - zi.max(1, keepdims=True))
        soft = (soft / soft.sum(1, keepdims=True)).mean(0)
        total_c -= math.log(soft[y] + 1e-10)
        tempered = np.exp(beta * zi - (beta * zi).max(1, keepdims=True))
        tempered = (tempered / tempered.sum(1, keepdims=True)).mean(0)
        order = np.argsort(-tempered)
        if order[0] != y:
            continue
        xi = norm.ppf(tempered[order[0]]) - norm.ppf(tempered[order[1]])
        if np.isfinite(xi) and xi <= gamma:
            total_r += sigma / 2 * (gamma - xi)
    return (total_c + lbd * total_r) / len(z), total_c, total_r


def test_macer_loss_matches_a_hand_written_reference():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, 5) * 2
    targets = torch.tensor([0, 1, 2, 3, 4, 0])
    logits[5, :, 0] += 40.0  # saturated: ξ = ∞, dropped by the hinge
    logits[4, :, 4] += 2.5  # confident but finite ξ
    for sigma, lbd, beta, gamma in [(0.25, 12.0, 16.0, 8.0), (0.5, 3.0, 2.0, 1.0)]:
        terms = macer_loss(logits, targets, sigma, lbd, beta, gamma)
        loss, l_c, l_r = _reference_macer(logits, targets, sigma, lbd, beta, gamma)
        assert terms.loss.item() == pytest.approx(loss, rel=1e-5)
        assert terms.classification.item() == pytest.approx(l_c, rel=1e-5)
        assert terms.robustness.item() == pytest.approx(l_r, rel=1e-5, abs=1e-6)
    assert _reference_macer(logits, targets, 0.25, 1.0, 16.0, 8.0)[2] > 0  # the test exercises l_R


@pytest.mark.parametrize("margin", [60.0, -60.0, 8.0])
def test_macer_gradient_is_finite_when_the_smoothed_probability_saturates(margin):
    # margin 60: ẑ_y == 1 in float32 (ξ = ∞); −60: ẑ_y → 0 (misclassified); 8: near 1 with ξ finite or not
    torch.manual_seed(1)
    logits = torch.randn(4, 16, 10)
    logits[:2, :, 3] += margin
    logits.requires_grad_(True)
    targets = torch.tensor([3, 3, 1, 2])
    terms = macer_loss(logits, targets, sigma=0.25, lbd=12.0, beta=16.0, gamma=8.0)
    terms.loss.backward()
    assert torch.isfinite(terms.loss) and torch.isfinite(logits.grad).all()
    assert logits.grad[2:].abs().sum() > 0


def test_masking_after_the_fact_would_give_nan():
    """Why the loss evaluates Φ⁻¹ again on the kept inputs only (the issue's 0·∞ trap)."""
    p = torch.tensor([1.0, 0.7], requires_grad=True)
    xi = torch.special.ndtri(p)
    xi[torch.isfinite(xi)].sum().backward()
    assert torch.isnan(p.grad[0])


def test_lambda_zero_is_the_soft_smoothed_cross_entropy():
    torch.manual_seed(2)
    logits, targets = torch.randn(5, 8, 10) * 3, torch.randint(0, 10, (5,))
    soft_ce = -(torch.logsumexp(torch.log_softmax(logits, 2), dim=1) - math.log(8))
    expected = soft_ce.gather(1, targets[:, None]).mean()
    got = macer_loss(logits, targets, sigma=0.5, lbd=0.0, beta=16.0, gamma=8.0).loss
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_gaussian_augmentation_loss_is_cross_entropy_over_all_copies():
    torch.manual_seed(3)
    logits, targets = torch.randn(4, 3, 6), torch.randint(0, 6, (4,))
    expected = nn.functional.cross_entropy(logits.reshape(12, 6), targets.repeat_interleave(3))
    torch.testing.assert_close(gaussian_augmentation_loss(logits, targets).loss, expected)


def test_noisy_copies_layout_and_scale():
    x = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 1, 30, 30).contiguous()
    copies = noisy_copies(x, 3, 0.5, torch.Generator().manual_seed(0))
    assert copies.shape == (6, 1, 30, 30)
    means = copies.view(2, 3, -1).mean(2)
    assert torch.allclose(means, torch.tensor([[0.0] * 3, [1.0] * 3]), atol=0.1)
    assert (copies.view(2, 3, -1) - x.view(2, 1, -1)).std().item() == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("kwargs, message", [({"sigma": 0.0}, "sigma"), ({"sigma": -1.0}, "sigma"),
                                             ({"sigma": float("nan")}, "sigma"), ({"k": 0}, "k "),
                                             ({"lbd": -1.0}, "lbd"), ({"beta": 0.0}, "beta"),
                                             ({"objective": "smoothadv"}, "objective"),
                                             ({"warmup_epochs": -1}, "warmup")])
def test_bad_configs(kwargs, message):
    with pytest.raises(GraftkitError, match=message):
        MacerConfig(**kwargs)


def test_bad_smoothing_inputs():
    lenet = LeNet(input_size=8)
    with pytest.raises(GraftkitError, match="sigma"):
        Smooth(lenet, 10, sigma=0.0)
    with pytest.raises(GraftkitError, match="sigma"):
        Smooth(lenet, 10, sigma=-0.25)
    smooth = Smooth(lenet, 10, sigma=0.25)
    x = torch.rand(1, 8, 8)
    with pytest.raises(GraftkitError, match="n0"):
        smooth.certify(x, n0=200, n=100, alpha=0.001, batch_size=50)
    for alpha in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(GraftkitError, match="alpha"):
            smooth.certify(x, n0=10, n=100, alpha=alpha, batch_size=50)
        with pytest.raises(GraftkitError, match="alpha"):
            smooth.predict(x, n=100, alpha=alpha, batch_size=50)
    with pytest.raises(GraftkitError, match="channel"):
        smooth.certify(torch.rand(3, 8, 8), 10, 100, 0.001, 50)
    with pytest.raises(GraftkitError, match="8x8"):
        smooth.certify(torch.rand(1, 28, 28), 10, 100, 0.001, 50)
    with pytest.raises(GraftkitError, match="one image"):
        smooth.certify(torch.rand(2, 1, 8, 8), 10, 100, 0.001, 50)
    with pytest.raises(GraftkitError, match="NaN"):
        smooth.certify(torch.full((1, 8, 8), float("nan")), 10, 100, 0.001, 50)
    with pytest.raises(GraftkitError, match="num_classes"):
        Smooth(lenet, 1, 0.25)


class NonFinite(nn.Module):
    """Logits of 3 classes that are ``value`` in row ``row`` of every batch (all rows when None)."""

    def __init__(self, value: float, row: int | None = None) -> None:
        super().__init__()
        self.value, self.row = value, row

    def forward(self, x):
        logits = torch.zeros(len(x), 3)
        if self.row is None:
            logits.fill_(self.value)
        else:
            logits[self.row, 1] = self.value
        return logits


@pytest.mark.parametrize("model", [NonFinite(float("nan")), NonFinite(float("nan"), row=3),
                                   NonFinite(float("inf"), row=0), NonFinite(-float("inf"))],
                         ids=["all-nan", "one-nan", "one-inf", "all-minus-inf"])
def test_non_finite_logits_raise(model):
    # argmax of NaN logits counted as class 0: a model that outputs NaN got (class 0, radius 0.375)
    smooth = Smooth(model, 3, sigma=0.25)
    x = torch.rand(1, 4, 4)
    images, labels = x[None].repeat(2, 1, 1, 1), torch.zeros(2, dtype=torch.long)
    calls = [lambda: smooth.certify(x, 10, 100, 0.001, 50), lambda: smooth.predict(x, 100, 0.001, 50),
             lambda: smooth.sample_counts(x, 100, 50), lambda: certify_dataset(smooth, images, labels, 10, 100)]
    for call in calls:
        with pytest.raises(GraftkitError, match="non-finite logits"):
            call()
