"""The shared masked-LM runs of the Pre-LN and TUPE experiments: corpus rows, BERT masking, the unigram
plateau, the schedule, the seeded training loop and steps-to-target."""

import math

import pytest
import torch

from graftkit.data.text import SPECIAL_TOKENS
from graftkit.errors import GraftkitError
from graftkit.experiments import mlm_run


@pytest.fixture(scope="module")
def corpus() -> mlm_run.MLMCorpus:
    return mlm_run.mlm_corpus(vocab_size=200, max_len=16)


def test_corpus_rows_are_cls_words_sep_then_padding(corpus):
    vocab = corpus.vocab
    assert len(vocab) == 200 and corpus.max_len == 16
    assert len(corpus.train) > 9 * len(corpus.valid) > 0  # the 90/10 split
    for row in corpus.train[:50].tolist():
        length = sum(t != corpus.pad for t in row)
        assert row[0] == vocab.index["[CLS]"] and row[length - 1] == vocab.index["[SEP]"]
        assert all(t == corpus.pad for t in row[length:])
        assert vocab.index["[CLS]"] not in row[1:length - 1] and vocab.index["[SEP]"] not in row[1:length - 1]


def test_bert_masking_keeps_special_tokens_and_labels_only_masked_positions(corpus):
    train, vocab = corpus.train, corpus.vocab
    inputs, labels = mlm_run.bert_mask(train, vocab, torch.Generator().manual_seed(0))
    words = train >= len(SPECIAL_TOKENS)
    chosen = labels != -100
    assert not (chosen & ~words).any()
    assert torch.equal(labels[chosen], train[chosen])
    assert torch.equal(inputs[~chosen], train[~chosen])
    assert 0.13 < chosen.sum() / words.sum() < 0.17
    masked = (inputs[chosen] == vocab.index["[MASK]"]).float().mean()
    assert 0.75 < masked < 0.85
    swapped = chosen & (inputs != vocab.index["[MASK]"]) & (inputs != train)
    assert (inputs[swapped] >= len(SPECIAL_TOKENS)).all()  # random replacements are words


def test_unigram_loss_is_the_cross_entropy_of_training_frequencies_on_the_validation_masks(corpus):
    first = len(SPECIAL_TOKENS)
    counts = [0.5] * (len(corpus.vocab) - first)
    for t in corpus.train.flatten().tolist():
        if t >= first:
            counts[t - first] += 1
    _, labels = mlm_run.bert_mask(corpus.valid, corpus.vocab,
                                  torch.Generator().manual_seed(mlm_run.VALID_MASK_SEED))
    targets = labels[labels != -100].tolist()
    expected = -sum(math.log(counts[t - first] / sum(counts)) for t in targets) / len(targets)
    assert mlm_run.unigram_loss(corpus) == pytest.approx(expected, rel=1e-9)
    assert mlm_run.unigram_loss(corpus) < math.log(len(corpus.vocab) - first)  # frequencies beat uniform


def test_warmup_schedule_is_linear_then_constant():
    training = mlm_run.MLMTraining(steps=10, eval_every=5, lr=1e-3, warmup_steps=3)
    assert [training.lr_factor(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert mlm_run.MLMTraining(steps=10, eval_every=5, lr=1e-3).lr_factor(0) == 1.0
    assert training.evaluations == 2


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "steps"), ("eval_every", 3, "multiple of eval_every"), ("lr", 0.0, "lr"),
    ("warmup_steps", -1, "warmup_steps"), ("batch", 0, "batch"), ("betas", (0.9, 1.0), "betas"),
])
def test_bad_training_settings_are_refused_by_name(field, value, message):
    settings = dict(steps=10, eval_every=5, lr=1e-3) | {field: value}
    with pytest.raises(GraftkitError, match=message):
        mlm_run.MLMTraining(**settings)


def _tiny_model(corpus):
    from hf_models import PreLNBertConfig, PreLNBertForMaskedLM

    config = PreLNBertConfig(vocab_size=len(corpus.vocab), hidden_size=16, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=32, max_position_embeddings=corpus.max_len,
                             type_vocab_size=0, pad_token_id=corpus.pad)
    return lambda: PreLNBertForMaskedLM(config)


def test_a_run_is_fixed_by_its_seed_and_reports_every_evaluation(corpus):
    training = mlm_run.MLMTraining(steps=4, eval_every=2, lr=1e-3, warmup_steps=1)
    seen = []
    curve = mlm_run.train_mlm(_tiny_model(corpus), corpus, training, seed=0, on_eval=seen.append)
    assert seen == [2, 4] and len(curve) == 2 and all(math.isfinite(v) for v in curve)
    assert curve[0] < math.log(len(corpus.vocab)) + 1  # a sane cross-entropy
    state = torch.get_rng_state()
    torch.rand(3)  # whatever the global random state, a run is fixed by its seed
    assert mlm_run.train_mlm(_tiny_model(corpus), corpus, training, seed=0) == curve
    assert mlm_run.train_mlm(_tiny_model(corpus), corpus, training, seed=1) != curve
    torch.set_rng_state(state)


def test_a_diverged_run_is_nan_from_the_first_non_finite_evaluation_on(corpus):
    training = mlm_run.MLMTraining(steps=6, eval_every=2, lr=1e30)
    curve = mlm_run.train_mlm(_tiny_model(corpus), corpus, training, seed=0)
    assert len(curve) == 3 and math.isnan(curve[-1])
    assert all(math.isnan(v) for v in curve[curve.index(next(v for v in curve if math.isnan(v))):])


def test_steps_to_reach_is_the_first_evaluation_at_or_below_target():
    assert mlm_run.steps_to_reach([5.0, 4.0, 3.0, 2.5], 3.0, eval_every=20) == 60
    assert mlm_run.steps_to_reach([5.0, math.nan, math.nan], 3.0, eval_every=20) is None
    assert mlm_run.steps_to_reach([], 3.0, eval_every=20) is None


def test_markov_rows_follow_the_chain_and_train_and_validation_differ():
    corpus = mlm_run.markov_corpus(words=20, successors=2, max_len=10, train_rows=300, valid_rows=50)
    vocab, first = corpus.vocab, len(SPECIAL_TOKENS)
    assert len(vocab) == first + 20 and corpus.train.shape == (300, 10) and corpus.valid.shape == (50, 10)
    for rows in (corpus.train, corpus.valid):
        assert (rows[:, 0] == vocab.index["[CLS]"]).all() and (rows[:, -1] == vocab.index["[SEP]"]).all()
        assert (rows[:, 1:-1] >= first).all()
    successors: dict[int, set[int]] = {}
    for row in torch.cat([corpus.train, corpus.valid])[:, 1:-1].tolist():
        for a, b in zip(row, row[1:]):
            successors.setdefault(a, set()).add(b)
    assert all(len(nexts) <= 2 for nexts in successors.values())  # each word has its 2 successors only
    assert not torch.equal(corpus.train[:50], corpus.valid)
    again = mlm_run.markov_corpus(words=20, successors=2, max_len=10, train_rows=300, valid_rows=50)
    assert torch.equal(again.train, corpus.train)  # the chain and rows follow the seed
    # the experiments' data: neighbours fix a word, frequencies do not (the unigram loss is near log(words))
    data = mlm_run.MarkovData()
    assert math.log(data.words) - 0.5 < mlm_run.unigram_loss(data.corpus()) < math.log(data.words)
    with pytest.raises(GraftkitError, match="successors"):
        mlm_run.markov_corpus(words=3, successors=4, max_len=10, train_rows=1, valid_rows=1)
    assert mlm_run.MarkovData().describe().startswith("SYNTHETIC")


def test_topic_rows_draw_their_words_from_one_topic_and_follow_the_seed():
    corpus = mlm_run.topic_corpus(words=30, topics=2, topic_words=3, max_len=16, train_rows=300, valid_rows=50)
    vocab, first = corpus.vocab, len(SPECIAL_TOKENS)
    assert len(vocab) == first + 30 and corpus.train.shape == (300, 16) and corpus.valid.shape == (50, 16)
    for rows in (corpus.train, corpus.valid):
        assert (rows[:, 0] == vocab.index["[CLS]"]).all() and (rows[:, -1] == vocab.index["[SEP]"]).all()
        assert (rows[:, 1:-1] >= first).all()
    row_words = [frozenset(row) for row in torch.cat([corpus.train, corpus.valid])[:, 1:-1].tolist()]
    full_topics = {words for words in row_words if len(words) == 3}
    # 14 words from 3: nearly every row shows its whole topic; two topics, and no row mixes them
    assert len(full_topics) == 2 and all(len(words) <= 3 for words in row_words)
    assert all(any(words <= topic for topic in full_topics) for words in row_words)
    assert not torch.equal(corpus.train[:50], corpus.valid)
    again = mlm_run.topic_corpus(words=30, topics=2, topic_words=3, max_len=16, train_rows=300, valid_rows=50)
    assert torch.equal(again.train, corpus.train)
    other = mlm_run.topic_corpus(words=30, topics=2, topic_words=3, max_len=16, train_rows=300, valid_rows=50,
                                 seed=1)
    assert not torch.equal(other.train, corpus.train)
    # the experiment's data: word frequencies say little (the unigram loss is near log(words))
    data = mlm_run.TopicData()
    assert math.log(data.words) - 0.5 < mlm_run.unigram_loss(data.corpus()) < math.log(data.words)
    assert data.describe().startswith("SYNTHETIC")
    with pytest.raises(GraftkitError, match="topic_words"):
        mlm_run.topic_corpus(words=3, topics=2, topic_words=4, max_len=10, train_rows=1, valid_rows=1)
    with pytest.raises(GraftkitError, match="topics"):
        mlm_run.topic_corpus(words=3, topics=0, topic_words=2, max_len=10, train_rows=1, valid_rows=1)


def test_left_plateau_gate_needs_every_arm_and_seed_below_the_margin():
    finals = {"a": [4.8, 4.95], "b": [4.5, 4.6]}
    gate = mlm_run.left_plateau_gate(finals, [0, 1], unigram=5.0)
    assert gate.name == "left_plateau" and not gate.passed and "(a, seed 1) is 4.950" in gate.detail
    assert mlm_run.left_plateau_gate({"a": [4.9, 4.8]}, [0, 1], unigram=5.0).passed
    assert not mlm_run.left_plateau_gate({"a": [4.0, math.nan]}, [0, 1], unigram=5.0).passed  # diverged
