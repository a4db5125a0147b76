"""TNF's notes on MC-BERT's and ELECTRA's main model (issue 25, docs/compose.md): one ``mc_bert`` config with
``num_rare_words`` >= 1. Notes off is MC-BERT as before; notes on mixes (1 - λ)(tok + pos) + λ ND[w] into the
main model's input at the rare words it reads unmasked, takes the notes from its final hidden states in
training, and ignores them in eval. The Trainer round trips are in test_compose.py (``tnf+mc``, ``tnf+rtd``)."""

from __future__ import annotations

import pytest
import torch
from test_compose import MC_TOKENS, TINY, _randomize_, batch
from weight_init import assert_init_sets_every_buffer, assert_init_sets_every_weight

from hf_models import McBertConfig, McBertForPreTraining, McBertForSequenceClassification, TnfConfig
from hf_models.core.embeddings import positions_from_attention_mask
from hf_models.tnf.notes import NOTE_FIELDS, span_notes

#: two spans in row 0 (word 1 at tokens 2..3, word 3 at 7), one in row 1 (word 2 at 5); row 2 none
SPANS = torch.tensor([[[1, 2, 3], [3, 7, 7]], [[2, 5, 5], [-1, -1, -1]], [[-1, -1, -1], [-1, -1, -1]]])


def notes_config(objective: str = "mc", **overrides) -> McBertConfig:
    return McBertConfig(**{**TINY, **MC_TOKENS, "objective": objective, "num_rare_words": 4, **overrides})


def _labels(masked: list[tuple[int, int]]) -> torch.Tensor:
    """A masked-LM collator's labels: the original token at the given (row, position)s, -100 elsewhere."""
    data = batch()
    labels = torch.full_like(data["input_ids"], -100)
    for row, position in masked:
        labels[row, position] = data["input_ids"][row, position]
    return labels


def _same_weights(source: McBertForPreTraining, config: McBertConfig) -> McBertForPreTraining:
    """A model of ``config`` with ``source``'s weights (each model keeps its own notes, if any)."""
    model = McBertForPreTraining(config)
    weights = {k: v for k, v in source.state_dict().items() if not k.startswith("notes.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and all(k.startswith("notes.") for k in missing)
    return model


@pytest.mark.parametrize("objective", ["mc", "rtd", "mlm"])
def test_notes_off_is_mc_bert_as_before(objective):
    plain = McBertConfig(**TINY, **MC_TOKENS, objective=objective)
    assert plain.num_rare_words == 0 and not plain.notes
    assert not set(NOTE_FIELDS) & set(plain.to_dict())  # saved as before notes existed
    torch.manual_seed(0)
    model = _randomize_(McBertForPreTraining(plain))
    assert model.notes is None and not any(k.startswith(("notes.", "rare_words.")) for k in model.state_dict())
    with pytest.raises(ValueError, match="rare_spans are given but this MC-BERT model has no notes"):
        model(**batch(), rare_spans=SPANS)
    # with notes on but no rare word in the batch, training gives the notes-off outputs bit for bit: the main
    # model reads its input through inputs_embeds then, the notes-off model through input_ids
    with_notes = _same_weights(model, notes_config(objective, first_note="ema"))
    for trained in (model.train(), with_notes.train()):
        no_rare_word = {"rare_spans": torch.full((3, 1, 3), -1)} if trained is with_notes else {}
        trained.outputs = trained(**batch(), labels=_labels([(0, 2), (1, 4)]),
                                  generator=torch.Generator().manual_seed(3), **no_rare_word)
    for name in ("loss", "logits", "corrupted_input_ids", "candidate_ids"):
        got, want = getattr(with_notes.outputs, name), getattr(model.outputs, name)
        assert (got is None and want is None) or torch.equal(got, want), name


@pytest.mark.parametrize("objective", ["mc", "rtd", "mlm"])
def test_the_main_input_at_a_rare_word_is_the_tnf_mix(objective):
    # e = (1 - λ)(tok + pos) + λ ND[w] at the rare words' unmasked occurrences, tok + pos elsewhere; word 3's
    # token is masked: no note there (its note would name the hidden word); the controller reads no notes
    config = notes_config(objective, first_note="ema", note_weight=0.25, type_vocab_size=0,
                          embedding_layer_norm=False)
    torch.manual_seed(0)
    model = _randomize_(McBertForPreTraining(config)).train()
    main_inputs, controller_inputs = [], []
    model.mc_bert.encoder.register_forward_pre_hook(lambda module, args: main_inputs.append(args[0]))
    if model.meta_controller is not None:
        model.meta_controller.encoder.register_forward_pre_hook(
            lambda module, args: controller_inputs.append(args[0]))
    data = batch()
    notes = model.notes.notes.clone()  # "ema": every word usable from the first step
    out = model(**data, labels=_labels([(0, 7), (2, 1)]), rare_spans=SPANS,
                generator=torch.Generator().manual_seed(0))
    read = out.corrupted_input_ids if objective != "mlm" else data["input_ids"].masked_fill(out.masked_positions, 4)
    embeddings = model.mc_bert.embeddings
    position_ids = positions_from_attention_mask(data["attention_mask"])  # the core's rule
    with torch.no_grad():
        plain = embeddings.word_embeddings(read) + embeddings.position_embeddings(position_ids)
        expected = plain.clone()
        expected[0, 2:4] = 0.75 * plain[0, 2:4] + 0.25 * notes[1]
        expected[1, 5] = 0.75 * plain[1, 5] + 0.25 * notes[2]
    torch.testing.assert_close(main_inputs[0], expected, atol=1e-6, rtol=0)
    if objective != "mlm":
        assert torch.equal(read[0, 2:4], data["input_ids"][0, 2:4])  # the main model reads the original there
        controller = model.meta_controller
        with torch.no_grad():
            masked_input = data["input_ids"].masked_fill(out.masked_positions, 4)
            unmixed = (controller.project(embeddings.word_embeddings(masked_input))
                       + controller.embeddings.position_embeddings(torch.arange(10)))  # as MC-BERT's
        torch.testing.assert_close(controller_inputs[0], unmixed, atol=1e-6, rtol=0)


def test_training_writes_the_notes_and_eval_ignores_them():
    # "replace": no note before the first step; after it ND[w] is the mean of the main model's final hidden
    # states over [s - k, t + k] (k = 1); a masked word still gets its note taken (TNF's rule)
    config = notes_config("rtd", note_half_window=1)
    torch.manual_seed(0)
    model = _randomize_(McBertForPreTraining(config)).train()
    final = []
    model.mc_bert.register_forward_hook(lambda module, args, output: final.append(output.last_hidden_state))
    assert not model.notes.has_note.any()
    data = batch()
    model(**data, labels=_labels([(0, 7)]), rare_spans=SPANS, generator=torch.Generator().manual_seed(0))
    assert model.notes.has_note.tolist() == [False, True, True, True]
    windows = span_notes(final[0], SPANS, data["attention_mask"], 1)
    torch.testing.assert_close(model.notes.notes[1], windows[0, 0])
    torch.testing.assert_close(model.notes.notes[3], windows[0, 1])
    torch.testing.assert_close(model.notes.notes[2], windows[1, 0])
    # eval: the notes are neither read nor written; the outputs are the notes-off model's
    taken = model.notes.notes.clone()
    plain = _same_weights(model, McBertConfig(**TINY, **MC_TOKENS, objective="rtd")).eval()
    with torch.no_grad():
        got = model.eval()(**data, rare_spans=SPANS, generator=torch.Generator().manual_seed(1))
        want = plain(**data, generator=torch.Generator().manual_seed(1))
    assert torch.equal(got.logits, want.logits) and torch.equal(got.loss, want.loss)
    assert torch.equal(model.notes.notes, taken)


def test_rare_words_found_in_input_ids_as_tnf_finds_them():
    # with the rare vocabulary stored in the config, a batch without rare_spans gets the spans the collator
    # would give (RareVocabulary.tokenize), found in the original text (the masked tokens' labels put back)
    from graftkit.data.text import english_sentences
    from graftkit.experiments.tnf import wordpiece_tokenizer
    from hf_models.tnf import DataCollatorForTnf, RareVocabulary

    sentences = english_sentences()[:100]
    tokenizer = wordpiece_tokenizer(sentences, vocab_size=300, model_max_length=16)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<neither>"]})
    vocab = RareVocabulary.build(tokenizer, sentences, 2, 4)
    fields = dict(TINY, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                  mask_token_id=tokenizer.mask_token_id, neither_token_id=tokenizer.convert_tokens_to_ids("<neither>"))
    # whole sentences: a word cut by truncation may read as another (rare) word in the ids, as in TNF
    short = [text for text in sentences if len(tokenizer(text)["input_ids"]) <= 16][:16]
    rows = vocab.tokenize(tokenizer, short, max_length=16)
    collated = DataCollatorForTnf(tokenizer=tokenizer, mlm_probability=0.15, seed=0)(rows)
    assert (collated["rare_spans"][..., 0] >= 0).any()
    notes = []
    for config in (McBertConfig(**fields, num_rare_words=len(vocab)),
                   McBertConfig(**fields, **vocab.config_fields(tokenizer))):
        torch.manual_seed(0)
        model = McBertForPreTraining(config).train()
        given = collated if model.rare_words is None else {k: v for k, v in collated.items() if k != "rare_spans"}
        model(**given, generator=torch.Generator().manual_seed(0))
        notes.append((model.notes.notes.clone(), model.notes.has_note.clone()))
    assert notes[0][1].any() and torch.equal(notes[0][1], notes[1][1])
    torch.testing.assert_close(notes[1][0], notes[0][0])  # the spans' order may differ: the sums' rounding


def test_a_batch_without_rare_words_warns_once_and_trains_without_notes():
    model = McBertForPreTraining(notes_config()).train()
    with pytest.warns(UserWarning, match="no 'rare_spans' and the model holds no rare-word vocabulary") as caught:
        model(**batch())
    assert caught[0].filename == __file__  # reported at the line that called the model
    assert not model.notes.has_note.any()


@pytest.mark.parametrize("first_note", ["replace", "ema"])
def test_the_weight_init_sets_the_notes(first_note):
    assert_init_sets_every_weight(McBertForPreTraining, notes_config("rtd", first_note=first_note))
    # buffers are compared exactly: a random "ema" start is drawn with std 0 here, as test_tnf.py does
    assert_init_sets_every_buffer(McBertForPreTraining, notes_config("rtd", first_note=first_note,
                                                                     initializer_range=0.0))


def test_notes_round_trip_and_fine_tuning_classes_hold_none(tmp_path):
    torch.manual_seed(0)
    model = McBertForPreTraining(notes_config()).train()
    model(**batch(), rare_spans=SPANS)
    model.save_pretrained(tmp_path)
    for name in ("notes.py", "rare_spans.py"):  # the remote code the config and model modules import
        assert (tmp_path / name).exists()
    loaded = McBertForPreTraining.from_pretrained(tmp_path)
    assert torch.equal(loaded.notes.notes, model.notes.notes)
    assert torch.equal(loaded.notes.has_note, model.notes.has_note) and loaded.notes.has_note.any()
    classifier = McBertForSequenceClassification.from_pretrained(tmp_path, num_labels=2)
    assert not any("note" in k for k in classifier.state_dict())  # dropped after pre-training, as TNF's


@pytest.mark.parametrize("fields, message", [
    (dict(note_weight=0.3), r"note_weight=0.3 is a setting of TNF's notes: it needs num_rare_words >= 1"),
    (dict(first_note="ema"), r"first_note='ema' is a setting of TNF's notes"),
    (dict(num_rare_words=-1), r"num_rare_words must be an integer >= 0 \(0: no notes\)"),
    (dict(num_rare_words=2, note_weight=1.5), r"note_weight \(λ\) must be a number in \[0, 1\]"),
    (dict(num_rare_words=2, first_note="zero"), r"first_note must be one of"),
    (dict(num_rare_words=2, rare_word_token_ids=[[7]], word_boundary_marks="s-" * 60),
     r"rare_word_token_ids must be a list of num_rare_words=2"),
])
def test_note_fields_are_checked_as_tnf_checks_them(fields, message):
    with pytest.raises(ValueError, match=message):
        McBertConfig(**TINY, **MC_TOKENS, **fields)
    if "num_rare_words" in fields and fields["num_rare_words"] > 0:  # the same message from TNF's config
        with pytest.raises(ValueError, match=message):
            TnfConfig(**TINY, **fields)
    if "rare_word_token_ids" not in fields:  # run_mlm.py's --config_overrides: checked alike, left unchanged
        config = McBertConfig(**TINY, **MC_TOKENS)
        with pytest.raises(ValueError, match=message):
            config.update_from_string(",".join(f"{k}={v}" for k, v in fields.items()))
        assert config.num_rare_words == 0
