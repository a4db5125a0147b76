"""TD's math pinned: invariances, the closed form, brute-force agreement, the baselines, streaming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression, Ridge

from vision_ext.td import (
    RepresentationStatistics,
    TDWarning,
    canonical_correlations,
    expected_transferred_discrepancy,
    linear_cka,
    mean_cca,
    model_discrepancy,
    pwcca,
    svcca,
    td_from_statistics,
    transferred_discrepancy,
)


def gaussian(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def orthogonal(d: int, seed: int) -> torch.Tensor:
    return torch.linalg.qr(gaussian(d, d, seed))[0]


# ------------------------------------------------------------------------------------------------ invariances
def test_td_of_a_representation_with_itself_is_zero():
    a = gaussian(300, 6, 0)
    labels = torch.randint(0, 5, (300,), generator=torch.Generator().manual_seed(1))
    cls = transferred_discrepancy(a, a, labels)
    assert cls.td < 1e-12 and cls.normalized < 1e-12 and cls.disagreement == 0.0
    assert cls.accuracy_a == cls.accuracy_b > 0.2  # the heads do fit something
    reg = transferred_discrepancy(a, a, gaussian(300, 3, 2))
    assert reg.td < 1e-12 and reg.per_task.shape == (3,) and reg.disagreement is None


def test_td_is_zero_under_an_orthogonal_map_and_not_under_a_generic_feature_scaling():
    a = gaussian(400, 5, 3)
    y = a @ gaussian(5, 2, 4) + 0.5 * gaussian(400, 2, 5)
    rotated = transferred_discrepancy(a, 3.0 * a @ orthogonal(5, 6), y)  # orthogonal × global scale
    assert rotated.normalized < 1e-10
    # into a larger space (q > p, Q with orthonormal rows): rank deficient, warned, still TD 0
    embed = orthogonal(8, 7)[:5]
    with pytest.warns(TDWarning, match="rank deficient"):
        wider = transferred_discrepancy(a, a @ embed, y)
    assert wider.normalized < 1e-8
    # a strong ridge is not invariant to per-feature scaling: the stated ridge is what makes TD move
    scaled = a * torch.tensor([1.0, 10.0, 0.1, 1.0, 1.0], dtype=torch.float64)
    assert transferred_discrepancy(a, scaled, y, ridge=1.0).normalized > 1e-3


def test_normalised_td_of_independent_features_is_two():
    n = 20000
    a, b = gaussian(n, 8, 10), gaussian(n, 8, 11)
    y = a @ gaussian(8, 3, 12) + b @ gaussian(8, 3, 13)
    result = transferred_discrepancy(a, b, y)
    assert abs(result.normalized - 2) < 0.02
    assert torch.allclose(result.per_task_normalized, torch.full((3,), 2.0, dtype=torch.float64), atol=0.05)
    assert abs(expected_transferred_discrepancy(a, b).normalized - 2) < 0.01
    assert linear_cka(a, b) < 0.01 and mean_cca(a, b) < 0.02


# ------------------------------------------------------------------------------------------------ closed form
@pytest.mark.parametrize("ridge", [0.0, 0.3])
def test_monte_carlo_over_isotropic_targets_agrees_with_the_closed_form(ridge):
    n = 120
    a = gaussian(n, 4, 20)
    b = 0.7 * a[:, :3] @ gaussian(3, 6, 21) + gaussian(n, 6, 22)  # partly shared span, p != q
    targets = gaussian(n, 20000, 23)  # 20 000 tasks y ~ N(0, I_N)
    result = transferred_discrepancy(a, b, targets, ridge=ridge, batch_size=50)
    closed = expected_transferred_discrepancy(a, b, ridge=ridge)
    assert float(result.per_task.mean()) == pytest.approx(closed.td, rel=0.02)
    assert result.normalized == pytest.approx(closed.normalized, rel=0.02)
    assert 0.2 < closed.normalized < 1.9  # a case between the extremes


def test_closed_form_is_canonical_correlations_and_matches_hat_matrices():
    n = 40
    a, b = gaussian(n, 3, 30), gaussian(n, 5, 31) + 0.8 * gaussian(n, 3, 30) @ gaussian(3, 5, 32)
    closed = expected_transferred_discrepancy(a, b)
    rho = closed.canonical_correlations
    assert closed.td == pytest.approx((3 + 5 - 2 * float((rho ** 2).sum())) / n, rel=1e-9)
    assert closed.normalized == pytest.approx(2 - 4 * float((rho ** 2).sum()) / 8, rel=1e-9)
    ac, bc = a - a.mean(0), b - b.mean(0)
    hat_a = ac @ torch.linalg.pinv(ac)
    hat_b = bc @ torch.linalg.pinv(bc)
    assert closed.td == pytest.approx(float(torch.trace((hat_a - hat_b) @ (hat_a - hat_b))) / n, rel=1e-9)
    # ridge: hat matrices A (AᵀA + Nλ I)⁻¹ Aᵀ with λ = ridge × mean feature variance
    ridge = 0.4
    def ridge_hat(x):
        lam = ridge * float(torch.trace(x.T @ x / n)) / x.shape[1]
        return x @ torch.linalg.solve(x.T @ x + n * lam * torch.eye(x.shape[1], dtype=x.dtype), x.T)
    diff = ridge_hat(ac) - ridge_hat(bc)
    assert expected_transferred_discrepancy(a, b, ridge=ridge).td == pytest.approx(
        float(torch.trace(diff @ diff)) / n, rel=1e-9)


# ------------------------------------------------------------------------------------------------ brute force
def test_matches_sklearn_heads_per_task_on_a_small_case():
    n = 15
    a, b = gaussian(n, 3, 40).numpy(), gaussian(n, 4, 41).numpy()
    y = gaussian(n, 2, 42).numpy()
    ours = transferred_discrepancy(a, b, y, ridge=0.0, batch_size=4)
    pred_a = np.column_stack([LinearRegression().fit(a, y[:, t]).predict(a) for t in range(2)])
    pred_b = np.column_stack([LinearRegression().fit(b, y[:, t]).predict(b) for t in range(2)])
    per_task = ((pred_a - pred_b) ** 2).mean(0)
    np.testing.assert_allclose(ours.per_task.numpy(), per_task, rtol=1e-8)
    mean_var = (pred_a.var(0) + pred_b.var(0)) / 2
    assert ours.normalized == pytest.approx(per_task.sum() / mean_var.sum(), rel=1e-8)
    # the stated ridge is sklearn's Ridge with alpha = N × ridge × mean feature variance
    ridge = 0.2
    def ridge_pred(x):
        alpha = n * ridge * x.var(0).mean()
        return Ridge(alpha=alpha).fit(x, y).predict(x)
    expected = ((ridge_pred(a) - ridge_pred(b)) ** 2).mean(0)
    np.testing.assert_allclose(transferred_discrepancy(a, b, y, ridge=ridge).per_task.numpy(), expected,
                               rtol=1e-8)


def test_classification_disagreement_matches_sklearn_one_hot_heads():
    n = 60
    a, b = gaussian(n, 4, 50).numpy(), gaussian(n, 3, 51).numpy()
    labels = torch.randint(0, 3, (n,), generator=torch.Generator().manual_seed(52)).numpy()
    onehot = np.eye(3)[labels]
    prob_a = LinearRegression().fit(a, onehot).predict(a)
    prob_b = LinearRegression().fit(b, onehot).predict(b)
    ours = transferred_discrepancy(a, b, labels, ridge=0.0, batch_size=7)
    assert ours.task == "classification"
    assert ours.disagreement == pytest.approx(np.mean(prob_a.argmax(1) != prob_b.argmax(1)))
    assert ours.accuracy_a == pytest.approx(np.mean(prob_a.argmax(1) == labels))
    assert ours.td == pytest.approx(((prob_a - prob_b) ** 2).sum(1).mean(), rel=1e-8)
    np.testing.assert_allclose(prob_a.sum(1), 1.0)  # LS on one-hot = a linear probability estimate


# ------------------------------------------------------------------------------------------------ baselines
def test_linear_cka_is_one_for_identical_features_and_matches_the_gram_form():
    a = gaussian(50, 6, 60)
    assert linear_cka(a, a) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(a, 2.5 * a @ orthogonal(6, 61)) == pytest.approx(1.0, abs=1e-12)
    b = gaussian(50, 4, 62) + a[:, :4]
    h = torch.eye(50, dtype=torch.float64) - 1 / 50
    k, lmat = h @ a @ a.T @ h, h @ b @ b.T @ h
    gram = float((k * lmat).sum() / torch.sqrt((k * k).sum() * (lmat * lmat).sum()))
    assert linear_cka(a, b.numpy()) == pytest.approx(gram, rel=1e-10)


def test_canonical_correlations_match_qr_and_svcca_truncates():
    a = gaussian(80, 5, 70)
    b = a[:, :2] @ gaussian(2, 4, 71) + gaussian(80, 4, 72)
    qa = torch.linalg.qr(a - a.mean(0))[0]
    qb = torch.linalg.qr(b - b.mean(0))[0]
    expected = torch.linalg.svdvals(qa.T @ qb)
    torch.testing.assert_close(canonical_correlations(a, b), expected)
    assert mean_cca(a, a @ gaussian(5, 5, 73)) == pytest.approx(1.0, abs=1e-9)  # any invertible map
    # SVCCA = CCA of the leading principal components explaining `variance`, computed here by SVD
    scaled = a * torch.tensor([10.0, 3, 1, 1, 1], dtype=torch.float64)

    def principal_components(x, fraction):
        u, s, _ = torch.linalg.svd(x - x.mean(0), full_matrices=False)
        k = int((torch.cumsum(s ** 2, 0) / (s ** 2).sum() < fraction).sum()) + 1
        return u[:, :k]

    pa, pb = principal_components(scaled, 0.9), principal_components(b, 0.9)
    assert pa.shape[1] < 5 and pb.shape[1] < 4  # the truncation does something
    expected = torch.linalg.svdvals(pa.T @ pb)[: min(pa.shape[1], pb.shape[1])].mean()
    assert svcca(scaled, b, variance=0.9) == pytest.approx(float(expected), rel=1e-9)
    assert svcca(scaled, scaled, variance=0.5) == pytest.approx(1.0, abs=1e-9)


# ------------------------------------------------------------------------------------------------ streaming
def test_streaming_batches_numpy_and_growing_label_width_agree_with_one_pass():
    a, b = gaussian(200, 5, 80), gaussian(200, 7, 81)
    labels = torch.cat([torch.randint(0, 2, (50,)), torch.randint(0, 6, (150,))])
    one = transferred_discrepancy(a, b, labels, batch_size=1000)
    streamed = transferred_discrepancy(a.float().numpy(), b.float().numpy(), labels.numpy(), batch_size=30)
    assert streamed.per_task.shape == (6,)  # widened from 2 to 6 classes mid-stream
    assert streamed.td == pytest.approx(one.td, rel=1e-5)
    assert streamed.disagreement == one.disagreement


def test_model_discrepancy_over_a_loader_equals_the_feature_form_and_restores_modes():
    torch.manual_seed(0)
    net_a = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Dropout(0.5), torch.nn.ReLU())
    net_b = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh())
    x = torch.randn(90, 6)
    y = torch.randint(0, 3, (90,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16, shuffle=True)
    net_a.train()
    result = model_discrepancy(net_a, net_b, loader)
    assert net_a.training and net_b.training  # train mode restored after the eval-mode passes
    with torch.no_grad():
        net_a.eval()
        expected = transferred_discrepancy(net_a(x), net_b(x), y)
    assert result.td == pytest.approx(expected.td, rel=1e-6)
    assert result.disagreement == expected.disagreement and result.accuracy_b == expected.accuracy_b


def test_statistics_only_route_gives_the_regression_form():
    a, b = gaussian(100, 3, 90), gaussian(100, 3, 91)
    y = gaussian(100, 2, 92)
    stats = RepresentationStatistics()
    for i in range(0, 100, 25):
        stats.update(a[i:i + 25], b[i:i + 25], y[i:i + 25])
    assert td_from_statistics(stats).td == pytest.approx(transferred_discrepancy(a, b, y).td, rel=1e-10)
    assert "n=100" in repr(stats)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_features_device():
    a = gaussian(500, 6, 95).cuda()
    b = a @ orthogonal(6, 96).cuda()
    labels = torch.randint(0, 4, (500,), device="cuda")
    result = transferred_discrepancy(a, b, labels)
    assert result.normalized < 1e-10 and result.disagreement == 0.0
    cpu = transferred_discrepancy(a.cpu(), gaussian(500, 6, 97), labels.cpu())
    gpu = transferred_discrepancy(a, gaussian(500, 6, 97).cuda(), labels)
    assert gpu.td == pytest.approx(cpu.td, rel=1e-8)


def test_pwcca_matches_explicit_canonical_variates_and_weights_what_carries_variance():
    a = gaussian(120, 3, 80) * torch.tensor([5.0, 1.0, 0.3], dtype=torch.float64)
    b = torch.cat([a[:, :1] + 0.1 * gaussian(120, 1, 81), a[:, 1:] + 2.0 * gaussian(120, 2, 82), gaussian(120, 2, 83)],
                  dim=1)  # a's big first feature is well kept in b, the others drowned
    # the definition, from the data: orthonormal canonical variates h_i of `a` (fewer features), centred x_j
    centred = a - a.mean(0)
    qa, ra = torch.linalg.qr(centred)
    qb = torch.linalg.qr(b - b.mean(0))[0]
    u, rho, _ = torch.linalg.svd(qa.T @ qb, full_matrices=False)
    h = qa @ u  # unit-norm, mutually orthogonal canonical variates of `a`
    alpha = (h.T @ centred).abs().sum(1)
    expected = float((alpha * rho).sum() / alpha.sum())
    assert pwcca(a, b) == pytest.approx(expected, rel=1e-9)
    assert pwcca(b, a) == pytest.approx(expected, rel=1e-9)  # the side with fewer features is used either way
    assert pwcca(a, b) > mean_cca(a, b) + 0.1  # the well-kept direction carries most of `a`'s variance
    assert pwcca(a, a @ gaussian(3, 3, 84)) == pytest.approx(1.0, abs=1e-9)  # any invertible map
