import random

import pytest
import torch

from graftkit.data.images import digits, photo
from graftkit.data.parallel import SynonymToyPair, ToyLanguagePair, write_parallel_raw
from graftkit.data.text import (
    SPECIAL_TOKENS,
    WordVocab,
    english_documents,
    english_sentences,
    split_corpus,
    words,
)
from graftkit.errors import GraftkitError


@pytest.fixture(scope="module")
def sentences():
    return english_sentences()


def test_english_corpus_is_real_prose_and_deterministic(sentences):
    assert len(sentences) > 2000
    assert sum(len(words(s)) for s in sentences) > 40_000
    assert sentences == english_sentences()
    assert all(5 <= len(words(s)) <= 48 for s in sentences)
    assert len(set(sentences)) == len(sentences)


def test_documents_hold_the_same_sentences_grouped_by_source(sentences):
    documents = english_documents()
    assert all(documents) and len(documents) > 500
    flat = [s for doc in documents for s in doc]
    assert list(dict.fromkeys(flat)) == sentences  # the same sentences, in the same order, repeats kept per doc


def test_split_is_seeded_and_disjoint(sentences):
    train, valid = split_corpus(sentences, 0.1, seed=1)
    assert split_corpus(sentences, 0.1, seed=1) == (train, valid)
    assert split_corpus(sentences, 0.1, seed=2) != (train, valid)
    assert len(valid) == len(sentences) // 10 and not set(train) & set(valid)
    with pytest.raises(GraftkitError, match="valid_fraction"):
        split_corpus(sentences, 1.5)


def test_vocab_counts_and_order():
    vocab = WordVocab.build(["the cat sat.", "the dog sat", "the end"], min_count=1)
    assert vocab.tokens[: len(SPECIAL_TOKENS)] == list(SPECIAL_TOKENS)
    assert vocab.tokens[5:8] == ["the", "sat", "."]  # by count, ties alphabetical
    assert vocab.count("the") == 3 and vocab.count("[PAD]") == 0
    assert vocab.decode(vocab.encode("The cat flew")) == "the cat [UNK]"
    assert len(WordVocab.build(["a a b c"], min_count=2)) == len(SPECIAL_TOKENS) + 1
    assert len(WordVocab.build(["a a b c"], max_size=7)) == 7


def test_encode_rows_frame_pad_and_cut():
    vocab = WordVocab.build(["the cat sat", "the dog"])
    cls, sep, pad = (vocab.index[t] for t in ("[CLS]", "[SEP]", "[PAD]"))
    rows = vocab.encode_rows(["the cat sat", "dog"], max_len=4)
    assert rows.tolist() == [[cls, *vocab.encode("the cat"), sep], [cls, vocab.index["dog"], sep, pad]]


def test_vocab_save_load_and_hf_tokenizer_agree(tmp_path, sentences):
    vocab = WordVocab.build(sentences, min_count=2)
    vocab.save(tmp_path / "v.json")
    again = WordVocab.load(tmp_path / "v.json")
    assert again.tokens == vocab.tokens and again.counts == vocab.counts
    tok = vocab.to_hf_tokenizer()
    for s in sentences[:50]:
        ids = tok(s)["input_ids"]
        assert ids == [vocab.index["[CLS]"], *vocab.encode(s), vocab.index["[SEP]"]]
    with pytest.raises(GraftkitError, match="vocabulary file not found"):
        WordVocab.load(tmp_path / "missing.json")


def test_toy_pair_reorders_and_agrees():
    pair = ToyLanguagePair()
    assert pair.sample(50, seed=3) == ToyLanguagePair().sample(50, seed=3)
    assert pair.sample(50, seed=3) != pair.sample(50, seed=4)
    verb_of = {v: k for k, v in pair.verbs.items()}
    for src, tgt in pair.sample(300, seed=0):
        s, t = src.split(), tgt.split()
        stem, ending = s[-1][:-1], s[-1][-1]
        verb = verb_of[stem]  # source is verb-final
        subject_plural = ending == "n"
        # target: SVO, with third-person -s exactly when the subject is singular
        assert (verb in t) == subject_plural and ((verb + "s") in t) == (not subject_plural)
        assert t[0] == "the"
        # agreement in the source: article and adjective endings match
        for i, w in enumerate(s):
            if w in ("lo", "la", "li") and i + 2 < len(s) - 1 and s[i + 2][:-1] in pair.adjectives.values():
                assert s[i + 2][-1] == w[-1]


def test_write_parallel_raw(tmp_path):
    pairs = ToyLanguagePair().sample(10)
    out = write_parallel_raw(tmp_path, {"train": pairs[:8], "valid": pairs[8:]}, "de", "en")
    assert (out / "train.de").read_text().splitlines() == [s for s, _ in pairs[:8]]
    assert (out / "valid.en").read_text().splitlines() == [t for _, t in pairs[8:]]
    with pytest.raises(GraftkitError, match="split 'test' is empty"):
        write_parallel_raw(tmp_path, {"test": []})


def test_images():
    x, y = digits()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert set(y.tolist()) == set(range(10))
    assert photo("astronaut").shape == (512, 512, 3) and photo("china").shape == (427, 640, 3)
    with pytest.raises(GraftkitError, match="unknown photo 'lena'"):
        photo("lena")


def test_synonym_pair_hides_the_held_out_second_stems_from_training_and_tests_on_them():
    pair = SynonymToyPair(lexicon_seed=0)
    assert len(pair.held_out) == len(pair.nouns) // 2
    assert not set(pair.synonyms.values()) & set(pair.nouns.values())  # two distinct stems per concept
    hidden = {pair.synonyms[n] for n in pair.held_out}

    def stems(pairs):
        return {w.removesuffix("en") for src, _ in pairs for w in src.split()}

    train, train_flags = pair.sample_split(400, "train", seed=1)
    test, test_flags = pair.sample_split(400, "test", seed=2)
    mono = pair.monolingual_source(400, seed=3)
    assert not stems(train) & hidden and not any(train_flags)
    assert not {pair.nouns[n] for n in pair.held_out} & stems(test)  # the test uses their second stem only
    assert hidden <= stems(test) and hidden <= stems((s, "") for s in mono)
    for (src, _), flag in zip(test, test_flags, strict=True):
        assert flag == bool({w.removesuffix("en") for w in src.split()} & hidden)
    # the target side does not depend on which stem the source used
    rng_a, rng_b = random.Random(5), random.Random(5)
    assert pair.sentence_with_flag(rng_a, "train")[1] == pair.sentence_with_flag(rng_b, "test")[1]
    with pytest.raises(GraftkitError, match="mode must be one of"):
        pair.sample_split(3, "valid")


def test_synonym_pair_attributes_tell_concepts_apart_in_the_monolingual_text_only():
    pair = SynonymToyPair(lexicon_seed=0)
    attributes = {a: noun for noun, owned in pair.attributes.items() for a in owned}
    assert len(attributes) == 2 * len(pair.nouns)  # two of its own per concept, shared by no other concept
    words_used = set(pair.nouns.values()) | set(pair.synonyms.values()) | set(pair.adjectives.values()) \
        | set(pair.verbs.values()) | set(pair.adverbs.values())
    assert not set(attributes) & words_used
    stem_concept = {pair.nouns[n]: n for n in pair.nouns} | {pair.synonyms[n]: n for n in pair.nouns}
    mono = pair.monolingual_source(2000, seed=3)
    with_attribute = phrases = 0
    for sentence in mono:
        words = sentence.split()
        for i, word in enumerate(words):
            concept = stem_concept.get(word.removesuffix("en"))
            if concept is None:
                continue
            phrases += 1
            following = [w[:-1] for w in words[i + 1:i + 3] if w[:-1] in attributes]
            if following:
                with_attribute += 1
                assert attributes[following[0]] == concept  # the attribute belongs to the noun it follows
    assert abs(with_attribute / phrases - pair.attribute_rate) < 0.03
    # the parallel data never uses them, and does not depend on their settings
    stems = {w[:-1] for src, _ in pair.sample_split(400, "train", seed=1)[0] + pair.sample_split(400, "test", seed=2)[0]
             for w in src.split()}
    assert not stems & set(attributes)
    other = SynonymToyPair(lexicon_seed=0, attribute_rate=0.2, attributes_per_concept=3)
    for mode in ("train", "test"):
        assert other.sample_split(50, mode, seed=4) == pair.sample_split(50, mode, seed=4)
    assert pair.sample_split(5, "monolingual", seed=4)[0][0][1] == ""  # monolingual text has no target
    with pytest.raises(GraftkitError, match="attribute_rate must be in"):
        SynonymToyPair(attribute_rate=1.5)
    with pytest.raises(GraftkitError, match="attributes_per_concept must be an integer"):
        SynonymToyPair(attributes_per_concept=0)
