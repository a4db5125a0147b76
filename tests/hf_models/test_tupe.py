"""TUPE as an HF model type: the positional term computed by hand and against T5's bucketing, shared by every
layer, [CLS] untying, gradients, padding, eager == sdpa, output_attentions, save/load, trust_remote_code
without graftkit, and training with transformers.Trainer."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from loopback import WITHOUT_GRAFTKIT, train_with_trainer_on_two_ranks

from hf_models import (
    TupeConfig,
    TupeForMaskedLM,
    TupeForSequenceClassification,
    TupeForTokenClassification,
    TupeModel,
)
from hf_models.core.modeling import positional_attention_bias
from hf_models.tupe import TupePositionalBias, relative_position_bucket

TINY = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
HEADS = [TupeModel, TupeForMaskedLM, TupeForSequenceClassification, TupeForTokenClassification]
MODES = ["absolute", "relative"]


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (3, 10), generator=gen)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[2, 6:] = 0
    ids[2, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _model(cls=TupeModel, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    model = cls(TupeConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():  # random, non-trivial positional parameters (HF init leaves LN at 1/0)
        for param in model.base_model.positional_bias.parameters():
            param.normal_(0, 0.5)
    return model


def _one_head_module(position_mode: str = "absolute", untie_cls: bool = True) -> TupePositionalBias:
    """hidden 2, 1 head (d = 2, scale 1/sqrt(4) = 1/2), 3 positions, weights chosen for hand computation."""
    module = TupePositionalBias(2, 1, 3, position_mode=position_mode, untie_cls=untie_cls, num_buckets=4,
                                max_distance=8, layer_norm_eps=1e-12)
    with torch.no_grad():
        # LN of a 2-vector [a, b] is [1, -1] when a > b, [-1, 1] when a < b (LN weight 1, bias 0)
        module.embeddings.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0], [-1.0, 0.0]]))
        module.query.weight.copy_(torch.eye(2))
        module.query.bias.copy_(torch.tensor([0.0, 1.0]))
        module.key.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
        module.key.bias.zero_()
        if module.relative_bias is not None:
            module.relative_bias.weight.copy_(torch.tensor([[10.0], [20.0], [30.0], [40.0], [50.0]]))
    return module


def test_hand_computed_one_head_case():
    # LN rows r0..r3 = [1,-1], [-1,1], [1,-1], [-1,1]; q = r + [0,1]; k = [2 r_0, r_1]; v(a,b) = q_a·k_b / 2
    # q: [1,0], [-1,2], [1,0], [-1,2]   k: [2,-1], [-2,1], [2,-1], [-2,1]
    # θ1 = v(0,0) = 1, θ2 = v(1,1) = 2; token t reads row t+1
    positions = torch.arange(3)[None]
    plain = torch.tensor([[2.0, -2.0, 2.0], [-1.0, 1.0, -1.0], [2.0, -2.0, 2.0]])
    untied = torch.tensor([[1.0, 1.0, 1.0], [2.0, 1.0, -1.0], [2.0, -2.0, 2.0]])
    torch.testing.assert_close(_one_head_module(untie_cls=False)(positions)[0, 0], plain)
    torch.testing.assert_close(_one_head_module()(positions)[0, 0], untied)
    # TUPE-R, 4 buckets: distance 0 -> 0, key before query -> 1, key after -> 3; [CLS] column -> 4, row -> 2
    # (the bucket table b = 10, 20, 30, 40, 50)
    relative = torch.tensor([[30.0, 30.0, 30.0], [50.0, 10.0, 40.0], [50.0, 20.0, 10.0]])
    torch.testing.assert_close(_one_head_module("relative")(positions)[0, 0], untied + relative)
    plain_relative = torch.tensor([[10.0, 40.0, 40.0], [20.0, 10.0, 40.0], [20.0, 20.0, 10.0]])
    torch.testing.assert_close(_one_head_module("relative", untie_cls=False)(positions)[0, 0],
                               plain + plain_relative)


def _reference_layout_bias(module: TupePositionalBias, length: int) -> torch.Tensor:
    """The reference's computation order: LN over table rows 0..L, one [D, 2D] projection reshaped to
    (L+1, 2, H, d), bmm, θ1 = [0,0], θ2 = [1,1], slice [1:, 1:], column 0 := θ2, then row 0 := θ1."""
    heads, d = module.num_heads, module.head_dim
    projection_weight = torch.cat([module.query.weight, module.key.weight])
    projection_bias = torch.cat([module.query.bias, module.key.bias])
    rows = module.layer_norm(module.embeddings.weight[:length + 1])
    pos_q, pos_k = torch.nn.functional.linear(rows, projection_weight, projection_bias).reshape(
        length + 1, 2, heads, d).permute(1, 2, 0, 3)
    full = torch.bmm(pos_q * (2 * d) ** -0.5, pos_k.transpose(1, 2))
    theta1, theta2 = full[:, 0, 0].clone(), full[:, 1, 1].clone()
    bias = full[:, 1:, 1:].clone()
    bias[:, :, 0] = theta2[:, None]
    bias[:, 0, :] = theta1[:, None]
    return bias


def test_matches_the_reference_layout():
    module = _model(max_position_embeddings=12).positional_bias
    with torch.no_grad():
        torch.testing.assert_close(module(torch.arange(12)[None])[0], _reference_layout_bias(module, 12))
        torch.testing.assert_close(module(torch.arange(5)[None])[0], _reference_layout_bias(module, 5))


@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (16, 40), (4, 8)])
def test_buckets_equal_t5(num_buckets, max_distance):
    from transformers.models.t5.modeling_t5 import T5Attention

    relative = torch.arange(-700, 701)
    expected = T5Attention._relative_position_bucket(relative, bidirectional=True, num_buckets=num_buckets,
                                                     max_distance=max_distance)
    assert torch.equal(relative_position_bucket(relative, num_buckets, max_distance), expected)
    # the reference's dedicated [CLS]->others entry is never produced by the bucketing
    assert (expected != num_buckets // 2).all()


@pytest.mark.parametrize("mode", MODES)
def test_cls_row_and_column_are_constant_per_head(mode):
    module = _model(position_mode=mode).positional_bias
    with torch.no_grad():
        bias = module(torch.arange(16)[None])[0]
    row, column = bias[:, 0, :], bias[:, 1:, 0]
    assert torch.equal(row, row[:, :1].expand_as(row)) and torch.equal(column, column[:, :1].expand_as(column))
    assert row[:, 0].unique().numel() == 4 and column[:, 0].unique().numel() == 4  # one value per head
    assert not torch.allclose(bias[:, 1:, 1:], bias[:, 1:, 1:].mean(), atol=1e-3)  # the rest varies


def test_untie_cls_false_is_the_plain_untied_term():
    module = _model(untie_cls=False).positional_bias
    with torch.no_grad():
        rows = module.layer_norm(module.embeddings.weight[1:11])
        q = module.query(rows).view(10, 4, 8).transpose(0, 1)
        k = module.key(rows).view(10, 4, 8).transpose(0, 1)
        torch.testing.assert_close(module(torch.arange(10)[None])[0], q @ k.transpose(1, 2) / 4.0)


def test_the_same_bias_reaches_every_layer_computed_once():
    model = _model(position_mode="relative", num_hidden_layers=3)
    seen, calls = [], []
    for layer in model.encoder.layers:
        layer.attention.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    model.positional_bias.register_forward_hook(lambda module, args, out: calls.append(out))
    model(**batch())
    assert len(calls) == 1 and len(seen) == 3
    assert all(bias is seen[0] for bias in seen)
    positional = calls[0]
    real = batch()["attention_mask"][:, None, None, :].bool().expand(3, 4, 10, 10)
    torch.testing.assert_close(seen[0].expand(3, 4, 10, 10)[real], positional.expand(3, 4, 10, 10)[real])


@pytest.mark.parametrize("mode", MODES)
def test_gradients_reach_every_positional_parameter(mode):
    model = _model(TupeForMaskedLM, position_mode=mode)
    model(**batch(), labels=batch()["input_ids"]).loss.backward()
    positional = model.tupe.positional_bias
    table = positional.embeddings.weight.grad
    assert table[0].abs().sum() > 0  # θ1's own row
    assert table[1:11].abs().sum(-1).gt(0).all()  # rows of the positions used (row 1 also gives θ2)
    assert table[11:].abs().sum() == 0  # rows beyond the sequence are unused
    for param in (positional.query.weight, positional.query.bias, positional.key.weight,
                  positional.layer_norm.weight):
        assert param.grad.abs().sum() > 0
    if mode == "relative":
        grad = positional.relative_bias.weight.grad
        assert grad[16].abs().sum() > 0 and grad[32].abs().sum() > 0  # the two dedicated [CLS] entries


@pytest.mark.parametrize("mode", MODES)
def test_padding_does_not_change_real_tokens(mode):
    model = _model(position_mode=mode)
    inputs = batch()
    alone = model(inputs["input_ids"][2:, :6]).last_hidden_state
    right = model(**inputs).last_hidden_state[2:, :6]
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=1e-5)
    # left padding: positions counted over the real tokens, so the first real token is [CLS] at position 0
    left_ids = torch.cat([torch.zeros(1, 4, dtype=torch.long), inputs["input_ids"][2:, :6]], dim=1)
    left_mask = torch.cat([torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 6, dtype=torch.long)], dim=1)
    left = model(torch.cat([left_ids, inputs["input_ids"][:1]]),
                 attention_mask=torch.cat([left_mask, torch.ones(1, 10, dtype=torch.long)])).last_hidden_state
    torch.testing.assert_close(left[0, 4:], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(left[1], model(inputs["input_ids"][:1]).last_hidden_state[0], atol=1e-5,
                               rtol=1e-5)


def test_too_long_sequence_and_bad_positions_are_clear_errors():
    model = _model()
    with pytest.raises(ValueError, match="sequence length 17 exceeds max_position_embeddings=16"):
        model(torch.ones(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="position_ids must lie in"):
        model(torch.ones(1, 4, dtype=torch.long), position_ids=torch.tensor([[0, 1, 2, 16]]))
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4))


def test_explicit_position_ids_are_used():
    model = _model(position_mode="relative")
    ids = batch()["input_ids"][:1]
    torch.testing.assert_close(model(ids, position_ids=torch.arange(10)[None]).last_hidden_state,
                               model(ids).last_hidden_state)
    shifted = model(ids, position_ids=torch.arange(10)[None] + 3).last_hidden_state
    assert not torch.allclose(shifted, model(ids).last_hidden_state, atol=1e-3)


@pytest.mark.parametrize("mode", MODES)
def test_eager_and_sdpa_agree(mode):
    model = _model(TupeForMaskedLM, position_mode=mode)
    outputs = {}
    for implementation in ("eager", "sdpa"):
        model.config._attn_implementation = implementation
        model.zero_grad()
        out = model(**batch(), labels=batch()["input_ids"])
        out.loss.backward()
        outputs[implementation] = (out.logits, model.tupe.positional_bias.embeddings.weight.grad.clone())
    torch.testing.assert_close(outputs["eager"][0], outputs["sdpa"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs["eager"][1], outputs["sdpa"][1], atol=1e-5, rtol=1e-5)


def test_output_attentions_include_the_positional_term():
    model = _model(position_mode="relative")
    with torch.no_grad():  # content logits of the first layer become 0: its probabilities are the bias alone
        model.encoder.layers[0].attention.query.weight.zero_()
        model.encoder.layers[0].attention.query.bias.zero_()
        inputs = batch()
        attentions = model(**inputs, output_attentions=True).attentions
        positional = model.positional_bias(torch.arange(10)[None])
        padding = (1.0 - inputs["attention_mask"][:, None, None, :].float()) * torch.finfo(torch.float32).min
    assert len(attentions) == 2 and attentions[0].shape == (3, 4, 10, 10)
    torch.testing.assert_close(attentions[0], torch.softmax(positional + padding, dim=-1))


def test_config_validation_names_the_field():
    assert TupeConfig().layer_norm_position == "post" and TupeConfig().model_type == "tupe"
    with pytest.raises(ValueError, match="position_mode"):
        TupeConfig(position_mode="rotary")
    with pytest.raises(ValueError, match="relative_attention_num_buckets"):
        TupeConfig(position_mode="relative", relative_attention_num_buckets=31)
    with pytest.raises(ValueError, match="relative_attention_max_distance"):
        TupeConfig(position_mode="relative", relative_attention_num_buckets=32, relative_attention_max_distance=8)
    with pytest.raises(ValueError, match="hidden_size .* num_attention_heads"):
        TupeConfig(hidden_size=100, num_attention_heads=12)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        TupeConfig(max_position_embeddings=0)


def test_registered_with_auto_classes():
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

    config = AutoConfig.for_model("tupe", **TINY)
    assert isinstance(config, TupeConfig)
    assert type(AutoModel.from_config(config)) is TupeModel
    assert type(AutoModelForMaskedLM.from_config(config)) is TupeForMaskedLM
    assert type(AutoModelForSequenceClassification.from_config(config)) is TupeForSequenceClassification


def test_pre_ln_is_selectable():
    model = _model(layer_norm_position="pre")
    assert hasattr(model.encoder, "final_layer_norm") and not hasattr(_model().encoder, "final_layer_norm")
    assert model(**batch()).last_hidden_state.isfinite().all()


@pytest.mark.parametrize("cls", HEADS)
def test_save_and_load_round_trip(tmp_path, cls):
    model = _model(cls, position_mode="relative", num_labels=3)
    expected = model(**batch())[0]
    model.save_pretrained(tmp_path)
    assert {"model.safetensors", "modeling_tupe.py", "positional.py"} <= {p.name for p in tmp_path.iterdir()}
    for implementation in ("sdpa", "eager"):
        loaded = cls.from_pretrained(tmp_path, attn_implementation=implementation).eval()
        torch.testing.assert_close(loaded(**batch())[0], expected, atol=1e-5, rtol=1e-5)
    if cls is TupeForMaskedLM:
        assert loaded.lm_head.decoder.weight is loaded.tupe.embeddings.word_embeddings.weight


_REMOTE_LOAD = WITHOUT_GRAFTKIT + textwrap.dedent("""
    import torch
    from transformers import AutoModelForMaskedLM
    model = AutoModelForMaskedLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    assert not any(m.startswith(("graftkit", "hf_models")) for m in sys.modules), "graftkit was imported"
    torch.save({"module": type(model).__module__, "logits": model(**torch.load(sys.argv[2])).logits}, sys.argv[3])
""")


@pytest.mark.slow
def test_loads_with_trust_remote_code_without_graftkit(tmp_path):
    model = _model(TupeForMaskedLM, position_mode="relative")
    model.save_pretrained(tmp_path / "model")
    torch.save(batch(), tmp_path / "batch.pt")
    (tmp_path / "load.py").write_text(_REMOTE_LOAD)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    subprocess.run([sys.executable, str(tmp_path / "load.py"), str(tmp_path / "model"), str(tmp_path / "batch.pt"),
                    str(tmp_path / "out.pt")], cwd=tmp_path, env=env, check=True, capture_output=True, text=True)
    result = torch.load(tmp_path / "out.pt")
    assert result["module"].startswith("transformers_modules.")
    torch.testing.assert_close(result["logits"], model(**batch()).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_trains_with_hf_trainer_and_mlm_collator(tmp_path, mode):
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from graftkit.data.text import WordVocab, english_sentences
    from graftkit.runtime import single_thread

    sentences = english_sentences()[:64]
    tokenizer = WordVocab.build(sentences).to_hf_tokenizer(model_max_length=16)
    rows = [{"input_ids": ids} for ids in tokenizer(sentences, truncation=True, max_length=16)["input_ids"]]
    torch.manual_seed(0)
    model = TupeForMaskedLM(TupeConfig(**{**TINY, "vocab_size": len(tokenizer)}, position_mode=mode,
                                       pad_token_id=tokenizer.pad_token_id))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
    probe = collator(rows[:32])

    def probe_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(model(**probe).loss)

    before = probe_loss()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=20, per_device_train_batch_size=16,
                             learning_rate=3e-3, warmup_steps=0, report_to=[], save_strategy="no",
                             use_cpu=True, disable_tqdm=True, seed=0)
    with single_thread():
        Trainer(model=model, args=args, train_dataset=rows, data_collator=collator).train()
    after = probe_loss()
    assert after < before - 0.3, (before, after)


@pytest.mark.parametrize("mode", MODES)
def test_positional_bias_and_positions_trace_in_one_graph(mode):
    model = _model(position_mode=mode)

    def bias(mask: torch.Tensor) -> torch.Tensor:  # the compiled path always counts positions from the mask
        return positional_attention_bias(model.positional_bias, None, mask, torch.zeros(*mask.shape, 32))

    mask = torch.ones(2, 6, dtype=torch.long)
    mask[0, :2] = 0  # left padding
    with torch.no_grad():
        compiled = torch.compile(bias, backend="eager", fullgraph=True)(mask)
        torch.testing.assert_close(compiled, bias(mask))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("cls", HEADS)
def test_export_and_compile_give_the_eager_outputs(cls, mode):
    torch.manual_seed(0)
    model = cls(TupeConfig(**TINY, position_mode=mode, num_labels=3)).eval()
    data = batch()
    data["attention_mask"][1, :3] = 0  # one left-padded row: positions come from the mask
    with torch.no_grad():
        expected = model(**data)
        exported = torch.export.export(model, (), kwargs=data).module()(**data)
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="eager")(**data)
    for got in (exported, compiled):
        torch.testing.assert_close(got[0], expected[0], atol=1e-6, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("position_mode", ["absolute", "relative"])
def test_ddp_through_hf_trainer_trains_every_parameter_and_keeps_ranks_identical(tmp_path, position_mode):
    """HF Trainer on 2 gloo ranks without DDP's search for unused parameters (so every parameter takes part in
    every step): both ranks end identical, and the positional term (p, U^Q, U^K, TUPE-R's buckets) trained."""
    states = train_with_trainer_on_two_ranks(tmp_path, "AutoModelForMaskedLM", "tupe", position_mode=position_mode)
    trained = ["embeddings.weight", "query.weight", "key.weight"] + (["relative_bias.weight"]
                                                                    if position_mode == "relative" else [])
    for name in (f"tupe.positional_bias.{part}" for part in trained):
        assert not torch.equal(states["final"][name], states["initial"][name]), name


@pytest.mark.parametrize("mode", MODES)
def test_a_rows_positions_do_not_depend_on_the_other_rows(mode):
    # issue 24: a row with a 0 inside its mask got 0..n-1 beside right-padded rows and mask-counted positions
    # beside a left-padded one (eager only), so its output moved with its neighbours and disagreed with compile
    model = _model(position_mode=mode)
    ids = batch()["input_ids"][:2]
    hole = torch.tensor([1, 1, 1, 0, 0, 1, 1, 1, 1, 1])
    beside_right = torch.stack([hole, torch.tensor([1] * 7 + [0] * 3)])
    beside_left = torch.stack([hole, torch.tensor([0] * 3 + [1] * 7)])
    real = hole.bool()
    with torch.no_grad():
        alone = model(ids[:1], attention_mask=hole[None]).last_hidden_state[0, real]
        right = model(ids, attention_mask=beside_right).last_hidden_state[0, real]
        left = model(ids, attention_mask=beside_left).last_hidden_state[0, real]
        compiled = torch.compile(model, fullgraph=True, backend="eager")(
            ids, attention_mask=beside_right).last_hidden_state[0, real]
    torch.testing.assert_close(right, left, atol=0, rtol=0)
    torch.testing.assert_close(alone, left, atol=1e-6, rtol=1e-6)  # batch of 1: other float rounding
    torch.testing.assert_close(compiled, right, atol=1e-6, rtol=1e-6)


def test_right_padding_keeps_one_positional_bias_for_the_batch():
    # the fast path: rows of real tokens then padding share 0..seq-1 (the mask-counted positions on real tokens)
    model = _model()
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    with torch.no_grad():
        shared = positional_attention_bias(model.positional_bias, None, mask, torch.zeros(2, 4, 32))
        counted = positional_attention_bias(model.positional_bias, None, mask[[1, 0]].flip(-1), torch.zeros(2, 4, 32))
    assert shared.shape == (1, 4, 4, 4) and counted.shape == (2, 4, 4, 4)
    torch.testing.assert_close(shared[0, :, :2, :2], counted[0, :, 2:, 2:], atol=0, rtol=0)


@pytest.mark.parametrize("override", ["position_embedding_type=tupe_relative", "position_mode=relative"])
def test_config_overrides_of_either_position_field_move_both(tmp_path, override):
    """run_mlm.py --model_type tupe --config_overrides ...: naming one of the two fields moves the other, so the
    saved folder loads (it failed with 'position_mode contradicts position_embedding_type')."""
    config = TupeConfig()
    config.update_from_string(override)
    assert (config.position_mode, config.position_embedding_type) == ("relative", "tupe_relative")
    config.save_pretrained(tmp_path)
    assert TupeConfig.from_pretrained(tmp_path).position_embedding_type == "tupe_relative"


def test_config_overrides_that_contradict_leave_the_config_unchanged():
    config = TupeConfig()
    with pytest.raises(ValueError, match="contradicts"):
        config.update_from_string("position_mode=relative,position_embedding_type=tupe_absolute")
    assert (config.position_mode, config.position_embedding_type) == ("absolute", "tupe_absolute")
