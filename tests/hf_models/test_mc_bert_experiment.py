"""The mcbert-vs-electra-vs-mlm experiment's pieces at tiny sizes: the labelled pool and its splits, the
pre-training passages, the equal-FLOP budgets, the probe, fine-tuning, and the registered rule with its gate."""

from __future__ import annotations

import pytest
import torch

from graftkit.experiments import mcbert

TINY = mcbert.McBertSettings(budget_gflop=0.3, snapshots=2, seeds=1, finetune_epochs=2, hidden=16, layers=1,
                             heads=2, max_len=16, vocab=200, batch=4, calibration_batches=2)


@pytest.fixture(scope="module")
def tiny_data():
    from graftkit.data.text import WordVocab, english_documents

    texts = mcbert.passages(english_documents()[:80], set(), TINY.max_len - 2)
    built = WordVocab.build(texts, max_size=TINY.vocab - 1)
    vocab = WordVocab(built.tokens + [mcbert.NEITHER], built.counts)
    return vocab, vocab.encode_rows(texts, TINY.max_len)


def test_labelled_pool_is_balanced_and_labelled_by_source():
    from graftkit.data.text import english_sentences

    texts = list(mcbert._topic_texts().values())
    pool = mcbert.labelled_pool(english_sentences() + ["Not a sentence of any topic text at all."], 30, 0)
    assert [len(members) for members in pool] == [30] * len(mcbert.TOPICS)
    assert pool == mcbert.labelled_pool(english_sentences(), 30, 0)  # seeded
    for label, members in enumerate(pool):
        for sentence in members[:5]:  # found in its topic's text only
            assert [i for i, t in enumerate(texts) if mcbert._normalized(sentence) in t] == [label]
    assert len({s for members in pool for s in members}) == 30 * len(mcbert.TOPICS)
    smallest = mcbert.labelled_pool(english_sentences(), 10_000, 0)  # capped by the smallest topic
    assert len({len(members) for members in smallest}) == 1 and len(smallest[0]) < 10_000


def test_label_split_is_disjoint_per_topic_and_seeded():
    train, valid, test = mcbert.label_split(10, 3, 2, 3, seed=1)
    assert (len(train), len(valid), len(test)) == (6, 9, 15)
    assert sorted(train + valid + test) == list(range(30))
    assert [sum(r // 10 == t for r in train) for t in range(3)] == [2, 2, 2]
    assert mcbert.label_split(10, 3, 2, 3, seed=1) == (train, valid, test)
    assert mcbert.label_split(10, 3, 2, 3, seed=2) != (train, valid, test)
    with pytest.raises(ValueError, match="no test sentences"):
        mcbert.label_split(10, 3, 5, 5, seed=0)


def test_passages_stay_within_a_document_and_drop_held_out_sentences():
    documents = [["one two three.", "four five six seven.", "eight."], ["nine ten.", "held out here."]]
    assert mcbert.passages(documents, {"held out here."}, 7) == [
        "one two three .", "four five six seven . eight .", "nine ten ."]
    assert mcbert.passages([["a b c d e f g h i j."]], set(), 4) == ["a b c d e f g h i j ."]  # cut later


def test_discriminative_objectives_cost_more_flops_per_step(tiny_data):
    from graftkit.data.text import CLS, PAD, SEP
    from hf_models import McBertForPreTraining

    vocab, corpus = tiny_data
    special = torch.tensor([vocab.index[CLS], vocab.index[SEP]])
    flops = {}
    for objective in mcbert.OBJECTIVES:
        model = McBertForPreTraining(mcbert._config(objective, TINY, vocab))
        flops[objective] = mcbert.flops_per_step(model, corpus, TINY, vocab.index[PAD], special, seed=0)
        assert all(p.grad is None for p in model.parameters())  # the calibration leaves no gradients
    assert flops["mlm"] < flops["rtd"] < flops["mc"]  # the meta controller; MC-BERT's vocabulary head everywhere


def test_probe_separates_informative_features_and_not_constant_ones():
    labels = torch.arange(5).repeat_interleave(12)
    splits = [mcbert.label_split(12, 5, 4, 3, seed=s) for s in range(2)]
    informative = torch.nn.functional.one_hot(labels, 5).float() + 0.01 * torch.randn(60, 5)
    assert mcbert.probe_accuracy(informative, labels, splits) == 1.0
    assert mcbert.probe_accuracy(torch.ones(60, 3), labels, splits) == pytest.approx(0.2)


@pytest.mark.slow
def test_pretrain_to_equal_flops_then_probe_and_finetune(tiny_data):
    from graftkit.data.text import PAD

    vocab, corpus = tiny_data
    inputs, labels = corpus[:50], torch.arange(5).repeat_interleave(10)
    split = mcbert.label_split(10, 5, 3, 3, seed=0)
    for objective in mcbert.OBJECTIVES:
        snaps = mcbert.pretrain(objective, TINY, vocab, corpus, seed=0)
        assert [s["steps"] for s in snaps] == [round(snaps[-1]["steps"] / 2), snaps[-1]["steps"]]
        assert snaps[-1]["gflop"] == pytest.approx(TINY.budget_gflop, rel=0.5 / snaps[-1]["steps"] + 1e-9)
        assert not any(k.startswith("meta_controller") for k in snaps[-1]["state"])  # the main encoder only
        encoder = mcbert._encoder(snaps[-1]["state"], TINY, vocab, seed=0)
        features = mcbert.probe_features(encoder, inputs, vocab.index[PAD])
        assert features.shape == (50, (TINY.layers + 1) * TINY.hidden)
        assert 0.0 <= mcbert.probe_accuracy(features, labels, [split]) <= 1.0
        assert 0.0 <= mcbert.finetune(snaps[-1]["state"], TINY, vocab, inputs, labels, split, seed=0) <= 1.0
    random_init = [mcbert._encoder(None, TINY, vocab, seed=s).embeddings.word_embeddings.weight for s in (3, 3, 4)]
    assert torch.equal(random_init[0], random_init[1]) and not torch.equal(random_init[0], random_init[2])


def test_registered_rule_gates_on_pretraining_then_needs_every_seed():
    from graftkit.registry import load_all

    exp = load_all()["mcbert-vs-electra-vs-mlm"]
    assert exp.method == "mcbert" and "MLM" in exp.rule and "RTD" in exp.rule and "random" in exp.rule
    wins = {"pretraining_gain": 0.05, "mc_gap_min_mlm": 0.01, "mc_gap_mean_mlm": 0.02, "mc_gap_min_rtd": 0.005,
            "mc_gap_mean_rtd": 0.015}
    assert exp.verdict(wins) is True
    assert exp.verdict(wins | {"pretraining_gain": mcbert.GATE_MARGIN - 0.001}) is None  # cannot judge
    assert exp.verdict(wins | {"mc_gap_min_rtd": -0.001}) is False  # loses in one seed
    assert exp.verdict(wins | {"mc_gap_mean_mlm": mcbert.MIN_GAP - 0.001}) is False  # within the margin
