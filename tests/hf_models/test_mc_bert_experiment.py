"""The mcbert-vs-electra-vs-mlm experiment's pieces at tiny sizes: the topic task's labels, a time-budgeted
pre-training per objective, fine-tuning from its snapshot, and the registered rule."""

from __future__ import annotations

import pytest
import torch

from graftkit.experiments import mcbert


def test_topic_task_labels_sentences_by_their_source():
    from graftkit.data.text import english_sentences

    texts = mcbert._topic_texts()
    train, test = mcbert.topic_task(english_sentences() + ["Not a sentence of any topic text at all."], 20, 0)
    labels = [y for _, y in train + test]
    assert sorted(set(labels)) == list(range(len(mcbert.TOPICS)))
    assert all(labels.count(y) <= 20 for y in set(labels))
    for sentence, label in (train + test)[:30]:  # each labelled sentence is found in its topic's text only
        found = [i for i, text in enumerate(texts.values()) if mcbert._normalized(sentence) in text]
        assert found == [label]
    assert not {s for s, _ in train} & {s for s, _ in test}
    assert "Not a sentence of any topic text at all." not in {s for s, _ in train + test}


@pytest.mark.slow
def test_pretrain_snapshots_and_finetune_run_for_every_objective():
    from graftkit.data.text import WordVocab, english_sentences

    settings = mcbert.McBertSettings(budget_s=0.3, snapshots=2, finetune_steps=2, finetune_seeds=1, hidden=24,
                                     layers=1, heads=2, max_len=12, vocab=200, batch=4, per_topic=10)
    sentences = english_sentences()[:300]
    built = WordVocab.build(sentences, max_size=settings.vocab - 1)
    vocab = WordVocab(built.tokens + [mcbert.NEITHER], built.counts)
    corpus = mcbert._encode(vocab, sentences, settings.max_len)
    rows = (corpus[:16], torch.arange(16) % len(mcbert.TOPICS))
    for objective in mcbert.OBJECTIVES:
        snaps = mcbert.pretrain(objective, settings, vocab, corpus, seed=0)
        assert [s["budget_s"] for s in snaps] == [0.15, 0.3] and snaps[0]["steps"] <= snaps[1]["steps"]
        assert not any(k.startswith("meta_controller") for k in snaps[-1]["state"])  # the main encoder only
        accuracy = mcbert.finetune(snaps[-1]["state"], settings, vocab, rows, rows, seed=0)
        assert 0.0 <= accuracy <= 1.0


def test_registered_with_a_rule_over_every_arm():
    from graftkit.registry import load_all

    exp = load_all()["mcbert-vs-electra-vs-mlm"]
    assert exp.method == "mcbert" and "MLM" in exp.rule and "RTD" in exp.rule
    assert exp.verdict({"score_mc": 0.6, "score_rtd": 0.5, "score_mlm": 0.55}) is True
    assert exp.verdict({"score_mc": 0.6, "score_rtd": 0.6, "score_mlm": 0.55}) is False
