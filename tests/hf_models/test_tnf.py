"""TNF in HF: the note dictionary's math by hand, the exact input mixing, the backbone equality, resume, the
rare-word vocabulary and collator, and training with HF's Trainer."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from loopback import WITHOUT_GRAFTKIT
from weight_init import assert_init_sets_every_buffer, assert_init_sets_every_weight

from graftkit.errors import GraftkitError
from hf_models.core.embeddings import positions_from_attention_mask
from hf_models.tnf import (
    DataCollatorForTnf,
    NoteDictionary,
    RareVocabulary,
    TnfConfig,
    TnfForMaskedLM,
    TnfForSequenceClassification,
    TnfForTokenClassification,
    note_inputs_embeds,
    window_means,
)

SIZE = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=24, type_vocab_size=2)


def _model(**kwargs) -> TnfForMaskedLM:
    torch.manual_seed(0)
    return TnfForMaskedLM(TnfConfig(**{**SIZE, "num_rare_words": 4, "note_half_window": 1, **kwargs}))


def _batch():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(5, SIZE["vocab_size"], (2, 10), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    spans = torch.tensor([[[1, 2, 3], [2, 6, 6], [-1, -1, -1]], [[1, 0, 1], [0, 4, 4], [3, 7, 7]]])
    labels = torch.full_like(ids, -100)
    labels[1, 7] = ids[1, 7]  # word 3's only token is a prediction target
    return ids, mask, spans, labels


def test_ema_update_by_hand():
    nd = NoteDictionary(3, 2, momentum=0.25, half_window=1)
    hidden = torch.tensor([[[0., 0.], [2., 2.], [4., 0.], [6., 2.]]])  # one sequence of 4 tokens
    # word 0 twice (spans 1..1 and 3..3), word 2 once (span 0..0)
    spans = torch.tensor([[[0, 1, 1], [2, 0, 0], [0, 3, 3]]])
    assert nd.update(hidden, spans, None) == 2
    # notes: word 0 -> mean(0..2) = (2, 2/3) and mean(2..3) = (5, 1): averaged (3.5, 5/6); first note replaces
    torch.testing.assert_close(nd.notes, torch.tensor([[3.5, 5 / 6], [0., 0.], [1., 1.]]))
    assert nd.has_note.tolist() == [True, False, True]
    nd.update(hidden, torch.tensor([[[0, 0, 0]]]), None)  # note (1, 1): EMA with γ = 0.25
    torch.testing.assert_close(nd.notes[0], 0.75 * torch.tensor([3.5, 5 / 6]) + 0.25 * torch.tensor([1., 1.]))
    ema = NoteDictionary(2, 2, momentum=0.25, half_window=0, first_note="ema")
    start = ema.notes.clone()
    ema.update(hidden, torch.tensor([[[1, 2, 2]]]), None)  # "ema": even the first note is averaged in
    torch.testing.assert_close(ema.notes[1], 0.75 * start[1] + 0.25 * torch.tensor([4., 0.]))
    assert torch.equal(ema.notes[0], start[0])


def test_window_is_clipped_to_the_real_tokens():
    hidden = torch.arange(6.).view(1, 6, 1).repeat(2, 1, 1)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    spans = torch.tensor([[[0, 0, 0], [1, 5, 5]], [[2, 2, 3], [-1, -1, -1]]])
    words, notes = window_means(hidden, spans, mask, half_window=2)
    assert words.tolist() == [0, 1, 2]
    # [0-2, 0+2] -> 0..2; [3, 7] -> 3..5; [0, 5] but padding from 4 on -> 0..3
    assert notes.squeeze(1).tolist() == [1.0, 4.0, 1.5]


def test_only_rare_spans_with_notes_are_mixed_exactly(monkeypatch):
    model = _model(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    ids, mask, spans, labels = _batch()
    types = torch.zeros_like(ids)
    types[:, 5:] = 1
    notes = torch.randn(4, 16)
    model.notes.notes.copy_(notes)
    model.notes.has_note.copy_(torch.tensor([True, True, False, True]))  # word 2 has no note yet
    emb = model.bert.embeddings
    sums = []
    original = type(emb).sum_embeddings
    monkeypatch.setattr(type(emb), "sum_embeddings",
                        lambda self, *a, **k: sums.append(original(self, *a, **k)) or sums[-1])
    model(ids, attention_mask=mask, token_type_ids=types, labels=labels, rare_spans=spans)
    with torch.no_grad():
        # positions counted over the real tokens, as the core's embeddings count them
        tok, pos = emb.word_embeddings(ids), emb.position_embeddings(positions_from_attention_mask(mask))
        typ = emb.token_type_embeddings(types)
        plain = tok + pos + typ
        expected = plain.clone()
        # mixed: word 1 (2..3 and 0..1), word 0 (4); not word 2 (no note), not word 3 (its token is masked)
        for b, positions, word in ((0, [2, 3], 1), (1, [0, 1], 1), (1, [4], 0)):
            for i in positions:
                expected[b, i] = 0.5 * (tok[b, i] + pos[b, i]) + 0.5 * notes[word] + typ[b, i]
    changed = (expected != plain).any(-1)
    assert changed.sum() == 5
    torch.testing.assert_close(sums[0], expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(sums[0][~changed], plain[~changed])  # untouched tokens are bit-identical


def test_masked_words_are_mixed_when_asked():
    model = _model(mix_masked_words=True).train()
    ids, mask, spans, labels = _batch()
    model.notes.has_note.fill_(True)
    mix, _ = model.notes.token_notes(spans, ids.shape[1], None)
    blocked, _ = model.notes.token_notes(spans, ids.shape[1], labels)
    assert mix[1, 7] and not blocked[1, 7] and mix.sum() == blocked.sum() + 1


def test_no_gradient_reaches_the_notes():
    model = _model().train()
    ids, mask, spans, labels = _batch()
    labels[0, 2] = ids[0, 2]
    model(ids, attention_mask=mask, labels=labels, rare_spans=spans)  # first notes
    loss = model(ids, attention_mask=mask, labels=labels, rare_spans=spans).loss
    loss.backward()
    assert not model.notes.notes.requires_grad and model.notes.notes.grad is None
    assert "notes.notes" not in dict(model.named_parameters())
    assert model.bert.embeddings.word_embeddings.weight.grad is not None


def test_eval_path_and_zero_weight_equal_the_backbone():
    model = _model()
    ids, mask, spans, labels = _batch()
    model.train()
    model(ids, attention_mask=mask, labels=labels, rare_spans=spans)
    model(ids, attention_mask=mask, labels=labels, rare_spans=spans)  # notes exist and are mixed now
    backbone = model.backbone().eval()
    model.eval()
    before = model.notes.notes.clone()
    with torch.no_grad():
        got = model(ids, attention_mask=mask, rare_spans=spans).logits
        want = backbone(ids, attention_mask=mask).logits
    assert torch.equal(got, want) and torch.equal(model.notes.notes, before)  # no mixing, no update
    silent = _model(note_weight=0.0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    silent.notes.has_note.fill_(True)
    plain = silent.backbone().train()
    assert torch.equal(silent(ids, attention_mask=mask, rare_spans=spans).logits,
                       plain(ids, attention_mask=mask).logits)


def test_backbone_save_drops_the_notes_and_tnf_save_keeps_them(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForMaskedLM

    model = _model().train()
    ids, mask, spans, labels = _batch()
    model(ids, attention_mask=mask, labels=labels, rare_spans=spans)
    model.backbone().save_pretrained(tmp_path / "backbone")
    saved = json.loads((tmp_path / "backbone/config.json").read_text())
    assert saved["model_type"] == "preln_bert" and "note_weight" not in saved
    assert not [k for k in load_file(tmp_path / "backbone/model.safetensors") if "note" in k]
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "backbone").eval()
    with torch.no_grad():
        assert torch.equal(reloaded(ids, attention_mask=mask).logits, model.eval()(ids, attention_mask=mask).logits)
    model.save_pretrained(tmp_path / "tnf")
    again = AutoModelForMaskedLM.from_pretrained(tmp_path / "tnf")
    assert type(again) is TnfForMaskedLM
    assert torch.equal(again.notes.notes, model.notes.notes) and torch.equal(again.notes.has_note,
                                                                             model.notes.has_note)


def test_resume_reproduces_the_notes_and_the_next_loss(tmp_path):
    ids, mask, spans, labels = _batch()
    labels[0, 5] = ids[0, 5]

    def step(model, optimizer, seed):
        torch.manual_seed(seed)  # dropout
        loss = model(ids, attention_mask=mask, labels=labels, rare_spans=spans).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    model = _model().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    step(model, optimizer, 1)
    step(model, optimizer, 2)
    model.save_pretrained(tmp_path)
    torch.save(optimizer.state_dict(), tmp_path / "optimizer.pt")
    expected = step(model, optimizer, 3)
    resumed = TnfForMaskedLM.from_pretrained(tmp_path).train()
    optimizer = torch.optim.Adam(resumed.parameters(), lr=1e-2)
    optimizer.load_state_dict(torch.load(tmp_path / "optimizer.pt"))
    assert step(resumed, optimizer, 3) == expected
    assert torch.equal(resumed.notes.notes, model.notes.notes)


def test_bad_settings_are_rejected():
    for field, value in (("note_weight", 1.5), ("note_weight", -0.1), ("note_momentum", 2), ("note_momentum", -1)):
        with pytest.raises(ValueError, match=field):
            TnfConfig(**SIZE, num_rare_words=3, **{field: value})
    with pytest.raises(ValueError, match="num_rare_words"):
        TnfConfig(**SIZE, num_rare_words=0)
    with pytest.raises(ValueError, match="first_note"):
        NoteDictionary(3, 4, first_note="zero")
    with pytest.raises(ValueError, match="half_window"):
        NoteDictionary(3, 4, half_window=-1)
    with pytest.raises(GraftkitError, match=r"min_count \(9\) must be <= max_count \(3\)"):
        RareVocabulary([], [], 9, 3, "x")
    model = _model().train()
    ids, mask, spans, labels = _batch()
    with pytest.raises(ValueError, match="beyond the 4 rare words"):
        model(ids, rare_spans=torch.tensor([[[4, 0, 0]], [[-1, -1, -1]]]))
    with pytest.raises(ValueError, match="overlap"):
        model(ids, rare_spans=torch.tensor([[[1, 0, 2], [2, 2, 3]], [[-1, -1, -1]] * 2]))
    with pytest.raises(ValueError, match="start <= end"):
        model(ids, rare_spans=torch.tensor([[[1, 3, 10]], [[-1, -1, -1]]]))


@pytest.fixture(scope="module")
def corpus_and_tokenizer():
    from graftkit.data.text import english_sentences
    from graftkit.experiments.tnf import wordpiece_tokenizer

    sentences = english_sentences()[:300]
    return sentences, wordpiece_tokenizer(sentences, vocab_size=400, model_max_length=24)


def test_vocabulary_spans_name_the_rare_words(corpus_and_tokenizer, tmp_path):
    from hf_models.tnf import tokenizer_words

    sentences, tokenizer = corpus_and_tokenizer
    vocab = RareVocabulary.build(tokenizer, sentences, 3, 6)
    assert vocab.words and all(3 <= c <= 6 for c in vocab.counts)
    examples = vocab.tokenize(tokenizer, sentences[:20], max_length=24)
    multi = 0
    for text, example in zip(sentences[:20], examples):
        words = tokenizer_words(tokenizer, text)
        for w, s, t in example["rare_spans"]:
            assert t < len(example["input_ids"]) <= 24
            pieces = tokenizer.convert_ids_to_tokens(example["input_ids"][s:t + 1])
            assert "".join(p.removeprefix("##") for p in pieces) == vocab.words[w] and vocab.words[w] in words
            multi += t > s
    assert multi > 0  # rare words split into several subwords
    vocab.save(tmp_path / "tok" / "tnf_rare_words.json")
    tokenizer.save_pretrained(tmp_path / "tok")
    assert RareVocabulary.load(tmp_path / "tok", tokenizer).words == vocab.words


def test_vocabulary_missing_or_from_another_tokenizer(corpus_and_tokenizer, tmp_path):
    from graftkit.experiments.tnf import wordpiece_tokenizer

    sentences, tokenizer = corpus_and_tokenizer
    with pytest.raises(GraftkitError, match="rare-word vocabulary not found: .*build-vocab"):
        RareVocabulary.load(tmp_path, tokenizer)
    RareVocabulary.build(tokenizer, sentences, 3, 6).save(tmp_path / "v.json")
    other = wordpiece_tokenizer(sentences, vocab_size=300)
    with pytest.raises(GraftkitError, match="built with another tokenizer"):
        RareVocabulary.load(tmp_path / "v.json", other)
    tokenizer(sentences[0], truncation=True, max_length=8)  # truncation settings do not change the identity
    assert RareVocabulary.load(tmp_path / "v.json", tokenizer)
    (tmp_path / "bad.json").write_text('{"format": "something else"}')
    with pytest.raises(GraftkitError, match="not a TNF rare-word vocabulary"):
        RareVocabulary.load(tmp_path / "bad.json", tokenizer)


def test_build_vocab_command(corpus_and_tokenizer, tmp_path, capsys):
    from graftkit.cli import main

    sentences, tokenizer = corpus_and_tokenizer
    tokenizer.save_pretrained(tmp_path / "tok")
    (tmp_path / "corpus.txt").write_text("\n".join(sentences) + "\n")
    args = ["tnf", "build-vocab", "--tokenizer", str(tmp_path / "tok"), "--corpus", str(tmp_path / "corpus.txt"),
            "--min-count", "3", "--max-count", "6"]
    assert main(args) == 0 and "rare words" in capsys.readouterr().out
    vocab = RareVocabulary.load(tmp_path / "tok", tokenizer)
    assert vocab.words == RareVocabulary.build(tokenizer, sentences, 3, 6).words
    assert main(args) == 2 and "--force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    assert main([*args[:-4], "--min-count", "7", "--max-count", "2", "--force"]) == 2
    assert "min_count (7) must be <= max_count (2)" in capsys.readouterr().err
    assert main([*args[:5], str(tmp_path / "none.txt")]) == 2
    assert "corpus file not found" in capsys.readouterr().err


def test_collator_and_trainer(corpus_and_tokenizer, tmp_path):
    from safetensors.torch import load_file
    from transformers import Trainer, TrainingArguments

    sentences, tokenizer = corpus_and_tokenizer
    vocab = RareVocabulary.build(tokenizer, sentences, 3, 6)
    examples = vocab.tokenize(tokenizer, sentences[:64], max_length=24)
    collator = DataCollatorForTnf(tokenizer=tokenizer, mlm_probability=0.15)
    batch = collator(examples[:4])
    assert batch["rare_spans"].shape[0] == 4 and batch["rare_spans"].shape[2] == 3
    assert batch["rare_spans"].tolist()[0][: len(examples[0]["rare_spans"])] == examples[0]["rare_spans"]
    assert "rare_spans" in examples[0]  # the caller's examples are not modified
    with pytest.raises(ValueError, match="rare_spans"):
        collator([{"input_ids": [2, 7, 3]}])
    torch.manual_seed(0)
    model = TnfForMaskedLM(TnfConfig(**{**SIZE, "vocab_size": len(tokenizer)}, num_rare_words=len(vocab),
                                     pad_token_id=tokenizer.pad_token_id))
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=16,
                             save_steps=4, report_to=[], use_cpu=True, logging_steps=1, seed=0)
    Trainer(model=model, args=args, train_dataset=examples, data_collator=collator).train()
    assert model.notes.has_note.sum() > 0  # notes were taken during the Trainer's steps
    saved = load_file(tmp_path / "checkpoint-4" / "model.safetensors")  # the Trainer's checkpoint holds them
    assert torch.equal(saved["notes.notes"], model.notes.notes)
    assert torch.equal(saved["notes.has_note"], model.notes.has_note)


def test_inputs_embeds_route_gives_the_formula_on_hf_bert():
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    host = BertForMaskedLM(BertConfig(**SIZE)).eval()
    ids, mask, spans, _ = _batch()
    nd = NoteDictionary(4, 16)
    nd.notes.normal_()
    nd.has_note.fill_(True)
    mix, notes = nd.token_notes(spans, ids.shape[1])
    emb = host.bert.embeddings
    positions = torch.arange(ids.shape[1])[None]
    with torch.no_grad():
        tok, pos = emb.word_embeddings(ids), emb.position_embeddings(positions)
        inputs = note_inputs_embeds(tok, pos, notes, mix, 0.5)
    seen = []
    emb.LayerNorm.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        out = host(inputs_embeds=inputs, attention_mask=mask, position_ids=positions, output_hidden_states=True)
    typ = emb.token_type_embeddings.weight[0]
    expected = torch.where(mix[..., None], 0.5 * (tok + pos) + 0.5 * notes, tok + pos) + typ
    torch.testing.assert_close(seen[0], expected)
    nd.update(out.hidden_states[-1], spans, mask)  # notes from the host's final layer


@pytest.mark.parametrize("positions", ["no_mask", "left_padding", "explicit"])
def test_the_mix_uses_the_positions_the_backbone_adds(monkeypatch, positions):
    """The mix subtracts the position vectors the backbone then adds (the core's resolve_position_ids): the
    mixed tokens get exactly (1 - λ)(tok + pos) + λ ND + type whatever the positions come from."""
    from hf_models.core.embeddings import resolve_position_ids

    model = _model(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    ids, mask, spans, _ = _batch()
    mask = {"no_mask": None, "left_padding": mask.flip(-1), "explicit": mask}[positions]
    position_ids = torch.arange(3, 13)[None] if positions == "explicit" else None
    notes = torch.randn(4, 16)
    model.notes.notes.copy_(notes)
    model.notes.has_note.fill_(True)
    emb = model.bert.embeddings
    sums = []
    original = type(emb).sum_embeddings
    monkeypatch.setattr(type(emb), "sum_embeddings",
                        lambda self, *a, **k: sums.append(original(self, *a, **k)) or sums[-1])
    mix, token_notes = model.notes.token_notes(spans, 10)  # ND[w] of each token's rare word, before the update
    assert mix.sum() == 7 and torch.equal(token_notes[1, 0], notes[1])
    model(ids, attention_mask=mask, position_ids=position_ids, rare_spans=spans)
    with torch.no_grad():
        tok = emb.word_embeddings(ids)
        pos = emb.position_embeddings(resolve_position_ids(position_ids, mask, 10, ids.device))
        typ = emb.token_type_embeddings.weight[0]
        expected = torch.where(mix[..., None], 0.5 * (tok + pos) + 0.5 * token_notes, tok + pos) + typ
    torch.testing.assert_close(sums[0], expected, rtol=1e-6, atol=1e-6)


def test_training_forward_names_bad_ids_before_it_looks_rows_up():
    """The training path looks word and position rows up itself (to mix notes in): bad ids must still get the
    core's message, not an IndexError from the embedding table."""
    model = _model().train()
    too_long = torch.randint(5, SIZE["vocab_size"], (1, SIZE["max_position_embeddings"] + 1))
    no_spans = torch.tensor([[[-1, -1, -1]]])
    with pytest.raises(ValueError, match="exceeds max_position_embeddings=24"):
        model(too_long, rare_spans=no_spans)
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, vocab_size=60\)"):
        model(torch.tensor([[5, 60, 7]]), rare_spans=no_spans)
    with pytest.raises(ValueError, match="position_ids must lie"):
        model(torch.tensor([[5, 6, 7]]), position_ids=torch.tensor([[0, 1, 24]]), rare_spans=no_spans)


@pytest.mark.parametrize("first_note", ["replace", "ema"])
def test_init_weights_sets_every_weight_and_buffer(first_note):
    config = TnfConfig(**SIZE, num_rare_words=4, first_note=first_note)
    assert_init_sets_every_weight(TnfForMaskedLM, config)
    # buffers are compared exactly: a random "ema" start is drawn with std 0 here, as transformers' test does
    assert_init_sets_every_buffer(TnfForMaskedLM, TnfConfig(**SIZE, num_rare_words=4, first_note=first_note,
                                                            initializer_range=0.0))


@pytest.mark.parametrize("tnf_class", [TnfForSequenceClassification, TnfForTokenClassification])
def test_a_tnf_folder_fine_tunes_as_its_backbone(tmp_path, tnf_class):
    """A TNF folder (notes included) loads into TNF's classifiers, which equal the backbone's classifiers
    loaded from the backbone's folder: the notes are left out, every other weight is the same."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    model = _model()
    ids, mask, spans, labels = _batch()
    model.train()(ids, attention_mask=mask, labels=labels, rare_spans=spans)  # notes taken
    model.save_pretrained(tmp_path / "tnf")
    model.backbone().save_pretrained(tmp_path / "backbone")
    auto = {TnfForSequenceClassification: AutoModelForSequenceClassification,
            TnfForTokenClassification: AutoModelForTokenClassification}[tnf_class]
    torch.manual_seed(0)  # the classifier's head is new in both: the same seed draws the same head
    tnf = auto.from_pretrained(tmp_path / "tnf", num_labels=3).eval()
    torch.manual_seed(0)
    backbone = auto.from_pretrained(tmp_path / "backbone", num_labels=3).eval()
    assert type(tnf) is tnf_class and "notes" not in dict(tnf.named_modules())
    with torch.no_grad():
        assert torch.equal(tnf(ids, attention_mask=mask).logits, backbone(ids, attention_mask=mask).logits)
    assert_init_sets_every_weight(tnf_class, tnf.config)
    assert_init_sets_every_buffer(tnf_class, tnf.config)


@pytest.mark.parametrize("first_note", ["replace", "ema"])
def test_notes_start_from_the_init_when_loading_a_backbone_folder(tmp_path, first_note):
    """A backbone (BERT) folder has no notes: loading it into TNF gives the notes the init gives, never memory."""
    from hf_models import PreLNBertConfig, PreLNBertForMaskedLM

    torch.manual_seed(0)
    backbone = PreLNBertForMaskedLM(PreLNBertConfig(**SIZE, layer_norm_position="post"))
    backbone.save_pretrained(tmp_path)
    model = TnfForMaskedLM.from_pretrained(tmp_path, num_rare_words=50, first_note=first_note)
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, backbone.bert.embeddings.word_embeddings.weight)
    notes = model.notes
    if first_note == "replace":
        assert not notes.has_note.any() and torch.equal(notes.notes, torch.zeros(50, 16))
    else:
        assert notes.has_note.all() and 0.01 < float(notes.notes.std()) < 0.03  # N(0, 0.02²)


def test_a_bf16_model_trains():
    model = _model(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train().to(torch.bfloat16)
    ids, mask, spans, labels = _batch()
    labels[0, 5] = ids[0, 5]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # the first step takes notes, the second mixes them in and updates them by EMA
        loss = model(ids, attention_mask=mask, labels=labels, rare_spans=spans).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.dtype == torch.bfloat16 and torch.isfinite(loss)
    assert model.notes.has_note.tolist() == [True, True, True, True] and torch.isfinite(model.notes.notes).all()


def _training_inputs():
    ids, mask, spans, labels = _batch()
    labels[0, 5] = ids[0, 5]
    return dict(input_ids=ids, attention_mask=mask, labels=labels, rare_spans=spans)


@pytest.mark.slow
def test_training_forward_compiles_and_exports_with_the_note_update():
    """fullgraph=True and torch.export take the whole training step, the note update included (fixed shapes:
    dense per-word sums), and give eager's loss, gradients and notes."""
    eager = _model(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin, fullgraph=True, backend="aot_eager")
    for _ in range(2):  # first notes, then mixed and EMA-updated
        want = eager(**_training_inputs()).loss
        got = compiled(**_training_inputs()).loss
        torch.testing.assert_close(got, want)
        want.backward()
        got.backward()
        torch.testing.assert_close(twin.notes.notes, eager.notes.notes)
        assert torch.equal(twin.notes.has_note, eager.notes.has_note)
    grad = twin.bert.embeddings.word_embeddings.weight.grad
    torch.testing.assert_close(grad, eager.bert.embeddings.word_embeddings.weight.grad)
    exported = _model(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    exported.notes.notes.copy_(twin.notes.notes)
    exported.notes.has_note.copy_(twin.notes.has_note)
    program = torch.export.export(exported, (), kwargs=_training_inputs()).module()
    reference = copy.deepcopy(exported)
    torch.testing.assert_close(program(**_training_inputs()).loss, reference(**_training_inputs()).loss)
    torch.testing.assert_close(program.notes.notes, reference.notes.notes)  # the update is in the program


def _byte_level_bpe(texts):
    """A RoBERTa-style byte-level BPE tokenizer (GPT-2 pre-tokenizer, 'Ġ' marks a word after a space)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=500, special_tokens=_SPECIALS,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return _with_specials(tok)


def _sentencepiece(texts):
    """A SentencePiece-style Unigram tokenizer (Metaspace pre-tokenizer, '▁' marks a word)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainers.UnigramTrainer(vocab_size=500, special_tokens=_SPECIALS,
                                                           unk_token="<unk>"))
    return _with_specials(tok)


_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]


def _with_specials(tok):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", mask_token="<mask>")


def _word_level(texts):
    """A WordLevel tokenizer over whitespace-split words (a fairseq dictionary's: every token a whole word)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=_SPECIALS))
    return _with_specials(tok)


@pytest.fixture(scope="module", params=["wordpiece", "byte_level_bpe", "sentencepiece", "word_level"])
def any_tokenizer(request, corpus_and_tokenizer):
    sentences, wordpiece = corpus_and_tokenizer
    make = {"wordpiece": lambda texts: wordpiece, "byte_level_bpe": _byte_level_bpe,
            "sentencepiece": _sentencepiece, "word_level": _word_level}[request.param]
    return sentences, make(sentences)


def _padded(examples, pad_id):
    ids = torch.full((len(examples), max(len(e["input_ids"]) for e in examples)), pad_id)
    for row, example in enumerate(examples):
        ids[row, : len(example["input_ids"])] = torch.tensor(example["input_ids"])
    return ids


def test_the_model_finds_the_collators_rare_spans_in_token_ids(any_tokenizer):
    """WordPiece '##', byte-level BPE 'Ġ' (with GPT-2's class and whitespace splits), SentencePiece '▁' and
    WordLevel (every token a word): the spans found in the padded token ids are exactly RareVocabulary.tokenize's
    (DataCollatorForTnf's)."""
    from hf_models.tnf import RareWordFinder

    sentences, tokenizer = any_tokenizer
    vocab = RareVocabulary.build(tokenizer, sentences, 3, 6)
    examples = vocab.tokenize(tokenizer, sentences)
    fields = vocab.config_fields(tokenizer)
    assert fields["num_rare_words"] == len(vocab) and len(fields["word_boundary_marks"]) == 2 * len(tokenizer)
    found = RareWordFinder(fields["rare_word_token_ids"], fields["word_boundary_marks"])(
        _padded(examples, tokenizer.pad_token_id))
    total = multi = 0
    for row, example in enumerate(examples):
        assert sorted(map(tuple, example["rare_spans"])) == sorted(tuple(s) for s in found[row].tolist() if s[0] >= 0)
        total += len(example["rare_spans"])
        multi += sum(t > s for _, s, t in example["rare_spans"])
    word_level = type(tokenizer.backend_tokenizer.model).__name__ == "WordLevel"  # one token per word
    assert total > 500 and (multi > 300 if not word_level else multi == 0)  # many, most of several tokens


def test_rare_word_finder_by_hand():
    from hf_models.tnf import RareWordFinder

    # ids: 0 [CLS] (x), 1 "a" (s), 2 "##b" (c), 3 "c" (s); rare words: "a ##b" (w0) and "c" (w1)
    finder = RareWordFinder([[1, 2], [3]], "x-s-c-s-")
    ids = torch.tensor([[0, 1, 2, 3, 1], [0, 1, 2, 2, 0]])  # row 1: "a ##b ##b" is another word: not w0
    assert finder(ids).tolist() == [[[0, 1, 2], [1, 3, 3]], [[-1, -1, -1], [-1, -1, -1]]]
    assert finder.word_starts(ids).tolist() == [[True, True, False, True, True], [True, True, False, False, True]]
    with pytest.raises(ValueError, match="same token ids"):
        RareWordFinder([[1, 2], [1, 2]], "x-s-c-s-")


def test_the_stored_vocabulary_is_checked():
    with pytest.raises(ValueError, match="give both or neither"):
        TnfConfig(**SIZE, num_rare_words=1, rare_word_token_ids=[[5]])
    with pytest.raises(ValueError, match="num_rare_words=2"):
        TnfConfig(**SIZE, num_rare_words=2, rare_word_token_ids=[[5]], word_boundary_marks="s-" * 60)
    with pytest.raises(ValueError, match=r"token ids in \[0, vocab_size=60\)"):
        TnfConfig(**SIZE, num_rare_words=1, rare_word_token_ids=[[60]], word_boundary_marks="s-" * 60)
    with pytest.raises(ValueError, match="two marks per token id"):
        TnfConfig(**SIZE, num_rare_words=1, rare_word_token_ids=[[5]], word_boundary_marks="s?" * 60)


@pytest.mark.slow
def test_any_collator_trains_the_notes_and_the_folder_loads_without_graftkit(corpus_and_tokenizer, tmp_path):
    """The stock DataCollatorForLanguageModeling (no rare_spans) under HF's Trainer: the model finds the rare
    words itself, from the masked batch's original text, and its Trainer checkpoint, saved with its code and
    vocabulary, trains on in a fresh process with trust_remote_code=True and no graftkit."""
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    sentences, tokenizer = corpus_and_tokenizer
    vocab = RareVocabulary.build(tokenizer, sentences, 3, 6)
    # whole sentences (a word that truncation cuts has no span in the collator's examples)
    examples = [e for e in vocab.tokenize(tokenizer, sentences) if len(e["input_ids"]) <= 64][:64]
    plain = [{"input_ids": e["input_ids"]} for e in examples]
    collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=0.15)
    torch.manual_seed(0)
    model = TnfForMaskedLM(TnfConfig(**{**SIZE, "vocab_size": len(tokenizer), "max_position_embeddings": 64},
                                     pad_token_id=tokenizer.pad_token_id, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0, **vocab.config_fields(tokenizer)))
    batch = collator(plain[:8])
    assert (batch["input_ids"] != _padded(examples[:8], tokenizer.pad_token_id)).any()  # masked
    spans = model.find_rare_spans(batch["input_ids"], batch["labels"])
    for row, example in enumerate(examples[:8]):
        assert sorted(map(tuple, example["rare_spans"])) == sorted(tuple(s) for s in spans[row].tolist() if s[0] >= 0)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=16, save_steps=2,
                             report_to=[], use_cpu=True, seed=0)
    Trainer(model=model, args=args, train_dataset=plain, data_collator=collator).train()
    assert model.notes.has_note.sum() > 0
    torch.save({"batch": dict(collator(plain[:8])), "notes": model.notes.notes}, tmp_path / "batch.pt")
    (tmp_path / "load.py").write_text(_REMOTE_TRAIN)
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, str(tmp_path / "load.py"), str(tmp_path / "checkpoint-2"),
                           str(tmp_path / "batch.pt"), str(tmp_path / "out.pt")], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = torch.load(tmp_path / "out.pt")
    assert result["module"].startswith("transformers_modules.") and result["found"] > 0
    model.train()
    batch = torch.load(tmp_path / "batch.pt")["batch"]
    with torch.no_grad():
        model(**batch)
    torch.testing.assert_close(result["notes"], model.notes.notes)  # the same step, notes included


_REMOTE_TRAIN = WITHOUT_GRAFTKIT + textwrap.dedent("""
    import torch
    from transformers import AutoModelForMaskedLM
    model = AutoModelForMaskedLM.from_pretrained(sys.argv[1], trust_remote_code=True).train()
    assert not any(m.startswith(("graftkit", "hf_models")) for m in sys.modules), "graftkit was imported"
    saved = torch.load(sys.argv[2])
    assert torch.equal(model.notes.notes, saved["notes"])
    spans = model.find_rare_spans(saved["batch"]["input_ids"], saved["batch"]["labels"])
    with torch.no_grad():
        model(**saved["batch"])
    torch.save({"module": type(model).__module__, "found": int((spans[..., 0] >= 0).sum()),
                "notes": model.notes.notes}, sys.argv[3])
""")


def test_training_without_a_vocabulary_or_spans_warns_once():
    model = _model().train()
    ids, mask, _, labels = _batch()
    with pytest.warns(UserWarning, match="TNF is training as its plain backbone") as caught:
        model(ids, attention_mask=mask, labels=labels)
    assert caught[0].filename == __file__  # reported at the line that called the model
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(ids, attention_mask=mask, labels=labels)  # once
        model.eval()(ids, attention_mask=mask)  # evaluation is the backbone anyway: no warning
    assert not model.notes.has_note.any()


def test_init_weights_sets_the_rare_word_tables():
    config = TnfConfig(**SIZE, num_rare_words=2, rare_word_token_ids=[[5, 6], [7]], word_boundary_marks="s-" * 60)
    assert_init_sets_every_weight(TnfForMaskedLM, config)
    assert_init_sets_every_buffer(TnfForMaskedLM, config)


@pytest.mark.slow
def test_training_forward_compiles_and_exports_when_the_model_finds_the_spans():
    """Without rare_spans the model finds them in input_ids (fixed shapes while compiling): compiled with
    fullgraph=True and exported, equal to eager."""
    # ids 0-4 special, "5 ##6" is rare word 0, "7" rare word 1
    config = TnfConfig(**{**SIZE, "num_rare_words": 2}, rare_word_token_ids=[[5, 6], [7]],
                       word_boundary_marks="x-" * 5 + "s-c-" + "s-" * 53, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    eager = TnfForMaskedLM(config).train()
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin, fullgraph=True, backend="aot_eager")
    ids = torch.tensor([[1, 5, 6, 7, 9, 0], [1, 7, 5, 6, 6, 0]])  # row 1: "5 ##6 ##6" is another word
    labels = torch.full_like(ids, -100)
    labels[0, 4] = 9
    for _ in range(2):
        torch.testing.assert_close(compiled(ids, labels=labels).loss, eager(ids, labels=labels).loss)
        torch.testing.assert_close(twin.notes.notes, eager.notes.notes)
    assert eager.notes.has_note.tolist() == [True, True]
    program = torch.export.export(copy.deepcopy(eager), (ids,), kwargs={"labels": labels}).module()
    torch.testing.assert_close(program(ids, labels=labels).loss, eager(ids, labels=labels).loss)
    torch.testing.assert_close(program.notes.notes, eager.notes.notes)
