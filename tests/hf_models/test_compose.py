"""Compositions of the pre-training methods (issue 25, docs/compose.md): TUPE's positions
(``position_embedding_type``) on every model type of the core, the single methods unchanged, the refusals,
compile/export of the fine-tuning classes, the common model checks, and saved folders loading without graftkit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from loopback import WITHOUT_GRAFTKIT
from weight_init import assert_init_sets_every_buffer, assert_init_sets_every_weight

from hf_models import (
    McBertConfig,
    McBertForPreTraining,
    McBertForSequenceClassification,
    McBertForTokenClassification,
    McBertModel,
    PreLNBertConfig,
    PreLNBertForMaskedLM,
    PreLNBertForSequenceClassification,
    PreLNBertForTokenClassification,
    PreLNBertModel,
    TnfConfig,
    TnfForMaskedLM,
    TupeConfig,
    TupeForMaskedLM,
    TupeModel,
)

TINY = dict(vocab_size=60, hidden_size=24, num_hidden_layers=2, num_attention_heads=6, intermediate_size=48,
            max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
MC_TOKENS = dict(mask_token_id=4, neither_token_id=5)
#: name -> (config class, fields): the compositions the issue names, TUPE-A on MC-BERT's ELECTRA objective, and
#: TNF's notes in MC-BERT on a TUPE encoder (the common checks below read TUPE's positional term)
COMPOSITIONS = {
    "tupe_r+pre_ln": (PreLNBertConfig, dict(position_embedding_type="tupe_relative")),
    "tupe_r+pre_ln+mc": (McBertConfig, dict(position_embedding_type="tupe_relative", layer_norm_position="pre",
                                            objective="mc", mc_size_divider=3, **MC_TOKENS)),
    "tupe_a+rtd": (McBertConfig, dict(position_embedding_type="tupe_absolute", objective="rtd",
                                      mc_size_divider=2, **MC_TOKENS)),
    "tupe_a+tnf": (TnfConfig, dict(position_embedding_type="tupe_absolute", num_rare_words=4)),
    "tupe_a+tnf+mc": (McBertConfig, dict(position_embedding_type="tupe_absolute", objective="mc",
                                         num_rare_words=4, **MC_TOKENS)),
}
#: compositions pre-trained only (the Trainer round trip): TNF + MC-BERT / ELECTRA on BERT's positions
PRETRAINED_ONLY = {
    "tnf+mc": (McBertConfig, dict(objective="mc", num_rare_words=4, **MC_TOKENS)),
    "tnf+rtd": (McBertConfig, dict(objective="rtd", num_rare_words=4, **MC_TOKENS)),
}
#: the fine-tuning classes of each model type (TNF fine-tunes its exported backbone: a preln_bert)
FINE_TUNING = {PreLNBertConfig: (PreLNBertForSequenceClassification, PreLNBertForTokenClassification),
               McBertConfig: (McBertForSequenceClassification, McBertForTokenClassification),
               TnfConfig: (PreLNBertForSequenceClassification, PreLNBertForTokenClassification)}


def config_of(name: str, **overrides):
    cls, fields = COMPOSITIONS[name]
    config = cls(**{**TINY, **fields, **overrides})
    return config.backbone_config() if isinstance(config, TnfConfig) else config


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """3 rows of 10: full, left-padded, and one with padding inside (all three position rules at once)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, 60, (3, 10), generator=gen)
    mask = torch.ones(3, 10, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, 4:6] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _randomize_(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Non-trivial weights everywhere (HF's init leaves LayerNorms at 1 / 0 and TUPE's θ identical)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            param.add_(torch.randn(param.shape, generator=gen) * 0.2)
    return model.eval()


def _renamed(state: dict[str, torch.Tensor], old: str, new: str) -> dict[str, torch.Tensor]:
    return {(new + key[len(old):] if key.startswith(old + ".") else key): value for key, value in state.items()}


# --- the single methods, composed through the setting, equal today's models ------------------------------------

@pytest.mark.parametrize("position_embedding_type", ["tupe_absolute", "tupe_relative"])
@pytest.mark.parametrize("layer_norm_position", ["post", "pre"])
def test_tupe_on_every_model_type_equals_the_tupe_model(position_embedding_type, layer_norm_position):
    # same weights -> same logits and loss, bit for bit: TUPE through preln_bert, tnf (eval) and mc_bert is TUPE
    fields = dict(TINY, position_embedding_type=position_embedding_type, layer_norm_position=layer_norm_position,
                  relative_attention_num_buckets=8, relative_attention_max_distance=12)
    torch.manual_seed(0)
    tupe = _randomize_(TupeForMaskedLM(TupeConfig(**fields)))
    labels = torch.where(batch()["attention_mask"].bool(), batch()["input_ids"], -100)
    with torch.no_grad():
        expected = tupe(**batch(), labels=labels)
        state = _renamed(tupe.state_dict(), "tupe", "bert")
        for other in (PreLNBertForMaskedLM(PreLNBertConfig(**fields)),
                      TnfForMaskedLM(TnfConfig(**fields, num_rare_words=3))):
            other.load_state_dict(state, strict=not isinstance(other, TnfForMaskedLM))
            got = other.eval()(**batch(), labels=labels)
            assert torch.equal(got.logits, expected.logits) and torch.equal(got.loss, expected.loss)
        encoder = McBertModel(McBertConfig(**fields, **MC_TOKENS), add_pooling_layer=False)
        encoder.load_state_dict({k[len("tupe."):]: v for k, v in tupe.state_dict().items() if k.startswith("tupe.")})
        base = TupeModel(TupeConfig(**fields), add_pooling_layer=False)
        base.load_state_dict(encoder.state_dict())
        assert torch.equal(encoder.eval()(**batch()).last_hidden_state, base.eval()(**batch()).last_hidden_state)


def test_defaults_keep_bert_positions_and_build_no_positional_term():
    for config in (PreLNBertConfig(**TINY), McBertConfig(**TINY, **MC_TOKENS), TnfConfig(**TINY)):
        assert config.position_embedding_type == "absolute"
    model = McBertForPreTraining(McBertConfig(**TINY, **MC_TOKENS))
    assert model.mc_bert.positional_bias is None and model.meta_controller.positional_bias is None
    assert model.meta_controller.embeddings.position_embeddings is not None
    assert TupeConfig().position_embedding_type == "tupe_absolute"


def test_old_tupe_folders_load_unchanged(tmp_path):
    # config.json as 3ff10df (main before this change) saved it: position_mode, no position_embedding_type
    saved = {"model_type": "tupe", "architectures": ["TupeForMaskedLM"], **TINY, "position_mode": "relative",
             "untie_cls": False, "relative_attention_num_buckets": 8, "relative_attention_max_distance": 12,
             "layer_norm_position": "pre", "type_vocab_size": 2, "pad_token_id": 0, "tie_word_embeddings": True,
             "transformers_version": "5.24.0"}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = TupeConfig.from_pretrained(tmp_path)
    assert (config.position_embedding_type, config.position_mode, config.untie_cls) == (
        "tupe_relative", "relative", False)
    config.save_pretrained(tmp_path / "again")
    again = json.loads((tmp_path / "again" / "config.json").read_text())
    assert (again["position_embedding_type"], again["position_mode"]) == ("tupe_relative", "relative")
    reloaded = TupeConfig.from_pretrained(tmp_path / "again").to_dict()
    assert {**reloaded, "_name_or_path": ""} == {**config.to_dict(), "_name_or_path": ""}


def test_meta_controller_takes_the_positions_of_the_setting():
    # the controller (1/3 width here) gets its own TUPE-R term at its width and heads, and computes what the
    # core's encoder model computes at that width from the same input vectors
    config = config_of("tupe_r+pre_ln+mc")
    torch.manual_seed(0)
    model = _randomize_(McBertForPreTraining(config))
    controller = model.meta_controller
    assert controller.embeddings.position_embeddings is None and controller.positional_bias.num_heads == 2
    assert controller.positional_bias.relative_bias is not None
    assert all(layer.attention.scale == (2 * 4) ** -0.5 for layer in controller.encoder.layers)
    width = PreLNBertConfig(**{**TINY, "hidden_size": 8, "intermediate_size": 16, "num_attention_heads": 2},
                            position_embedding_type="tupe_relative")
    core = PreLNBertModel(width, add_pooling_layer=False).eval()
    core.load_state_dict({k: v for k, v in controller.state_dict().items()
                          if k.split(".")[0] in ("embeddings", "positional_bias", "encoder")}, strict=False)
    data = batch()
    with torch.no_grad():
        vectors = controller.project(model.get_input_embeddings()(data["input_ids"]))
        expected = core(inputs_embeds=vectors, attention_mask=data["attention_mask"]).last_hidden_state
        got = controller(data["input_ids"], model.get_input_embeddings(), data["attention_mask"])
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


@pytest.mark.parametrize("name", ["tupe_r+pre_ln+mc", "tupe_a+rtd"])
def test_mc_bert_objectives_train_on_a_tupe_encoder(name):
    torch.manual_seed(0)
    model = McBertForPreTraining(config_of(name)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(8):
        out = model(**batch(), generator=gen)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss))
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    for module in (model.mc_bert.positional_bias, model.meta_controller.positional_bias):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_tnf_mixes_notes_without_position_vectors_on_tupe():
    # TUPE's input has no position vector: e = (1 - λ) tok + λ ND[w] on the rare words' tokens
    config = TnfConfig(**TINY, **COMPOSITIONS["tupe_a+tnf"][1], first_note="ema", type_vocab_size=0,
                       embedding_layer_norm=False)
    torch.manual_seed(0)
    model = TnfForMaskedLM(config).train()
    assert model.bert.embeddings.position_embeddings is None
    seen = []
    model.bert.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    spans = torch.tensor([[[1, 2, 3]], [[2, 5, 5]], [[-1, -1, -1]]])
    data = batch()
    notes = model.notes.notes.clone()  # "ema": every word mixed from the first step, updated after the forward
    model(**data, rare_spans=spans)
    with torch.no_grad():
        expected = model.bert.embeddings.word_embeddings(data["input_ids"])
        expected[0, 2:4] = 0.5 * expected[0, 2:4] + 0.5 * notes[1]
        expected[1, 5] = 0.5 * expected[1, 5] + 0.5 * notes[2]
    torch.testing.assert_close(seen[0], expected)


def test_notes_on_tupe_take_one_positional_bias_for_a_right_padded_batch():
    # TNF's mix needs no positions on TUPE, so the backbone resolves them itself: one [1, heads, seq, seq] bias
    # for a right-padded batch, as without notes, and on real tokens the outputs that per-row positions give
    from hf_models.core.embeddings import positions_from_attention_mask

    config = TnfConfig(**TINY, **COMPOSITIONS["tupe_a+tnf"][1], first_note="ema")
    torch.manual_seed(0)
    model = TnfForMaskedLM(config).train()
    shapes = []
    model.bert.positional_bias.register_forward_hook(lambda module, args, out: shapes.append(tuple(out.shape)))
    ids = torch.randint(6, 60, (2, 10), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0
    spans = torch.tensor([[[1, 2, 3]], [[2, 5, 5]]])
    notes = model.notes.notes.clone()
    logits = model(input_ids=ids, attention_mask=mask, rare_spans=spans).logits
    with torch.no_grad():
        model.notes.notes.copy_(notes)  # the same notes mixed in again
    per_row = model(input_ids=ids, attention_mask=mask, rare_spans=spans,
                    position_ids=positions_from_attention_mask(mask)).logits
    assert shapes == [(1, 6, 10, 10), (2, 6, 10, 10)]
    real = mask.bool()
    torch.testing.assert_close(logits[real], per_row[real])


# --- the config refuses what does not combine ------------------------------------------------------------------

@pytest.mark.parametrize("cls, fields, message", [
    (PreLNBertConfig, dict(position_embedding_type="rope"), r"position_embedding_type must be one of"),
    (McBertConfig, dict(untie_cls=False), r"untie_cls=False is a setting of TUPE's positional term: it needs "
                                          r"position_embedding_type 'tupe_absolute' or 'tupe_relative'"),
    (TnfConfig, dict(relative_attention_num_buckets=8), r"relative_attention_num_buckets=8 .* position_embedding_type"),
    (PreLNBertConfig, dict(position_embedding_type="tupe_relative", relative_attention_num_buckets=7),
     r"relative_attention_num_buckets must be an even integer >= 4"),
    (McBertConfig, dict(position_embedding_type="tupe_absolute", untie_cls="yes"), r"untie_cls must be True or False"),
    (TupeConfig, dict(position_embedding_type="absolute"), r"position_embedding_type='absolute' .* is not TUPE"),
    (TupeConfig, dict(position_mode="relative", position_embedding_type="tupe_absolute"),
     r"position_mode='relative' .* contradicts position_embedding_type='tupe_absolute'"),
    (TupeConfig, dict(position_mode="rotary"), r"position_mode must be one of \('absolute', 'relative'\)"),
])
def test_unsupported_combinations_are_refused_naming_the_fields(cls, fields, message):
    with pytest.raises(ValueError, match=message):
        cls(**TINY, **fields)


# --- fine-tuning classes: compile, export, and the common model checks ------------------------------------------

def _fine_tuning_models(name: str):
    config = config_of(name, num_labels=3)
    for cls in FINE_TUNING[COMPOSITIONS[name][0]]:
        torch.manual_seed(0)
        yield cls, _randomize_(cls(config))


@pytest.mark.parametrize("name", sorted(COMPOSITIONS))
def test_compile_and_export_equal_eager_for_the_fine_tuning_classes(name):
    data = batch()
    real = data["attention_mask"].bool()
    for cls, model in _fine_tuning_models(name):
        with torch.no_grad():
            expected = model(**data).logits
            exported = torch.export.export(model, (), kwargs=data).module()(**data).logits
            torch._dynamo.reset()
            compiled = torch.compile(model, fullgraph=True, backend="eager")(**data).logits
        for got in (exported, compiled):
            if got.dim() == 3:  # per token: the real tokens (padding rows are not read by anything)
                got, want = got[real], expected[real]
            else:
                want = expected
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6, msg=f"{name} {cls.__name__}")


@pytest.mark.parametrize("name", sorted(COMPOSITIONS))
def test_common_model_checks(name, tmp_path):
    """transformers' ModelTesterMixin checks, as the project writes them: save/load round trip, eager == sdpa,
    padding and batch neighbours leave real tokens unchanged, output shapes, every weight set by the init,
    gradient checkpointing gives the same gradients, resize_token_embeddings."""
    data = batch()
    real = data["attention_mask"].bool()
    for cls, model in _fine_tuning_models(name):
        with torch.no_grad():
            out = model(**data)
            every = model(**data, output_hidden_states=True, output_attentions=True)
        layers = model.config.num_hidden_layers
        assert len(every.hidden_states) == layers + 1 and len(every.attentions) == layers
        assert every.attentions[0].shape == (3, model.config.num_attention_heads, 10, 10)
        # save / load
        model.save_pretrained(tmp_path / cls.__name__)
        loaded = cls.from_pretrained(tmp_path / cls.__name__).eval()
        with torch.no_grad():
            assert torch.equal(loaded(**data).logits, out.logits)
        # eager == sdpa
        eager = cls.from_pretrained(tmp_path / cls.__name__, attn_implementation="eager").eval()
        with torch.no_grad():
            torch.testing.assert_close(eager(**data).logits, out.logits, atol=1e-5, rtol=1e-5)
            # a row alone gives its real tokens' outputs in the batch (positions follow its own mask only)
            alone = model(input_ids=data["input_ids"][2:], attention_mask=data["attention_mask"][2:]).logits
        if out.logits.dim() == 3:
            torch.testing.assert_close(alone[0][real[2]], out.logits[2][real[2]], atol=1e-5, rtol=1e-5)
        else:
            torch.testing.assert_close(alone[0], out.logits[2], atol=1e-5, rtol=1e-5)
        # the positional term's weights missing from a folder (a BERT export): set by the weight init
        from safetensors.torch import load_file, save_file

        weights = tmp_path / cls.__name__ / "model.safetensors"
        save_file({k: v for k, v in load_file(weights).items() if "positional_bias" not in k}, weights,
                  metadata={"format": "pt"})
        started = cls.from_pretrained(tmp_path / cls.__name__).base_model.positional_bias
        assert all(torch.isfinite(value).all() for value in started.state_dict().values())
        assert torch.equal(started.layer_norm.weight, torch.ones_like(started.layer_norm.weight))
        assert 0 < float(started.embeddings.weight.std()) < 3 * model.config.initializer_range
        # gradient checkpointing: the same gradients
        train = loaded.train()
        labels = torch.zeros(3, dtype=torch.long) if out.logits.dim() == 2 else torch.zeros(3, 10, dtype=torch.long)
        grads = []
        for checkpointing in (False, True):
            train.zero_grad()
            if checkpointing:
                train.gradient_checkpointing_enable()
            train(**data, labels=labels).loss.backward()
            grads.append({k: p.grad.clone() for k, p in train.named_parameters() if p.grad is not None})
        assert grads[0].keys() == grads[1].keys() and any("positional_bias" in k for k in grads[0])
        for key in grads[0]:
            torch.testing.assert_close(grads[1][key], grads[0][key], atol=1e-6, rtol=1e-5, msg=key)
        # resize_token_embeddings
        model.resize_token_embeddings(64)
        with torch.no_grad():
            assert model(input_ids=torch.full((1, 4), 63)).logits.isfinite().all()


@pytest.mark.parametrize("name", sorted(COMPOSITIONS))
def test_the_weight_init_sets_every_weight_and_buffer(name):
    # transformers' test_can_init_all_missing_weights and test_init_weights_can_init_buffers, for the
    # pre-training model of each composition and its fine-tuning classes
    cls, fields = COMPOSITIONS[name]
    config = cls(**TINY, **fields)
    pretraining = {McBertConfig: McBertForPreTraining, TnfConfig: TnfForMaskedLM}.get(cls, PreLNBertForMaskedLM)
    fine_tuned = config.backbone_config() if isinstance(config, TnfConfig) else config  # TNF: its backbone
    for model_class, model_config in ((pretraining, config), *((c, fine_tuned) for c in FINE_TUNING[cls])):
        assert_init_sets_every_weight(model_class, model_config)
        assert_init_sets_every_buffer(model_class, model_config)


# --- pre-train, save, reload without graftkit, fine-tune ---------------------------------------------------------

_REMOTE = WITHOUT_GRAFTKIT + textwrap.dedent("""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
    assert not any(m.startswith(("graftkit", "hf_models")) for m in sys.modules), "graftkit was imported"
    inputs = tokenizer(["the value of the list", "a name"], padding=True, return_tensors="pt")
    torch.save({"module": type(model).__module__, "logits": model(**inputs).logits}, sys.argv[2])
""")


def _tokenizer_and_rows(n: int = 64):
    from graftkit.data.text import WordVocab, english_sentences

    sentences = english_sentences()[:n]
    tokenizer = WordVocab.build(sentences).to_hf_tokenizer(model_max_length=16)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<neither>"]})
    return tokenizer, sentences


def _pretrain(name: str, tokenizer, sentences, out):
    """20 Trainer steps of the composition's pre-training model; returns the folder to fine-tune from."""
    from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding, Trainer, TrainingArguments

    from hf_models.tnf import DataCollatorForTnf, RareVocabulary

    cls, fields = {**COMPOSITIONS, **PRETRAINED_ONLY}[name]
    fields = {**TINY, **fields, "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    args = TrainingArguments(output_dir=str(out / "trainer"), max_steps=20, per_device_train_batch_size=16,
                             learning_rate=3e-3, report_to=[], save_strategy="no", use_cpu=True,
                             disable_tqdm=True, seed=0)
    torch.manual_seed(0)
    notes = fields.get("num_rare_words", 0) > 0
    if notes:
        vocab = RareVocabulary.build(tokenizer, sentences, 2, 4)
        fields["num_rare_words"] = len(vocab)
    if cls is McBertConfig:
        fields.update(mask_token_id=tokenizer.mask_token_id,
                      neither_token_id=tokenizer.convert_tokens_to_ids("<neither>"))
        model = McBertForPreTraining(cls(**fields))
        if notes:  # the rare words' spans from the collator, which also chooses the masked positions
            rows = vocab.tokenize(tokenizer, sentences, max_length=16)
            collator = DataCollatorForTnf(tokenizer=tokenizer, mlm_probability=0.15)
        else:
            rows = [{"input_ids": ids} for ids in tokenizer(sentences, truncation=True, max_length=16)["input_ids"]]
            collator = DataCollatorWithPadding(tokenizer)
    elif cls is TnfConfig:
        model = TnfForMaskedLM(cls(**fields))
        rows = vocab.tokenize(tokenizer, sentences, max_length=16)
        collator = DataCollatorForTnf(tokenizer=tokenizer, mlm_probability=0.15)
    else:
        model = PreLNBertForMaskedLM(cls(**fields))
        rows = [{"input_ids": ids} for ids in tokenizer(sentences, truncation=True, max_length=16)["input_ids"]]
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
    Trainer(model=model, args=args, train_dataset=rows, data_collator=collator).train()
    if notes:
        assert model.notes.has_note.any()  # notes were mixed in and taken
    if cls is TnfConfig:
        model = model.backbone()  # what TNF keeps after pre-training
    model.save_pretrained(out / "pretrained")
    tokenizer.save_pretrained(out / "pretrained")
    return model


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tupe_r+pre_ln+mc", "tupe_a+tnf", "tupe_r+pre_ln", "tnf+mc", "tnf+rtd"])
def test_pretrain_save_reload_without_graftkit_and_fine_tune(name, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from graftkit.runtime import single_thread

    tokenizer, sentences = _tokenizer_and_rows()
    with single_thread():
        _pretrain(name, tokenizer, sentences, tmp_path)
        classifier = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pretrained", num_labels=2)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
        inputs = tokenizer(sentences[:16], padding=True, truncation=True, max_length=16, return_tensors="pt")
        for _ in range(3):
            loss = classifier(**inputs, labels=torch.arange(16) % 2).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    classifier.eval().save_pretrained(tmp_path / "classifier")
    tokenizer.save_pretrained(tmp_path / "classifier")
    assert (tmp_path / "classifier" / "positional.py").exists()
    (tmp_path / "load.py").write_text(_REMOTE)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    subprocess.run([sys.executable, str(tmp_path / "load.py"), str(tmp_path / "classifier"), str(tmp_path / "out.pt")],
                   cwd=tmp_path, env=env, check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    result = torch.load(tmp_path / "out.pt")
    assert result["module"].startswith("transformers_modules.")
    with torch.no_grad():
        expected = classifier(**tokenizer(["the value of the list", "a name"], padding=True,
                                          return_tensors="pt")).logits
    # identical up to the thread count's summation order (the fresh process runs with torch's default threads)
    torch.testing.assert_close(result["logits"], expected, atol=1e-6, rtol=1e-5)
