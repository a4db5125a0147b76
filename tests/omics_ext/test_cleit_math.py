"""CLEIT math: contrastive loss and masked SIMSE by hand, the networks' shapes, metrics."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from graftkit.errors import GraftkitError
from omics_ext.cleit import (
    CLEITConfig,
    MultiOutputRegressor,
    OmicsAutoEncoder,
    PerDrugLinear,
    contrastive_loss,
    masked_simse,
    summarize,
)


def test_contrastive_loss_by_hand():
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    student = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    # S = cos(teacher_i, student_j) = [[1, 1/√2], [0, 1/√2]]
    s00, s01, s10, s11 = 1.0, 1 / math.sqrt(2), 0.0, 1 / math.sqrt(2)
    denominator = math.exp(s10) + math.exp(s01)  # same for k = 0 and k = 1 with B = 2
    expected = -((s00 - math.log(denominator)) + (s11 - math.log(denominator))) / 2
    assert contrastive_loss(teacher, student).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.254396, abs=1e-5)


def test_contrastive_loss_matches_a_loop_with_temperature():
    torch.manual_seed(1)
    teacher, student, tau = torch.randn(5, 4), torch.randn(5, 4), 0.5
    s = [[torch.nn.functional.cosine_similarity(teacher[i], student[j], dim=0).item() / tau for j in range(5)]
         for i in range(5)]
    total = 0.0
    for k in range(5):
        denominator = sum(math.exp(s[i][k]) for i in range(5) if i != k) + \
            sum(math.exp(s[k][j]) for j in range(5) if j != k)
        total += s[k][k] - math.log(denominator)
    assert contrastive_loss(teacher, student, tau).item() == pytest.approx(-total / 5, abs=1e-5)


def test_contrastive_loss_rewards_alignment_and_checks_input():
    torch.manual_seed(0)
    codes = torch.randn(8, 16)
    assert contrastive_loss(codes, codes) < contrastive_loss(codes, torch.randn(8, 16))
    for temperature in (0.0, -1.0, float("nan"), float("inf")):  # 0 used to return NaN
        with pytest.raises(GraftkitError, match="temperature"):
            contrastive_loss(codes, codes, temperature)
    with pytest.raises(ValueError, match="at least 2"):
        contrastive_loss(codes[:1], codes[:1])
    with pytest.raises(ValueError, match="same shape"):
        contrastive_loss(codes, codes[:, :3])


def test_masked_simse_by_hand():
    preds = torch.tensor([[1.0, 2.0], [3.0, 0.0], [5.0, 5.0]])
    labels = torch.tensor([[0.0, float("nan")], [1.0, 1.0], [float("nan"), float("nan")]])
    # residuals: line 0 [1, -], line 1 [2, -1], line 2 unlabelled
    # per drug (the default, as the reference's final code, λ = 0.1): drug 0 r = [1, 2] → 5/2 − λ·(3/2)²;
    # drug 1 r = [−1] → 1 − λ·1
    assert masked_simse(preds, labels).item() == pytest.approx((2.5 - 0.225 + 0.9) / 2)
    assert masked_simse(preds, labels, penalty=1.0).item() == pytest.approx((0.25 + 0.0) / 2)
    # per cell line (the early form): line 0 r = [1] → 1 − λ·1; line 1 r = [2, −1] → 5/2 − λ·(1/2)²;
    # line 2 has no label and is skipped
    assert masked_simse(preds, labels, 1.0, "cell_line").item() == pytest.approx((0.0 + 2.25) / 2)
    assert masked_simse(preds, labels, 0.1, "cell_line").item() == pytest.approx((0.9 + 2.475) / 2)
    assert masked_simse(preds, labels, 0.0, "cell_line").item() == pytest.approx((1.0 + 2.5) / 2)


def test_per_drug_loss_sees_a_lines_overall_sensitivity():
    # shifting all of one cell line's predictions by a constant is invisible to the per-line loss with λ = 1
    # (it only sees the spread across that line's drugs) but not to the per-drug loss
    gen = torch.Generator().manual_seed(0)
    preds, labels = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    labels[1, 2] = float("nan")
    shifted = preds.clone()
    shifted[3] += 2.0
    per_line = [masked_simse(p, labels, 1.0, "cell_line").item() for p in (preds, shifted)]
    per_drug = [masked_simse(p, labels).item() for p in (preds, shifted)]
    assert per_line[0] == pytest.approx(per_line[1], abs=1e-6)
    assert per_drug[1] > per_drug[0] + 0.1


@pytest.mark.parametrize("penalty", [-0.1, 1.5, float("nan"), float("inf")])
def test_simse_penalty_outside_the_unit_interval_is_refused(penalty):
    # above 1 the loss Var(r) + (1 − λ)·mean(r)² has no lower bound
    preds, labels = torch.zeros(3, 2), torch.ones(3, 2)
    with pytest.raises(GraftkitError, match="penalty"):
        masked_simse(preds, labels, penalty)
    with pytest.raises(GraftkitError, match="simse_penalty"):
        CLEITConfig(simse_penalty=penalty)


def test_simse_over_and_regressor_activation_are_checked():
    with pytest.raises(GraftkitError, match="over must be one of drug, cell_line"):
        masked_simse(torch.zeros(3, 2), torch.ones(3, 2), 0.1, "gene")
    with pytest.raises(GraftkitError, match="simse_over"):
        CLEITConfig(simse_over="sample")
    with pytest.raises(GraftkitError, match="regressor_activation"):
        CLEITConfig(regressor_activation="gelu")
    with pytest.raises(GraftkitError, match="activation"):
        MultiOutputRegressor(8, 2, activation="tanh")


def test_defaults_are_the_reference_final_code():
    config = CLEITConfig()
    assert (config.simse_penalty, config.simse_over, config.regressor_activation) == (0.1, "drug", "selu")
    reg = MultiOutputRegressor(16, 3, shared_dim=8, tower_dims=(4,))
    assert [type(m) for m in reg.modules() if isinstance(m, nn.SELU | nn.ReLU)] == [nn.SELU, nn.SELU]
    relu = MultiOutputRegressor(16, 3, shared_dim=8, tower_dims=(4,), activation="relu")
    assert [type(m) for m in relu.modules() if isinstance(m, nn.SELU | nn.ReLU)] == [nn.ReLU, nn.ReLU]


def test_masked_simse_gives_no_gradient_to_missing_entries():
    preds = torch.zeros(2, 3, requires_grad=True)
    labels = torch.tensor([[1.0, float("nan"), 2.0], [float("nan"), float("nan"), float("nan")]])
    masked_simse(preds, labels).backward()
    assert preds.grad[0, 1] == 0 and preds.grad[1].abs().sum() == 0 and preds.grad[0, 0] != 0
    all_missing = torch.full((2, 3), float("nan"))
    assert masked_simse(preds, all_missing).item() == 0.0


def test_autoencoder_matches_reference_layout():
    ae = OmicsAutoEncoder(1000)
    linears = [m for m in ae.encoder.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1000, 512), (512, 256), (256, 128)]
    assert sum(isinstance(m, nn.SELU) for m in ae.encoder.modules()) == 2
    assert all(m.p == 0.1 for m in ae.modules() if isinstance(m, nn.Dropout))
    decoder = [m for m in ae.decoder.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in decoder] == [(128, 256), (256, 512), (512, 1000)]
    recon, code = ae(torch.randn(4, 1000))
    assert recon.shape == (4, 1000) and code.shape == (4, 128)
    assert "1000 → 512 → 256 → 128" in repr(ae)


def test_regressor_shapes_and_independent_towers():
    reg = MultiOutputRegressor(128, n_drugs=5).eval()
    assert (reg.shared[0].in_features, reg.shared[0].out_features) == (128, 128)
    towers = [m for m in reg.towers if isinstance(m, PerDrugLinear)]
    assert [(m.in_features, m.out_features) for m in towers] == [(128, 64), (64, 32), (32, 1)]
    code = torch.randn(3, 128)
    out = reg(code)
    assert out.shape == (3, 5)
    # drug 2's output is the plain MLP made of drug 2's tower weights
    h = reg.shared(code)
    for layer in towers:
        h = h @ layer.weight[2] + layer.bias[2]
        if layer is not towers[-1]:
            h = torch.selu(h)
    torch.testing.assert_close(out[:, 2], h.squeeze(-1))
    # a tower's gradient never reaches another drug's weights
    reg(code)[:, 0].sum().backward()
    assert towers[0].weight.grad[1:].abs().sum() == 0 and towers[0].weight.grad[0].abs().sum() > 0


def test_config_is_validated():
    assert CLEITConfig().lr == 1e-4 and CLEITConfig().finetune_batch_size == 32
    for bad in ({"dropout": 1.5}, {"lr": 0}, {"latent_dim": 0}, {"finetune_epochs": -1},
                {"validation_metric": "r2"}, {"decay_coefficient": 0}, {"encoder_hidden_dims": ()}):
        with pytest.raises(GraftkitError, match=next(iter(bad))):
            CLEITConfig(**bad)


def test_metrics_by_hand():
    truth = np.array([[1.0, 2.0], [2.0, np.nan], [3.0, 1.0], [4.0, 0.0]])
    pred = np.array([[1.0, 0.0], [2.0, 9.0], [3.0, 1.0], [5.0, 2.0]])
    m = summarize(truth, pred)
    r0 = np.corrcoef([1, 2, 3, 4], [1, 2, 3, 5])[0, 1]
    r1 = np.corrcoef([2, 1, 0], [0, 1, 2])[0, 1]  # the NaN label of line 1 is left out
    assert m["dpearsonr"] == pytest.approx((r0 + r1) / 2)
    assert m["dpearsonr_abs"] == pytest.approx((abs(r0) + abs(r1)) / 2)
    assert np.isnan(m["cpearsonr"])  # every line has < 3 labelled drugs: no per-line r
    # dmse: mean over drugs of the per-drug MSE (the reference's "drmse"): drug 0 (0+0+0+1)/4, drug 1 (4+0+4)/3
    assert m["dmse"] == pytest.approx((1 / 4 + 8 / 3) / 2) and "drmse" not in m


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_predictions_are_an_error_not_a_dropped_drug(bad):
    # an infinite prediction made its drug's r undefined: the drug was dropped and the rest scored perfectly
    truth = np.array([[1.0, 2.0], [2.0, 3.0], [3.0, 1.0], [4.0, 0.0]])
    pred = truth.copy()
    pred[2, 1] = bad
    with pytest.raises(GraftkitError, match="non-finite.*line 2, drug 1"):
        summarize(truth, pred)
    labels = truth.copy()
    labels[0, 0] = np.inf
    with pytest.raises(GraftkitError, match="labels contain"):
        summarize(labels, truth)
