"""The Pre-LN gradient analysis: the measured quantity, the depth laws of the theory, the fit, the CLI."""

import json
import math

import pytest
import torch

from graftkit import preln_gradnorm as gn
from graftkit.cli import main
from graftkit.errors import GraftkitError

SMALL = gn.GradNormSettings(d_model=16, heads=2, seq_len=8, batch=4)


def test_fit_exponent_recovers_a_power_law():
    depths = [2, 4, 6, 8, 12]
    assert gn.fit_exponent(depths, [3.0 * d**-0.5 for d in depths]) == pytest.approx(-0.5, abs=1e-12)
    assert gn.fit_exponent(depths, [1.7] * 5) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(GraftkitError, match="two or more"):
        gn.fit_exponent([4, 4], [1.0, 2.0])
    with pytest.raises(GraftkitError, match="positive"):
        gn.fit_exponent([2, 4], [1.0, 0.0])


def test_measured_norm_is_the_outer_product_sum_by_hand():
    """Pre-LN, one layer, attention output zeroed: x' = x, h_t = ReLU(W1 LN2(x_t)), y_t = LNf(x_t + W2 h_t),
    L = mean_t <y_t, r_t>, so ∂L/∂W2 = Σ_t g_t h_tᵀ with g_t = J_LNf(z_t)ᵀ r_t / T (γ = 1), where
    J_LN(z)ᵀ r = (r − mean(r) − ẑ·mean(r ⊙ ẑ)) / σ(z)."""
    torch.manual_seed(3)
    encoder = gn.build_encoder("pre", 1, SMALL)
    layer = encoder.layers[0]
    torch.nn.init.zeros_(layer.attention.output.weight)
    x = torch.randn(2, 5, 16)
    r = torch.randn(2, 5, 16)
    measured = gn.w2_grad_norms(encoder, x, lambda y: (y * r).sum(-1).mean())

    def normalize(z, eps=1e-5):
        mu, var = z.mean(-1, keepdim=True), z.var(-1, unbiased=False, keepdim=True)
        return (z - mu) / torch.sqrt(var + eps), torch.sqrt(var + eps)

    with torch.no_grad():
        w1, w2 = layer.feed_forward.intermediate.weight, layer.feed_forward.output.weight
        h = torch.relu(normalize(x)[0] @ w1.T)
        z_hat, sigma = normalize(x + h @ w2.T)
        g = (r - r.mean(-1, keepdim=True) - z_hat * (r * z_hat).mean(-1, keepdim=True)) / sigma / 10
        by_hand = torch.einsum("bti,btj->ij", g, h).norm()
    assert measured == [pytest.approx(float(by_hand), rel=1e-4)]


def test_depth_laws_of_the_theory():
    """Post-LN's last-layer gradient does not shrink with depth; Pre-LN's falls (theory: ∝ 1/sqrt(L))."""
    settings = gn.GradNormSettings(d_model=32, heads=4, seq_len=8, batch=4)
    result = gn.measure([2, 8], seeds=4, settings=settings)
    post, pre = result.last_layer("post"), result.last_layer("pre")
    assert 0.8 < post[1] / post[0] < 1.25
    assert pre[1] / pre[0] < 0.75
    assert result.exponents["pre"] < result.exponents["post"] - 0.2


def test_measure_is_seeded_paired_and_leaves_the_rng_alone():
    state = torch.random.get_rng_state()
    first = gn.measure([1, 2], seeds=2, settings=SMALL)
    assert torch.equal(state, torch.random.get_rng_state())
    again = gn.measure([2, 1], seeds=2, settings=SMALL)  # order of depths does not matter
    assert first.layers == again.layers and first.depths == [1, 2]
    assert len(first.layers["pre"][2]) == 2 and all(s >= 0 for _, s in first.layers["post"][2])
    rows = first.layer_rows()
    assert len(rows) == 2 * (1 + 2) and rows[0] == {"ln": "post", "depth": 1, "layer": 1,
                                                    "grad_norm_mean": first.layers["post"][1][0][0],
                                                    "grad_norm_std": first.layers["post"][1][0][1]}
    softmax = gn.measure([1, 2], seeds=1, settings=gn.GradNormSettings(d_model=16, heads=2, seq_len=8,
                                                                       batch=4, loss="softmax"))
    assert all(math.isfinite(v) and v > 0 for v in softmax.last_layer("pre"))


def test_bad_input_names_the_problem():
    with pytest.raises(GraftkitError, match="divisible"):
        gn.GradNormSettings(d_model=30, heads=4)
    with pytest.raises(GraftkitError, match="loss"):
        gn.GradNormSettings(loss="hinge")
    with pytest.raises(GraftkitError, match="seq_len"):
        gn.GradNormSettings(seq_len=0)
    with pytest.raises(GraftkitError, match="depths"):
        gn.measure([4], seeds=1, settings=SMALL)
    with pytest.raises(GraftkitError, match="seeds"):
        gn.measure([1, 2], seeds=0, settings=SMALL)
    with pytest.raises(GraftkitError, match="position"):
        gn.ffn_grad_norms("middle", 2, 0, SMALL)


def test_cli_json_table_and_plot(tmp_path, capsys):
    out = tmp_path / "gn"
    assert main(["preln", "gradnorm", "--depths", "1,2", "--d-model", "16", "--heads", "2", "--seeds", "2",
                 "--seq-len", "4", "--batch", "2", "--json", "--out", str(out)]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["depths"] == [1, 2] and set(table["exponents"]) == {"post", "pre"}
    assert len(table["last_layer"]) == 2 and len(table["layers"]) == 6
    assert json.loads((out / "gradnorm.json").read_text()) == table
    assert (out / "gradnorm.png").read_bytes()[:4] == b"\x89PNG"

    assert main(["preln", "gradnorm", "--depths", "1,2", "--d-model", "16", "--heads", "2", "--seeds", "1",
                 "--seq-len", "4", "--batch", "2", "--out", str(out)]) == 0
    assert "fitted exponent" in capsys.readouterr().out
    assert main(["preln", "gradnorm", "--d-model", "30", "--out", str(out)]) == 2
    assert "d_model (30) must be divisible by heads (4)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["preln", "gradnorm", "--depths", "2,x"])


def test_mlm_profile_is_each_layers_w2_gradient_under_the_masked_lm_loss():
    from hf_models import PreLNBertConfig, PreLNBertForMaskedLM

    inputs = torch.tensor([[2, 7, 4, 9, 3, 0], [2, 8, 8, 4, 6, 3]])
    attention = (inputs != 0).long()
    labels = torch.full_like(inputs, -100)
    labels[0, 2], labels[1, 3] = 5, 11
    state = torch.random.get_rng_state()
    norms = {p: gn.mlm_ffn_grad_norms(p, 3, 7, inputs, attention, labels, 12, 0, SMALL) for p in ("post", "pre")}
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(len(v) == 3 and all(math.isfinite(x) and x > 0 for x in v) for v in norms.values())
    assert gn.mlm_ffn_grad_norms("pre", 3, 7, inputs, attention, labels, 12, 0, SMALL) == norms["pre"]
    # by hand: the same model (seed 7, encoder Xavier-initialized), loss.backward(), each layer's W2 gradient
    config = PreLNBertConfig(vocab_size=12, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                             intermediate_size=64, hidden_act="relu", hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0, layer_norm_eps=1e-5, max_position_embeddings=6,
                             type_vocab_size=0, pad_token_id=0, layer_norm_position="post")
    torch.manual_seed(7)
    model = PreLNBertForMaskedLM(config)
    gn.xavier_init(model.bert.encoder)
    model(inputs, attention_mask=attention, labels=labels).loss.backward()
    by_hand = [float(layer.feed_forward.output.weight.grad.norm()) for layer in model.bert.encoder.layers]
    assert norms["post"] == pytest.approx(by_hand, rel=1e-5)
    torch.random.set_rng_state(state)
    with pytest.raises(GraftkitError, match="position"):
        gn.mlm_ffn_grad_norms("middle", 2, 0, inputs, attention, labels, 12, 0, SMALL)
