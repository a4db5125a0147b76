"""The shared encoder core: Post-LN equals HF BertModel, Pre-LN equals HF RobertaPreLayerNormModel (same
weights), SDPA equals eager, biases and padding behave, bad input raises."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from loopback import WITHOUT_GRAFTKIT
from torch import nn

from hf_models.core import (
    Embeddings,
    Encoder,
    EncoderLayer,
    SelfAttention,
    combine_biases,
    padding_bias,
    validate_encoder_config,
    write_remote_code,
)
from hf_models.core.modeling import positional_attention_bias


def encoder_config(**overrides) -> SimpleNamespace:
    fields = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
                  hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  layer_norm_eps=1e-12, layer_norm_position="pre", vocab_size=50, max_position_embeddings=20,
                  type_vocab_size=2, pad_token_id=1)
    fields.update(overrides)
    return SimpleNamespace(**fields)


def randomize_(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial LayerNorm gains/biases too, so a misplaced LN cannot go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + (1.0 if name.endswith("LayerNorm.weight") or
                                                                 name.endswith("layer_norm.weight") else 0.0))


def test_pre_ln_layer_matches_the_paper_formula():
    cfg = encoder_config(num_hidden_layers=1)
    layer = EncoderLayer(cfg).eval()
    randomize_(layer)
    x = torch.randn(2, 5, 32)
    attn, ln1, ffn, ln2 = layer.attention, layer.attention_layer_norm, layer.feed_forward, layer.feed_forward_layer_norm

    def attention(h):  # softmax(QK^T / sqrt(d_head)) V, heads concatenated, then W_O
        q, k, v = (lin(h).view(2, 5, 4, 8).transpose(1, 2) for lin in (attn.query, attn.key, attn.value))
        probs = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1)
        return attn.output((probs @ v).transpose(1, 2).reshape(2, 5, 32))

    def feed_forward(h):
        return ffn.output(torch.nn.functional.gelu(ffn.intermediate(h)))

    mid = x + attention(ln1(x))
    expected = mid + feed_forward(ln2(mid))
    torch.testing.assert_close(layer(x)[0], expected, atol=1e-5, rtol=1e-5)

    layer.pre_norm = False  # Post-LN with the same weights: x' = LN(x + Attn(x)), y = LN(x' + FFN(x'))
    mid = ln1(x + attention(x))
    torch.testing.assert_close(layer(x)[0], ln2(mid + feed_forward(mid)), atol=1e-5, rtol=1e-5)


def test_final_layer_norm_only_for_pre_ln():
    assert hasattr(Encoder(encoder_config(layer_norm_position="pre")), "final_layer_norm")
    assert not hasattr(Encoder(encoder_config(layer_norm_position="post")), "final_layer_norm")
    enc = Encoder(encoder_config()).eval()
    randomize_(enc)
    x = torch.randn(2, 6, 32)
    out = enc(x, output_hidden_states=True)
    assert len(out.hidden_states) == 4 and out.hidden_states[0] is x
    torch.testing.assert_close(out.last_hidden_state, enc.final_layer_norm(out.hidden_states[-1]))


def _copy_bert_weights(ours: nn.Module, theirs: nn.Module, position_offset: int = 0) -> None:
    """Load HF BERT-family weights into the core's modules; ``position_offset`` skips the first position rows
    (RoBERTa's position t is row padding_idx + 1 + t, the core's is row t)."""
    rename = [
        (r"embeddings\.LayerNorm", "embeddings.layer_norm"),
        (r"encoder\.layer\.(\d+)\.attention\.self\.", r"encoder.layers.\1.attention."),
        (r"encoder\.layer\.(\d+)\.attention\.output\.dense", r"encoder.layers.\1.attention.output"),
        (r"encoder\.layer\.(\d+)\.attention\.(output\.)?LayerNorm", r"encoder.layers.\1.attention_layer_norm"),
        (r"encoder\.layer\.(\d+)\.intermediate\.dense", r"encoder.layers.\1.feed_forward.intermediate"),
        (r"encoder\.layer\.(\d+)\.output\.dense", r"encoder.layers.\1.feed_forward.output"),
        (r"encoder\.layer\.(\d+)\.(intermediate|output)\.LayerNorm", r"encoder.layers.\1.feed_forward_layer_norm"),
        (r"^LayerNorm", "encoder.final_layer_norm"),
    ]
    mapped = {}
    for name, tensor in theirs.state_dict().items():
        if name.endswith(("position_ids", "token_type_ids")):
            continue
        for pattern, repl in rename:
            name = re.sub(pattern, repl, name)
        mapped[name] = tensor[position_offset:] if name == "embeddings.position_embeddings.weight" else tensor
    ours.load_state_dict(mapped, strict=True)


class _Ours(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings, self.encoder = Embeddings(cfg), Encoder(cfg)
        self.pooler = nn.Module()
        self.pooler.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, ids, mask, position_ids=None, output_attentions=False):
        x = self.embeddings(ids, position_ids=position_ids, attention_mask=mask)
        return self.encoder(x, padding_bias(mask, x.dtype), output_attentions=output_attentions)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_post_ln_equals_hf_bert(implementation):
    from transformers import BertConfig, BertModel

    theirs = BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=20, pad_token_id=1,
                                  attn_implementation=implementation)).eval()
    randomize_(theirs, seed=1)
    cfg = encoder_config(layer_norm_position="post", _attn_implementation=implementation)
    ours = _Ours(cfg).eval()
    _copy_bert_weights(ours, theirs)
    ids = torch.randint(2, 50, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    expected = theirs(ids, attention_mask=mask).last_hidden_state
    got = ours(ids, mask).last_hidden_state
    keep = mask.bool()
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-5, rtol=1e-5)


def test_pre_ln_equals_hf_roberta_prelayernorm():
    from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormModel

    theirs = RobertaPreLayerNormModel(RobertaPreLayerNormConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=20, pad_token_id=1, type_vocab_size=1, layer_norm_eps=1e-5)).eval()
    randomize_(theirs, seed=2)
    ours = _Ours(encoder_config(layer_norm_eps=1e-5, type_vocab_size=1)).eval()
    _copy_bert_weights(ours, theirs)
    ids = torch.randint(2, 50, (3, 9))
    ids[2, 5:] = 1
    mask = ids.ne(1).long()
    position_ids = torch.cumsum(mask, dim=1) * mask + 1  # RoBERTa numbers positions from padding_idx + 1
    expected = theirs(ids, attention_mask=mask).last_hidden_state
    got = ours(ids, mask, position_ids=position_ids).last_hidden_state
    keep = mask.bool()
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-5, rtol=1e-5)


def test_left_padding_positions_follow_the_mask_as_hf_roberta():
    from transformers import RobertaPreLayerNormConfig, RobertaPreLayerNormModel

    theirs = RobertaPreLayerNormModel(RobertaPreLayerNormConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
        max_position_embeddings=22, pad_token_id=1, type_vocab_size=1, layer_norm_eps=1e-5)).eval()
    randomize_(theirs, seed=4)
    ours = _Ours(encoder_config(layer_norm_eps=1e-5, type_vocab_size=1)).eval()
    _copy_bert_weights(ours, theirs, position_offset=2)  # padding_idx 1 + 1
    gen = torch.Generator().manual_seed(4)
    long, short = torch.randint(2, 50, (7,), generator=gen), torch.randint(2, 50, (4,), generator=gen)
    pads = torch.ones(3, dtype=torch.long)
    right = torch.stack([long, torch.cat([short, pads])])
    left = torch.stack([long, torch.cat([pads, short])])
    with torch.no_grad():
        out = {name: ours(ids, ids.ne(1).long()).last_hidden_state for name, ids in (("left", left), ("right", right))}
        expected = theirs(left, attention_mask=left.ne(1).long()).last_hidden_state  # RoBERTa: positions from ids
    keep = left.ne(1)
    torch.testing.assert_close(out["left"][keep], expected[keep], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["left"][1, 3:], out["right"][1, :4], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["left"][0], out["right"][0])


@pytest.mark.parametrize("position", ["post", "pre"])
def test_sdpa_equals_eager_outputs_and_gradients(position):
    torch.manual_seed(0)
    cfg = encoder_config(layer_norm_position=position)
    enc = Encoder(cfg)
    randomize_(enc, seed=3)
    x = torch.randn(2, 7, 32)
    mask = torch.ones(2, 7)
    mask[0, 4:] = 0
    positional = torch.randn(1, 4, 7, 7)  # e.g. TUPE's bias, shared by the batch

    def run(name: str, dtype: torch.dtype):
        cfg._attn_implementation = name
        enc.to(dtype).zero_grad()
        bias = combine_biases(padding_bias(mask, dtype), positional.to(dtype))
        out = enc(x.to(dtype), bias).last_hidden_state
        (out[mask.bool()] ** 2).sum().backward()
        return out, [p.grad.clone() for p in enc.parameters()]

    # float32 outputs within 1e-5; gradients compared in float64, where rounding cannot hide a real difference
    torch.testing.assert_close(run("sdpa", torch.float32)[0], run("eager", torch.float32)[0], atol=1e-5, rtol=1e-5)
    (out_sdpa, grads_sdpa), (out_eager, grads_eager) = run("sdpa", torch.float64), run("eager", torch.float64)
    torch.testing.assert_close(out_sdpa, out_eager)
    for g_sdpa, g_eager in zip(grads_sdpa, grads_eager):
        torch.testing.assert_close(g_sdpa, g_eager)


def test_attention_weights_respect_padding_and_bias():
    cfg = encoder_config(num_hidden_layers=1, _attn_implementation="sdpa")
    enc = Encoder(cfg).eval()
    x = torch.randn(2, 5, 32)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    out = enc(x, padding_bias(mask, x.dtype), output_attentions=True)  # falls back to eager for weights
    (weights,) = out.attentions
    assert weights.shape == (2, 4, 5, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 5))
    assert weights[1, :, :, 3:].abs().max() == 0
    # a large negative bias on key 0 acts like masking it
    block = torch.zeros(1, 1, 1, 5)
    block[..., 0] = -1e9
    (weights,) = enc(x, block, output_attentions=True).attentions
    assert weights[..., 0].max() < 1e-6


def test_padding_bias_and_combination():
    assert padding_bias(None, torch.float32) is None
    assert padding_bias(torch.ones(2, 4), torch.float32) is None  # nothing to mask: kernel runs unmasked
    bias = padding_bias(torch.tensor([[1, 0]]), torch.float32)
    assert bias.shape == (1, 1, 1, 2) and bias[0, 0, 0, 0] == 0 and bias[0, 0, 0, 1] == torch.finfo(torch.float32).min
    summed = combine_biases(bias, None, torch.full((1, 1, 1, 2), -1e38))
    assert torch.isfinite(summed).all()
    assert combine_biases(None, None) is None
    with pytest.raises(ValueError, match="attention_mask"):
        padding_bias(torch.ones(2, 3, 4), torch.float32)


def test_attention_scale_is_pluggable():
    cfg = encoder_config(num_hidden_layers=1)
    default, halved = SelfAttention(cfg), SelfAttention(cfg, scale=(2 * 8) ** -0.5)  # TUPE's 1/sqrt(2d)
    assert default.scale == pytest.approx(8**-0.5)
    halved.load_state_dict(default.state_dict())
    x = torch.randn(1, 4, 32)
    assert not torch.allclose(default(x)[0], halved(x)[0])
    enc = Encoder(cfg, attention_scale=0.125)
    assert all(layer.attention.scale == 0.125 for layer in enc.layers)


def test_embeddings_steps_and_options():
    cfg = encoder_config()
    emb = Embeddings(cfg).eval()
    ids = torch.tensor([[0, 5, 7, 1]])
    torch.testing.assert_close(emb(ids), emb.finalize(emb.sum_embeddings(ids)))
    expected = (emb.word_embeddings(ids) + emb.position_embeddings.weight[:4] + emb.token_type_embeddings.weight[0])
    torch.testing.assert_close(emb.sum_embeddings(ids), expected)
    no_pos = Embeddings(encoder_config(type_vocab_size=0), position_embeddings=False)
    assert no_pos.position_embeddings is None and no_pos.token_type_embeddings is None
    torch.testing.assert_close(no_pos.sum_embeddings(ids), no_pos.word_embeddings(ids))
    assert isinstance(Embeddings(encoder_config(embedding_layer_norm=False)).layer_norm, nn.Identity)


def test_embeddings_bad_input():
    emb = Embeddings(encoder_config())
    with pytest.raises(ValueError, match="max_position_embeddings=20"):
        emb(torch.zeros(1, 21, dtype=torch.long))
    with pytest.raises(ValueError, match="vocab_size=50"):
        emb(torch.tensor([[3, 50]]))
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        emb()
    with pytest.raises(ValueError, match="position_ids"):
        emb(torch.tensor([[3, 4]]), position_ids=torch.tensor([[0, 20]]))
    with pytest.raises(ValueError, match="input_ids must have shape"):
        emb(torch.tensor([3, 4]))
    ids = torch.tensor([[3, 4]])
    for bad_types in ([[0, 2]], [[-1, 0]]):  # type_vocab_size=2
        with pytest.raises(ValueError, match=r"token_type_ids must lie in \[0, type_vocab_size=2\)"):
            emb(ids, token_type_ids=torch.tensor(bad_types))
    with pytest.raises(ValueError, match=r"position_ids must lie in \[0, max_position_embeddings=20\), "
                                         r"got values in \[-1, 0\]"):
        emb(ids, position_ids=torch.tensor([[-1, 0]]))
    no_types = Embeddings(encoder_config(type_vocab_size=0))
    torch.testing.assert_close(no_types(ids, token_type_ids=torch.zeros_like(ids)), no_types(ids))
    with pytest.raises(ValueError, match="token_type_ids must lie in .0, 1: the model has no token types"):
        no_types(ids, token_type_ids=torch.ones_like(ids))
    with pytest.raises(ValueError, match=r"the input has no tokens \(shape \(2, 0\)\)"):
        emb(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"the input has no tokens"):
        emb(inputs_embeds=torch.zeros(2, 0, 32))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(1, 2\), got \(1, 3\)"):
        emb(ids, attention_mask=torch.ones(1, 3))
    assert emb(torch.zeros(0, 4, dtype=torch.long)).shape == (0, 4, 32)  # an empty batch is fine


def test_value_checks_are_skipped_while_compiling():
    from hf_models.core.checks import check_index_ranges, checking_values

    assert checking_values()
    seen = []

    def probe(ids):
        seen.append(checking_values())
        check_index_ranges(("ids", ids, 5, "size=5"))  # would read values (a graph break) if it ran
        return padding_bias(ids.ne(0).long(), torch.float32)  # always a tensor while compiling

    ids = torch.tensor([[1, 2, 3]])
    compiled = torch.compile(probe, fullgraph=True, backend="eager")
    assert compiled(ids).shape == (1, 1, 1, 3) and seen == [False]
    with pytest.raises(ValueError, match=r"ids must lie in \[0, size=5\), got values in \[1, 7\]"):
        check_index_ranges(("ids", torch.tensor([1, 7]), 5, "size=5"), ("none", None, 1, "-"))


def test_pooler_rejects_an_empty_sequence():
    from hf_models.core import Pooler

    with pytest.raises(ValueError, match="the pooler reads the first token, but the sequence is empty"):
        Pooler(encoder_config())(torch.zeros(2, 0, 32))


@pytest.mark.parametrize("field, value, message", [
    ("hidden_size", 30, "hidden_size .30. must be divisible by num_attention_heads .4."),
    ("layer_norm_position", "middle", "layer_norm_position must be one of"),
    ("hidden_act", "gelux", "hidden_act must be one of"),
    ("num_hidden_layers", 0, "num_hidden_layers must be a positive integer"),
    ("hidden_dropout_prob", 1.5, "hidden_dropout_prob must be in"),
    ("layer_norm_eps", 0.0, "layer_norm_eps must be positive"),
    ("layer_norm_eps", float("inf"), "layer_norm_eps must be positive and finite, got inf"),
    ("layer_norm_eps", float("nan"), "layer_norm_eps must be positive and finite, got nan"),
    ("initializer_range", -0.02, r"initializer_range \(the init's standard deviation\) must be >= 0"),
    ("initializer_range", float("inf"), "initializer_range .* finite"),
])
def test_bad_config_names_the_field(field, value, message):
    cfg = encoder_config(**{field: value})
    with pytest.raises(ValueError, match=message):
        validate_encoder_config(cfg)
    with pytest.raises(ValueError, match=message):
        Encoder(cfg)


def test_encoder_rejects_wrong_hidden_shape():
    with pytest.raises(ValueError, match=r"hidden_states must have shape \[batch, seq_len, 32\]"):
        Encoder(encoder_config())(torch.randn(2, 5, 16))


def test_unknown_attention_implementation():
    cfg = encoder_config(_attn_implementation="flash_attention_2")
    with pytest.raises(ValueError, match="attn_implementation must be one of"):
        Encoder(cfg)(torch.randn(1, 3, 32))


def test_remote_code_rewrites_core_imports(tmp_path):
    from hf_models.preln_bert.modeling_preln_bert import PreLNBertModel

    written = {p.name for p in write_remote_code(tmp_path, [PreLNBertModel])}
    assert {"modeling_preln_bert.py", "modeling.py", "encoder.py", "attention.py", "embeddings.py"} <= written
    text = (tmp_path / "modeling_preln_bert.py").read_text()
    assert "from ..core" not in text and "from .modeling import (" in text


def test_shared_heads_and_losses():
    from types import SimpleNamespace

    from hf_models.core import sequence_classification_loss, token_cross_entropy

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    config = SimpleNamespace(problem_type=None)
    loss = sequence_classification_loss(config, logits, torch.tensor([0, 1]))
    assert config.problem_type == "single_label_classification"
    expected = -(torch.log_softmax(logits, -1)[0, 0] + torch.log_softmax(logits, -1)[1, 1]) / 2
    torch.testing.assert_close(loss, expected)
    config = SimpleNamespace(problem_type=None)
    loss = sequence_classification_loss(config, logits[:, :1], torch.tensor([1.0, 3.0]))
    assert config.problem_type == "regression"
    torch.testing.assert_close(loss, torch.tensor(((2 - 1) ** 2 + (0 - 3) ** 2) / 2))
    config = SimpleNamespace(problem_type=None)
    sequence_classification_loss(config, logits, torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    assert config.problem_type == "multi_label_classification"
    ignored = token_cross_entropy(logits[None], torch.tensor([[0, -100]]))
    torch.testing.assert_close(ignored, -torch.log_softmax(logits, -1)[0, 0])


def test_task_models_tie_through_their_base_model_prefix():
    from hf_models.core.modeling import EncoderForMaskedLM
    from hf_models.preln_bert.modeling_preln_bert import PreLNBertModel, PreLNBertPreTrainedModel

    class Renamed(PreLNBertPreTrainedModel):
        base_model_prefix = "encoder_model"

    class RenamedForMaskedLM(Renamed, EncoderForMaskedLM):
        base_model_class = PreLNBertModel

    from hf_models import PreLNBertConfig

    model = RenamedForMaskedLM(PreLNBertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1,
                                               num_attention_heads=2, intermediate_size=16))
    assert RenamedForMaskedLM._tied_weights_keys == {
        "lm_head.decoder.weight": "encoder_model.embeddings.word_embeddings.weight"}
    assert model.lm_head.decoder.weight is model.encoder_model.embeddings.word_embeddings.weight


def test_positions_from_attention_mask():
    from hf_models.core.embeddings import positions_from_attention_mask

    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert positions_from_attention_mask(mask).tolist() == [[0, 1, 2, 2, 2], [0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


class _RecordingBias(nn.Module):
    """A positional bias that records the positions it gets: bias[h, i, j] = w_h (pos_j - pos_i)."""

    def __init__(self, heads: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, -0.5, heads))
        self.seen: list[torch.Tensor] = []

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        self.seen.append(position_ids)
        distance = (position_ids[:, None, :] - position_ids[:, :, None]).to(self.weight.dtype)
        return self.weight[None, :, None, None] * distance[:, None]


def _positional_model(**overrides):
    from hf_models import PreLNBertConfig
    from hf_models.core.modeling import EncoderModel

    config = PreLNBertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=48, max_position_embeddings=12, hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0, position_embedding_type="tupe_absolute",
                             **overrides)
    model = EncoderModel(config).eval()
    model.positional_bias = _RecordingBias(4)  # TUPE's term, swapped for one that records its positions
    return model


def test_a_positional_bias_replaces_the_input_positions_and_reaches_every_layer():
    model = _positional_model()
    assert model.embeddings.position_embeddings is None
    assert all(layer.attention.scale == (2 * 8) ** -0.5 for layer in model.encoder.layers)  # TUPE's 1/sqrt(2d)
    ids = torch.randint(2, 50, (3, 6))
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[2, 4:] = 0
    seen = []
    for layer in model.encoder.layers:
        layer.attention.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    with torch.no_grad():
        got = model(ids, attention_mask=mask).last_hidden_state
        assert len(seen) == 2 and seen[0] is seen[1]  # computed once, shared by the layers
        positional = model.positional_bias(torch.arange(6)[None])
        expected = model.encoder(model.embeddings(ids), combine_biases(padding_bias(mask, torch.float32),
                                                                       positional)).last_hidden_state
    torch.testing.assert_close(got, expected)


def test_positional_bias_positions_are_the_cores():
    from hf_models.core.embeddings import positions_from_attention_mask

    model = _positional_model()
    recorded = model.positional_bias.seen
    ids = torch.randint(2, 50, (2, 6))
    right = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    left = right.flip(-1)
    with torch.no_grad():
        model(ids)
        model(ids, attention_mask=right)  # no row starts with padding: one row of positions for the batch
        model(ids, attention_mask=left)  # counted over the real tokens, as the input's positions are
        model(ids, attention_mask=left, position_ids=torch.tensor([[3, 4, 5, 6, 7, 8]]))
    assert [p.tolist() for p in recorded[:2]] == [[list(range(6))]] * 2
    assert torch.equal(recorded[2], positions_from_attention_mask(left))
    assert recorded[3].tolist() == [[3, 4, 5, 6, 7, 8]]
    # the core's checks serve the positional model too
    with pytest.raises(ValueError, match="sequence length 13 exceeds max_position_embeddings=12"):
        model(torch.ones(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match=r"position_ids must lie in \[0, max_position_embeddings=12\)"):
        model(ids, position_ids=torch.tensor([[0, 1, 2, 3, 4, 12]]))
    with pytest.raises(ValueError, match=r"position_ids must have shape \[batch\|1, 6\], got \(6,\)"):
        model(ids, position_ids=torch.arange(6))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(2, 6\)"):
        model(ids, attention_mask=right[:, :5])


def test_without_a_positional_bias_the_input_carries_the_positions():
    from hf_models import PreLNBertConfig, PreLNBertModel

    model = PreLNBertModel(PreLNBertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                           num_attention_heads=4, intermediate_size=48))
    assert model.positional_bias is None and model.embeddings.position_embeddings is not None
    assert positional_attention_bias(model.positional_bias, None, torch.ones(1, 3), torch.zeros(1, 3, 32)) is None


MODEL_CONFIGS = ["PreLNBertConfig", "TupeConfig", "McBertConfig", "TnfConfig"]


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_model_configs_extend_the_cores_config(name):
    import dataclasses

    import hf_models
    from hf_models.core import EncoderConfig

    cls = getattr(hf_models, name)
    shared = {field.name: field.default for field in dataclasses.fields(EncoderConfig)}
    own = {field.name: field.default for field in dataclasses.fields(cls)}
    assert issubclass(cls, EncoderConfig) and shared.keys() <= own.keys()
    # a model declares only its own fields and the defaults it changes (Pre-LN BERT and TNF: "pre" / "post")
    # (TUPE: position_embedding_type, None = from its earlier position_mode field, else TUPE-A)
    changed = {"layer_norm_position", "position_embedding_type"}
    redeclared = set(vars(cls).get("__annotations__", {})) & shared.keys()
    assert redeclared <= changed
    assert {k: v for k, v in own.items() if k in shared and k not in changed} == {
        k: v for k, v in shared.items() if k not in changed}
    # the core's validation runs for every model config
    with pytest.raises(ValueError, match=r"hidden_size \(100\) must be divisible by num_attention_heads \(12\)"):
        cls(hidden_size=100)
    with pytest.raises(ValueError, match=r"pad_token_id must be None or in \[0, vocab_size=10\)"):
        cls(vocab_size=10, pad_token_id=10)
    with pytest.warns(UserWarning, match="pad_token_id=-1 is outside the vocabulary"):
        assert cls(pad_token_id=-1).pad_token_id is None


def test_model_token_ids_are_checked_in_the_vocabulary():
    from hf_models import McBertConfig

    assert McBertConfig.token_id_fields == ("pad_token_id", "mask_token_id", "neither_token_id")
    with pytest.raises(ValueError, match=r"neither_token_id must be None or in \[0, vocab_size=50\)"):
        McBertConfig(vocab_size=50, mask_token_id=4, neither_token_id=50)


def test_remote_code_carries_the_core_config(tmp_path):
    from hf_models.tupe.configuration_tupe import TupeConfig

    written = {p.name for p in write_remote_code(tmp_path, [TupeConfig])}
    assert {"configuration_tupe.py", "config.py", "activations.py"} <= written
    assert "from .config import EncoderConfig" in (tmp_path / "configuration_tupe.py").read_text()


_TOKENIZER_AFTER_REMOTE_MODEL = WITHOUT_GRAFTKIT + """
from transformers import AutoModelForMaskedLM, AutoTokenizer
model = AutoModelForMaskedLM.from_pretrained(sys.argv[1], trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])  # a user's plain call: no trust_remote_code
print(type(model).__name__, tokenizer("the list")["input_ids"])
"""


@pytest.mark.slow
def test_a_plain_auto_tokenizer_call_after_a_remote_code_load_neither_prompts_nor_warns(tmp_path):
    # issue 24: AutoTokenizer reads the model config first; the remote config's model type was unknown to
    # AutoConfig, so it prompted "Do you wish to run the custom code?" and fell back to a bare config
    # ("model of type `preln_bert` to instantiate a model of type ``")
    import os
    import subprocess
    import sys

    from graftkit.data.text import WordVocab, english_sentences
    from hf_models import PreLNBertConfig, PreLNBertForMaskedLM

    tokenizer = WordVocab.build(english_sentences()[:40]).to_hf_tokenizer(model_max_length=16)
    PreLNBertForMaskedLM(PreLNBertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    (tmp_path / "load.py").write_text(_TOKENIZER_AFTER_REMOTE_MODEL)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    result = subprocess.run([sys.executable, str(tmp_path / "load.py"), str(tmp_path / "m")], cwd=tmp_path, env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True)
    output = result.stdout + result.stderr
    assert "PreLNBertForMaskedLM [" in result.stdout
    assert "Do you wish to run the custom code" not in output and "to instantiate a model of type" not in output


@pytest.mark.parametrize("model_type", ["preln_bert", "tupe", "tnf", "mc_bert"])
def test_config_overrides_set_every_field_on_every_model_type(model_type):
    """run_mlm.py's --config_overrides on each model type: fields whose value is None (transformers' own parser
    reads the type from the value and refuses them) are read by their declared type; a bad value names the
    field and leaves the config unchanged."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config = CONFIG_MAPPING[model_type](hidden_size=48, num_attention_heads=3, intermediate_size=96)
    config.update_from_string("classifier_dropout=0.25,problem_type=regression,num_hidden_layers=3")
    assert (config.classifier_dropout, config.problem_type, config.num_hidden_layers) == (0.25, "regression", 3)
    # dict and list fields as JSON, whose own commas do not split the overrides
    config.update_from_string('id2label={"0": "neg", "1": "pos"},label2id={"neg": 0, "pos": 1},'
                              'architectures=["Custom"],num_hidden_layers=2')
    assert (config.id2label, config.label2id, config.num_labels) == ({0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}, 2)
    assert (config.architectures, config.num_hidden_layers) == (["Custom"], 2)
    before = config.to_dict()
    for bad in ("id2label=[1, 2]", 'id2label={"0": "neg"', 'architectures={"a": 1}'):
        with pytest.raises(ValueError, match=f"{bad.partition('=')[0]} takes"):
            config.update_from_string(bad)
    with pytest.raises(ValueError, match="must be divisible by num_attention_heads"):
        config.update_from_string("num_hidden_layers=1,hidden_size=50")
    with pytest.raises(ValueError, match="classifier_dropout takes"):
        config.update_from_string("classifier_dropout=high")
    assert config.to_dict() == before
