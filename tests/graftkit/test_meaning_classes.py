"""The SYNTHETIC meaning-class language of MC-BERT's experiment: its rows, its probe sets, the unigram baseline."""

from __future__ import annotations

import pytest
import torch

from graftkit.data.meaning_classes import MeaningGrammar, unigram_p_original
from graftkit.data.text import CLS, PAD, SEP
from graftkit.errors import GraftkitError

GRAMMAR = MeaningGrammar()


def _clauses(rows: torch.Tensor) -> list[list[str]]:
    vocab = GRAMMAR.vocab()
    words = [vocab.decode(r).split() for r in rows]
    out = []
    for w in words:
        assert w[0] == CLS and w[-1] == SEP and PAD not in w
        body = w[1:-1]
        out += [body[i:i + 4] for i in range(0, len(body), 5)]
        assert all(body[i] == "and" for i in range(4, len(body), 5))
    return out


def _object(word: str) -> tuple[int, int]:
    c, j = word[3:].split(".")
    return int(c), int(j)


def test_rows_have_fixed_slots_verbs_restrict_objects_adjectives_name_the_sub_sense():
    rows = GRAMMAR.corpus(400, seed=3)
    assert rows.shape == (400, GRAMMAR.max_len) and torch.equal(rows, GRAMMAR.corpus(400, seed=3))
    assert not torch.equal(rows, GRAMMAR.corpus(400, seed=4))
    neutral = adjectives = 0
    for subject, verb, modifier, obj in _clauses(rows):
        c, j = _object(obj)
        plural_subject, plural_verb = subject.endswith("-pl"), not verb.endswith("-s")
        assert plural_subject == plural_verb  # agreement
        if verb.startswith("see"):
            neutral += 1
        else:
            assert int(verb[4:].split(".")[0]) == c  # the verb takes only its class's objects
        if modifier != "the":
            adjectives += 1
            assert modifier == f"adj{c}.{j % 2}"  # the adjective names the object's sub-sense
    n = 400 * GRAMMAR.clauses_per_row
    assert abs(neutral / n - GRAMMAR.neutral_rate) < 0.05 and abs(adjectives / n - GRAMMAR.adjective_rate) < 0.05


def test_semantic_probe_tests_on_unseen_near_synonyms_of_every_sense():
    splits = {s: set(GRAMMAR.probe_nouns(s).tolist()) for s in ("train", "valid", "test")}
    assert not (splits["train"] & splits["valid"] or splits["train"] & splits["test"]
                or splits["valid"] & splits["test"])
    assert len(set().union(*splits.values())) == GRAMMAR.classes * GRAMMAR.nouns_per_class
    for nouns in splits.values():  # every (class, sub-sense) in every split
        assert set(GRAMMAR.sense(torch.tensor(sorted(nouns))).tolist()) == set(range(2 * GRAMMAR.classes))
    rows, column, labels = GRAMMAR.semantic_probe("test", 500, seed=1)
    vocab = GRAMMAR.vocab()
    assert rows.shape[0] == column.shape[0] == labels.shape[0] == 500
    for row, col, label in zip(rows[:50], column[:50], labels[:50], strict=True):
        words = vocab.decode(row).split()
        assert words[2].startswith("see") and words[3] == "the"  # class-neutral context
        c, j = _object(vocab.tokens[int(row[col])])
        assert c * GRAMMAR.nouns_per_class + j in splits["test"] and int(label) == 2 * c + j % 2
    assert len(set(labels.tolist())) == 2 * GRAMMAR.classes
    with pytest.raises(GraftkitError, match="split must be one of"):
        GRAMMAR.semantic_probe("dev", 5, seed=0)


def test_syntactic_probe_is_balanced_with_subjects_disjoint_between_splits():
    vocab = GRAMMAR.vocab()
    subjects = {}
    for split in ("train", "valid", "test"):
        rows, labels = GRAMMAR.syntactic_probe(split, 400, seed=2)
        assert labels.sum() == 200  # half grammatical
        words = [vocab.decode(r).split() for r in rows]
        for w, label in zip(words, labels, strict=True):
            assert (w[1].endswith("-pl") == (not w[2].endswith("-s"))) == bool(label)
        subjects[split] = {w[1].removesuffix("-pl") for w in words}
    assert not (subjects["train"] & subjects["valid"] or subjects["train"] & subjects["test"]
                or subjects["valid"] & subjects["test"])


def test_unigram_p_original_is_the_training_frequency_of_the_masked_token():
    # ids 5 and 6 are words (the special tokens come first): frequencies 3/4 and 1/4
    train = torch.tensor([[2, 5, 5, 3], [2, 5, 6, 3]])
    rows = torch.tensor([[2, 5, 6, 3]])
    masked = torch.tensor([[False, True, True, False]])
    assert unigram_p_original(train, rows, masked, 8) == pytest.approx((0.75 + 0.25) / 2)


def test_grammar_refuses_probe_splits_that_leave_no_test_words():
    with pytest.raises(GraftkitError, match="leave fewer than 2 test nouns"):
        MeaningGrammar(nouns_per_class=6, probe_train_nouns=4, probe_valid_nouns=2)
    with pytest.raises(GraftkitError, match="must be even"):
        MeaningGrammar(probe_train_nouns=3)
    with pytest.raises(GraftkitError, match="at most 1"):
        MeaningGrammar(adjective_rate=1.5)
