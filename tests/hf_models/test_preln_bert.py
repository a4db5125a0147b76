"""preln_bert as an HF model type: config checks, Auto* registration, heads, tied MLM decoder, safetensors
round trip, trust_remote_code without graftkit, HF tokenizers, and training with transformers.Trainer."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from loopback import WITHOUT_GRAFTKIT, train_with_trainer_on_two_ranks

from hf_models import (
    PreLNBertConfig,
    PreLNBertForMaskedLM,
    PreLNBertForSequenceClassification,
    PreLNBertForTokenClassification,
    PreLNBertModel,
)

TINY = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=16)
HEADS = [PreLNBertModel, PreLNBertForMaskedLM, PreLNBertForSequenceClassification,
         PreLNBertForTokenClassification]


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (3, 10), generator=gen)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[2, 6:] = 0
    ids[2, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_config_defaults_and_validation():
    config = PreLNBertConfig()
    assert config.layer_norm_position == "pre" and config.model_type == "preln_bert"
    with pytest.raises(ValueError, match="hidden_size .* num_attention_heads"):
        PreLNBertConfig(hidden_size=100, num_attention_heads=12)
    with pytest.raises(ValueError, match="layer_norm_position"):
        PreLNBertConfig(layer_norm_position="sandwich")
    with pytest.raises(ValueError, match="pad_token_id"):
        PreLNBertConfig(vocab_size=10, pad_token_id=10)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        PreLNBertConfig(max_position_embeddings=0)


def test_config_rejects_unusable_numbers():
    with pytest.raises(ValueError, match="layer_norm_eps must be positive and finite"):
        PreLNBertConfig(layer_norm_eps=float("inf"))
    with pytest.raises(ValueError, match="initializer_range"):
        PreLNBertConfig(initializer_range=-0.02)


def test_hub_config_with_pad_token_id_minus_one_loads_as_no_padding(tmp_path):
    from transformers import AutoConfig

    with pytest.warns(UserWarning, match="pad_token_id=-1 .* no padding token"):
        config = PreLNBertConfig(**TINY, pad_token_id=-1)
    assert config.pad_token_id is None
    PreLNBertConfig(**TINY).save_pretrained(tmp_path)
    text = (tmp_path / "config.json").read_text()
    (tmp_path / "config.json").write_text(text.replace('"pad_token_id": 0', '"pad_token_id": -1'))
    with pytest.warns(UserWarning, match="pad_token_id=-1"):
        loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, PreLNBertConfig) and loaded.pad_token_id is None
    model = PreLNBertModel(loaded)
    assert model.embeddings.word_embeddings.padding_idx is None  # not torch's "-1 = the last row"
    assert model.embeddings.word_embeddings.weight[-1].abs().sum() > 0


def test_registered_with_auto_classes():
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    config = AutoConfig.for_model("preln_bert", **TINY)
    assert isinstance(config, PreLNBertConfig)
    for auto, cls in [(AutoModel, PreLNBertModel), (AutoModelForMaskedLM, PreLNBertForMaskedLM),
                      (AutoModelForSequenceClassification, PreLNBertForSequenceClassification),
                      (AutoModelForTokenClassification, PreLNBertForTokenClassification)]:
        assert type(auto.from_config(config)) is cls


def test_hf_models_does_not_import_fairseq():
    code = "import sys, hf_models; print('fairseq' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_pre_and_post_ln_models():
    torch.manual_seed(0)
    pre = PreLNBertModel(PreLNBertConfig(**TINY)).eval()
    post = PreLNBertModel(PreLNBertConfig(**TINY, layer_norm_position="post")).eval()
    assert hasattr(pre.encoder, "final_layer_norm") and not hasattr(post.encoder, "final_layer_norm")
    out = pre(**batch(), output_hidden_states=True, output_attentions=True)
    assert out.last_hidden_state.shape == (3, 10, 32) and out.pooler_output.shape == (3, 32)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    assert out.attentions[0][2, :, :, 6:].abs().max() == 0  # padded keys get no attention
    as_tuple = pre(**batch(), return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], out.last_hidden_state)


def test_eager_and_sdpa_agree():
    torch.manual_seed(0)
    model = PreLNBertForMaskedLM(PreLNBertConfig(**TINY)).eval()
    assert model.config._attn_implementation == "sdpa"
    sdpa = model(**batch()).logits
    model.set_attn_implementation("eager")
    torch.testing.assert_close(model(**batch()).logits, sdpa, atol=1e-5, rtol=1e-5)


def test_inputs_embeds_position_ids_and_dtype():
    torch.manual_seed(0)
    model = PreLNBertModel(PreLNBertConfig(**TINY)).eval()
    data = batch()
    expected = model(**data).last_hidden_state
    embeds = model.get_input_embeddings()(data["input_ids"])
    torch.testing.assert_close(model(inputs_embeds=embeds, attention_mask=data["attention_mask"]).last_hidden_state,
                               expected)
    shifted = model(**data, position_ids=torch.arange(2, 12)[None]).last_hidden_state
    assert not torch.allclose(shifted, expected)
    half = model.to(torch.bfloat16)(**data).last_hidden_state  # the padding bias follows the model's dtype
    assert half.dtype == torch.bfloat16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), expected, atol=0.1, rtol=0.05)


def test_padding_does_not_change_real_tokens():
    torch.manual_seed(0)
    model = PreLNBertModel(PreLNBertConfig(**TINY)).eval()
    ids = torch.randint(5, 60, (1, 6))
    short = model(ids).last_hidden_state
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    long = model(padded, attention_mask=(padded != 0).long()).last_hidden_state
    torch.testing.assert_close(long[:, :6], short, atol=1e-5, rtol=1e-5)


def test_left_and_right_padding_give_the_same_outputs_on_real_tokens():
    torch.manual_seed(0)
    model = PreLNBertForTokenClassification(PreLNBertConfig(**TINY, num_labels=3)).eval()
    ids = torch.randint(5, 60, (1, 6))
    pads = torch.zeros(1, 4, dtype=torch.long)
    right, left = torch.cat([ids, pads], dim=1), torch.cat([pads, ids], dim=1)
    with torch.no_grad():
        right_out = model(right, attention_mask=right.ne(0).long()).logits
        left_out = model(left, attention_mask=left.ne(0).long()).logits
    torch.testing.assert_close(left_out[:, 4:], right_out[:, :6], atol=1e-5, rtol=1e-5)


def test_bad_ids_and_empty_input_are_clear_errors():
    model = PreLNBertForSequenceClassification(PreLNBertConfig(**TINY, num_labels=2)).eval()
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match=r"token_type_ids must lie in \[0, type_vocab_size=2\)"):
        model(ids, token_type_ids=torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match=r"position_ids must lie in \[0, max_position_embeddings=16\)"):
        model(ids, position_ids=torch.tensor([[-1, 0, 1]]))
    for cls in HEADS:  # a [batch, 0] input: no tokens to encode or pool
        with pytest.raises(ValueError, match="the input has no tokens"):
            cls(PreLNBertConfig(**TINY))(torch.zeros(2, 0, dtype=torch.long))


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = PreLNBertForMaskedLM(PreLNBertConfig(**TINY)).train()  # dropout on: its masks must be replayed
    data = batch()
    labels = data["input_ids"].masked_fill(data["attention_mask"] == 0, -100)
    layer_calls = []
    for layer in model.bert.encoder.layers:  # counts each layer's feed-forward runs, recomputations included
        ffn = layer.feed_forward
        ffn.forward = lambda *args, _forward=ffn.forward: layer_calls.append(1) or _forward(*args)

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(1)
        model(**data, labels=labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients()
    assert len(layer_calls) == 2
    with warnings.catch_warnings():  # transformers 5 renames it activation_checkpointing_enable; both work
        warnings.simplefilter("ignore", FutureWarning)
        model.gradient_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.bert.encoder.layers)
    checkpointed = gradients()
    assert len(layer_calls) == 2 + 4  # each layer ran again in the backward pass
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)
    model.activation_checkpointing_disable()
    assert not any(layer.gradient_checkpointing for layer in model.bert.encoder.layers)
    model.activation_checkpointing_enable(every_n_layers=2)  # HF's option: only layer 0 recomputes
    layer_calls.clear()
    gradients()
    assert len(layer_calls) == 2 + 1


@pytest.mark.parametrize("cls", HEADS)
def test_export_and_compile_give_the_eager_outputs(cls):
    torch.manual_seed(0)
    model = cls(PreLNBertConfig(**TINY, num_labels=3)).eval()
    data = batch()
    data["attention_mask"][1, :3] = 0  # one left-padded row: positions come from the mask
    with torch.no_grad():
        expected = model(**data)
        exported = torch.export.export(model, (), kwargs=data).module()(**data)
        torch._dynamo.reset()
        # backend="eager": dynamo's graph capture is what a data-dependent branch breaks; inductor adds minutes
        compiled = torch.compile(model, fullgraph=True, backend="eager")(**data)
    for got in (exported, compiled):
        assert type(got) is type(expected)
        torch.testing.assert_close(got[0], expected[0], atol=1e-6, rtol=1e-6)
        if cls is PreLNBertModel:
            torch.testing.assert_close(got.pooler_output, expected.pooler_output, atol=1e-6, rtol=1e-6)


@pytest.mark.slow
def test_strict_export_with_dynamic_shapes_and_aot_compile():
    from torch.export import Dim

    torch.manual_seed(0)
    model = PreLNBertForMaskedLM(PreLNBertConfig(**TINY)).eval()
    data = batch()
    dynamic = {name: {0: Dim.AUTO, 1: Dim.AUTO} for name in data}
    program = torch.export.export(model, (), kwargs=data, dynamic_shapes=dynamic, strict=True)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    ids = torch.randint(5, 60, (2, 7))
    for mask in (torch.ones(2, 7, dtype=torch.long), torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1] * 7])):
        with torch.no_grad():
            expected = model(ids, attention_mask=mask).logits
            torch.testing.assert_close(program.module()(input_ids=ids, attention_mask=mask).logits, expected,
                                       atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(compiled(ids, attention_mask=mask).logits, expected, atol=1e-6, rtol=1e-6)


def test_masked_lm_head_is_tied_and_loss_is_cross_entropy():
    torch.manual_seed(0)
    model = PreLNBertForMaskedLM(PreLNBertConfig(**TINY))
    assert model.lm_head.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model.get_output_embeddings() is model.lm_head.decoder
    data = batch()
    labels = torch.full_like(data["input_ids"], -100)
    labels[:, 2] = data["input_ids"][:, 2]
    out = model(**data, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[:, 2], labels[:, 2])
    torch.testing.assert_close(out.loss, expected)
    model.resize_token_embeddings(70)
    assert model.lm_head.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model(torch.tensor([[65, 3]])).logits.shape == (1, 2, 70)


def test_classification_heads_and_losses():
    torch.manual_seed(0)
    seq = PreLNBertForSequenceClassification(PreLNBertConfig(**TINY, num_labels=3)).eval()
    labels = torch.tensor([0, 2, 1])
    out = seq(**batch(), labels=labels)
    assert out.logits.shape == (3, 3)
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    regression = PreLNBertForSequenceClassification(PreLNBertConfig(**TINY, num_labels=1)).eval()
    target = torch.tensor([0.5, -1.0, 2.0])
    out = regression(**batch(), labels=target)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), target))

    tok = PreLNBertForTokenClassification(PreLNBertConfig(**TINY, num_labels=5)).eval()
    tags = torch.randint(0, 5, (3, 10))
    tags[2, 6:] = -100
    out = tok(**batch(), labels=tags)
    assert out.logits.shape == (3, 10, 5)
    keep = tags != -100
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits[keep], tags[keep]))


@pytest.mark.parametrize("cls", HEADS)
def test_save_and_load_round_trip(tmp_path, cls):
    torch.manual_seed(0)
    model = cls(PreLNBertConfig(**TINY, num_labels=3)).eval()
    expected = model(**batch())[0]
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    for implementation in ("sdpa", "eager"):
        loaded = cls.from_pretrained(tmp_path, attn_implementation=implementation).eval()
        assert loaded.config._attn_implementation == implementation
        torch.testing.assert_close(loaded(**batch())[0], expected, atol=1e-5, rtol=1e-5)
    if cls is PreLNBertForMaskedLM:
        assert loaded.lm_head.decoder.weight is loaded.bert.embeddings.word_embeddings.weight


def test_too_long_sequence_is_a_clear_error():
    model = PreLNBertModel(PreLNBertConfig(**TINY))
    with pytest.raises(ValueError, match="sequence length 17 exceeds max_position_embeddings=16"):
        model(torch.ones(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4))


_REMOTE_LOAD = WITHOUT_GRAFTKIT + textwrap.dedent("""
    import torch
    from transformers import AutoModelForMaskedLM
    model = AutoModelForMaskedLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    assert not any(m.startswith(("graftkit", "hf_models")) for m in sys.modules), "graftkit was imported"
    batch = torch.load(sys.argv[2])
    torch.save({"module": type(model).__module__, "logits": model(**batch).logits}, sys.argv[3])
    model.save_pretrained(sys.argv[4])  # a model loaded as remote code saves a loadable folder again
""")


@pytest.mark.slow
def test_loads_with_trust_remote_code_without_graftkit(tmp_path):
    torch.manual_seed(0)
    model = PreLNBertForMaskedLM(PreLNBertConfig(**TINY)).eval()
    model.save_pretrained(tmp_path / "model")
    torch.save(batch(), tmp_path / "batch.pt")
    (tmp_path / "load.py").write_text(_REMOTE_LOAD)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    subprocess.run([sys.executable, str(tmp_path / "load.py"), str(tmp_path / "model"), str(tmp_path / "batch.pt"),
                    str(tmp_path / "out.pt"), str(tmp_path / "resaved")], cwd=tmp_path, env=env, check=True,
                   capture_output=True, text=True)
    result = torch.load(tmp_path / "out.pt")
    assert result["module"].startswith("transformers_modules.")
    torch.testing.assert_close(result["logits"], model(**batch()).logits, atol=1e-5, rtol=1e-5)
    resaved = PreLNBertForMaskedLM.from_pretrained(tmp_path / "resaved").eval()
    torch.testing.assert_close(resaved(**batch()).logits, model(**batch()).logits, atol=1e-5, rtol=1e-5)
    assert "from .modeling import (" in (tmp_path / "resaved" / "modeling_preln_bert.py").read_text()


def _mlm_dataset(n_sentences: int, max_length: int):
    from graftkit.data.text import WordVocab, english_sentences

    sentences = english_sentences()[:n_sentences]
    tokenizer = WordVocab.build(sentences).to_hf_tokenizer(model_max_length=max_length)
    encoded = tokenizer(sentences, truncation=True, max_length=max_length)
    rows = [{"input_ids": ids} for ids in encoded["input_ids"]]
    return tokenizer, rows


def test_hf_tokenizer_feeds_the_model():
    tokenizer, _ = _mlm_dataset(50, 16)
    model = PreLNBertForMaskedLM(PreLNBertConfig(**{**TINY, "vocab_size": len(tokenizer)},
                                                 pad_token_id=tokenizer.pad_token_id)).eval()
    inputs = tokenizer(["the value of the object", "a list"], padding=True, return_tensors="pt")
    logits = model(**inputs).logits
    assert logits.shape == (2, inputs["input_ids"].shape[1], len(tokenizer))


def test_trains_with_hf_trainer_and_mlm_collator(tmp_path):
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from graftkit.runtime import single_thread

    torch.manual_seed(0)
    tokenizer, rows = _mlm_dataset(64, 16)
    config = PreLNBertConfig(**{**TINY, "vocab_size": len(tokenizer)}, pad_token_id=tokenizer.pad_token_id)
    model = PreLNBertForMaskedLM(config)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
    probe = collator(rows[:32])

    def probe_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(model(**probe).loss)

    before = probe_loss()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=20, per_device_train_batch_size=16,
                             learning_rate=3e-3, warmup_steps=0, report_to=[], save_strategy="no",
                             logging_steps=10, use_cpu=True, disable_tqdm=True, seed=0)
    with single_thread():  # a tiny model: one thread is as fast and immune to oversubscribed cores
        Trainer(model=model, args=args, train_dataset=rows, data_collator=collator).train()
    after = probe_loss()
    assert after < before - 0.3, (before, after)  # measured: 6.06 -> 5.49 after 40 steps at 2e-3


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers 5 renames it activation_checkpointing
def test_hf_trainer_with_gradient_checkpointing(tmp_path):
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from graftkit.runtime import single_thread

    torch.manual_seed(0)
    tokenizer, rows = _mlm_dataset(32, 16)
    model = PreLNBertForMaskedLM(PreLNBertConfig(**{**TINY, "vocab_size": len(tokenizer)},
                                                 pad_token_id=tokenizer.pad_token_id))
    before = model.bert.encoder.layers[0].feed_forward.output.weight.detach().clone()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8,
                             gradient_checkpointing=True, report_to=[], save_strategy="no", use_cpu=True,
                             disable_tqdm=True, seed=0)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
    with single_thread():
        Trainer(model=model, args=args, train_dataset=rows, data_collator=collator).train()
    assert model.bert.encoder.layers[0].gradient_checkpointing
    assert not torch.equal(model.bert.encoder.layers[0].feed_forward.output.weight, before)


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_through_hf_trainer_keeps_ranks_identical(tmp_path):
    states = train_with_trainer_on_two_ranks(tmp_path, "AutoModelForMaskedLM", "preln_bert")
    name = "bert.encoder.layers.0.feed_forward.output.weight"
    assert not torch.equal(states["final"][name], states["initial"][name])  # trained
