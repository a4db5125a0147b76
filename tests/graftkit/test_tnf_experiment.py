"""The tnf-vs-bert experiment: its SYNTHETIC rare-word corpus, the notes at evaluation and their shuffled
control, the gated verdict rule, and a tiny run's per-seed metrics."""

import dataclasses
import math
import warnings
from pathlib import Path

import pytest
import torch

from graftkit.data.rare_words import PARTNER, RareWordData
from graftkit.data.text import MASK, SPECIAL_TOKENS
from graftkit.experiments import tnf
from graftkit.registry import RunContext, load_all

SMALL = RareWordData(train_rows=400, valid_rows=50, occurrences=4)
TINY = dataclasses.replace(tnf.QUICK, pretrain_steps=4, steps=4, eval_every=2, hidden=16, batch=8, data=SMALL)


def test_rare_words_are_a_fifth_of_sentences_a_few_percent_of_tokens_each_a_handful_of_times():
    data = tnf.QUICK.data
    rare = data.make()
    train = rare.corpus.train
    in_row = rare.rare_mask(train)
    assert in_row.sum(1).max() == 1 and in_row.any(1).float().mean() == pytest.approx(0.2)
    share = in_row.sum() / (train >= len(SPECIAL_TOKENS)).sum()
    assert 0.01 < share < 0.05  # a few % of the word tokens
    counts = torch.bincount(train[in_row] - rare.first_rare, minlength=rare.num_rare)
    assert counts.tolist() == [data.occurrences] * rare.num_rare and data.occurrences <= 10
    # the note window [s - k, t + k] of a one-token rare word is much shorter than a row
    assert 2 * tnf.QUICK.note_half_window + 1 <= data.words / 4


def test_a_rare_word_shares_its_class_with_its_partner_and_the_probe_masks_only_that_partner():
    data = SMALL
    rare = data.make()
    first_class = len(SPECIAL_TOKENS) + data.fillers

    def class_of(ids):
        return (ids - first_class) // data.words_per_class

    train = rare.corpus.train
    rows = rare.rare_mask(train).any(1)
    words = train[rows, PARTNER - 1] - rare.first_rare
    assert torch.equal(class_of(train[rows, PARTNER]), rare.rare_classes[words])
    common = train[~rows]
    assert torch.equal(class_of(common[:, PARTNER - 1]), class_of(common[:, PARTNER]))
    # probes: every rare word, its partner masked with the label of its own class; the rest is fillers
    assert sorted(rare.probe_words.tolist()) == sorted(list(range(rare.num_rare)) * data.probes_per_word)
    targets = rare.probe_labels != -100
    assert targets.sum(1).eq(1).all() and targets[:, PARTNER].all()
    assert (rare.probe_inputs[:, PARTNER] == rare.corpus.vocab.index[MASK]).all()
    assert torch.equal(class_of(rare.probe_labels[:, PARTNER]), rare.rare_classes[rare.probe_words])
    inputs, labels = rare.common_partners()
    assert not rare.rare_mask(inputs).any() and len(inputs) > 0.7 * data.valid_rows
    assert (inputs[:, PARTNER] == rare.corpus.vocab.index[MASK]).all() and (labels != -100).sum() == len(inputs)
    assert torch.equal(class_of(labels[:, PARTNER]), class_of(inputs[:, PARTNER - 1]))
    rest = rare.probe_inputs[:, PARTNER + 1:-1]
    assert ((rest >= len(SPECIAL_TOKENS)) & (rest < first_class)).all()
    assert data.make().corpus.train.equal(train)  # fixed by its seed


def test_rare_spans_come_from_the_rows_in_position_order():
    rare = SMALL.make()
    r = rare.first_rare
    ids = torch.tensor([[2, r + 3, 7, r + 1, 3], [2, 6, 7, 8, 3]])
    assert rare.rare_spans(ids).tolist() == [[[3, 1, 1], [1, 3, 3]], [[-1, -1, -1], [-1, -1, -1]]]
    assert rare.rare_spans(ids[1:]).tolist() == [[[-1, -1, -1]]]


def test_shuffled_spans_give_every_rare_word_another_ones_note():
    spans = torch.tensor([[[w, 1, 1]] for w in range(6)] + [[[-1, -1, -1]]])
    shuffled = tnf.shuffled_spans(spans, 6, seed=0)
    words = shuffled[:6, 0, 0]
    assert sorted(words.tolist()) == list(range(6)) and (words != torch.arange(6)).all()
    assert torch.equal(shuffled[..., 1:], spans[..., 1:]) and shuffled[6].tolist() == [[-1, -1, -1]]


def test_eval_with_notes_mixes_exactly_as_the_training_forward_and_takes_no_note():
    data = SMALL.make()
    settings = dataclasses.replace(TINY, hidden=16)
    torch.manual_seed(0)
    model = tnf._build(settings, data)
    for module in model.modules():  # no dropout, so that training mode computes what eval mode does
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "dropout_prob"):
            module.dropout_prob = 0.0
    rows = data.corpus.train[:8]
    spans = data.rare_spans(rows)
    attention = torch.ones_like(rows)
    labels = torch.full_like(rows, -100)
    labels[:, -2] = rows[:, -2]
    model.train()
    model(rows, attention_mask=attention, rare_spans=spans)  # takes the first notes
    assert model.notes.has_note.any()
    notes = model.notes.notes.clone()
    with_notes = tnf.logits_with_notes(model, rows, attention, spans, labels)
    assert torch.equal(model.notes.notes, notes)  # evaluation takes no note
    model.train()
    trained = model(rows, attention_mask=attention, labels=labels, rare_spans=spans).logits
    torch.testing.assert_close(with_notes, trained)
    plain = tnf.logits_with_notes(model, rows, attention, None, labels)
    torch.testing.assert_close(plain, model.backbone().eval()(rows, attention_mask=attention).logits)
    assert not torch.allclose(plain, with_notes)


def test_training_without_notes_on_purpose_raises_no_warning_and_with_notes_takes_them():
    data = SMALL.make()
    valid = tnf.Validation.of(data)
    training = dataclasses.replace(TINY, steps=2, eval_every=2).continuation(1e-3)
    for take_notes in (False, True):
        torch.manual_seed(0)
        model = tnf._build(TINY, data)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # BERT trains as a TnfForMaskedLM without spans: no warning for that
            curve = tnf.train(model, data, training, 0, take_notes, lambda m, notes=take_notes: valid.loss(m, notes))
        assert len(curve) == 1 and math.isfinite(curve[0])
        assert bool(model.notes.has_note.any()) is take_notes


PASSING = {"failed_gate": None, "rare_bert_minus_tnf_ci_low": 0.2, "rare_shuffled_minus_tnf_ci_low": 0.1,
           "steps_fraction_tnf_ci_high": 0.6}


def test_the_rule_needs_the_gates_own_notes_and_the_speed_up():
    verdict = load_all()["tnf-vs-bert"].verdict
    assert load_all()["tnf-vs-bert"].method == "tnf"
    assert verdict(PASSING) is True
    assert verdict({**PASSING, "failed_gate": "left_plateau"}) is None
    assert verdict({k: v for k, v in PASSING.items() if k != "failed_gate"}) is None
    assert verdict({**PASSING, "rare_bert_minus_tnf_ci_low": -0.01}) is False
    assert verdict({**PASSING, "rare_shuffled_minus_tnf_ci_low": 0.0}) is False  # notes of any word would do
    assert verdict({**PASSING, "steps_fraction_tnf_ci_high": tnf.STEPS_FRACTION_BOUND + 0.01}) is False
    assert verdict({**PASSING, "steps_fraction_tnf_ci_high": tnf.STEPS_FRACTION_BOUND}) is True


def test_steps_fraction_counts_never_reached_one_evaluation_past_the_budget():
    assert tnf._censored_fraction(100, tnf.QUICK) == 100 / tnf.QUICK.steps
    assert tnf._censored_fraction(None, tnf.QUICK) == (tnf.QUICK.steps + tnf.QUICK.eval_every) / tnf.QUICK.steps


def test_quick_learning_rates_come_from_the_grid():
    assert set(tnf.LEARNING_RATES.quick) == set(tnf.ARMS)
    assert all(lr in tnf.LEARNING_RATES.grid for lr in tnf.LEARNING_RATES.quick.values())


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["quick", "full"])
def test_tiny_run_reports_gates_and_every_seed(tmp_path: Path, monkeypatch, mode):
    monkeypatch.setattr(tnf, "QUICK", TINY)
    monkeypatch.setattr(tnf, "FULL", TINY)
    stages = []
    outcome = tnf.tnf_vs_bert(RunContext(mode, 3, tmp_path, stages.append))
    m = outcome.metrics
    seeds = [3, 4] if mode == "quick" else [3, 4, 5]
    for name in ("loss_rare_bert", "loss_rare_tnf", "loss_rare_tnf_shuffled_notes", "loss_rare_tnf_without_notes",
                 "steps_fraction_tnf"):
        assert name in m and {f"{name}_seed{s}" for s in seeds} <= set(m)
    for name in ("rare_bert_minus_tnf", "rare_shuffled_minus_tnf"):
        assert m[f"{name}_ci_low"] <= m[f"{name}_mean"] <= m[f"{name}_ci_high"]
    assert m["steps_fraction_tnf_ci_low"] <= m["steps_fraction_tnf"] <= m["steps_fraction_tnf_ci_high"]
    assert all(math.isfinite(m[f"loss_rare_tnf_seed{s}"]) for s in seeds)
    assert {"gate_checkpoint_off_plateau", "gate_left_plateau", "gate_notes_taken", "gate_classes_learned"} <= set(m)
    assert {f"loss_common_partner_{arm}_seed{s}" for arm in tnf.ARMS for s in seeds} <= set(m)
    assert m["failed_gate"] == "checkpoint_off_plateau"  # 4 steps leave no plateau
    assert any("Undecided: gate 'checkpoint_off_plateau'" in c for c in outcome.caveats)
    assert load_all()["tnf-vs-bert"].verdict(m) is None
    assert stages[-1] == f"tnf lr {m['lr_tnf']:g} seed {seeds[-1]}: step 4/4"
    grid_rows = [r for r in outcome.table if "chosen" in r]
    assert len(grid_rows) == (0 if mode == "quick" else len(tnf.ARMS) * len(tnf.LEARNING_RATES.grid))
    # the arms of one seed branch from the same checkpoint: same data order, masks and starting weights
    again = tnf.tnf_vs_bert(RunContext(mode, 3, tmp_path / "again"))
    assert again.metrics == m


def test_rare_word_data_refuses_settings_that_leave_no_rare_word():
    from graftkit.errors import GraftkitError

    with pytest.raises(GraftkitError, match="rare_sentence_fraction must be in"):
        RareWordData(rare_sentence_fraction=1.0)
    with pytest.raises(GraftkitError, match="leave no rare word"):
        RareWordData(train_rows=10, occurrences=8)
