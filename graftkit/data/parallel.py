"""A synthetic toy language pair with reordering and agreement, for translation tests and demos.

SYNTHETIC data. The source language ("src", German-like) is verb-final (subject object verb) with the
adjective after the noun, gendered articles, adjective endings that agree with the noun's gender and
number, and a verb ending that agrees with the subject's number; a time adverb comes first. The target
("tgt", English-like) is subject verb object with the adjective before the noun, the time adverb last,
a plural -s and a third-person -s on the verb. A translator must learn the lexicon, reorder, and carry
agreement across the sentence.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from graftkit.errors import GraftkitError

_NOUNS = ("dog", "cat", "bird", "horse", "farmer", "teacher", "child", "doctor", "king", "queen", "baker",
          "sailor", "student", "painter", "writer", "friend", "neighbor", "soldier", "driver", "singer",
          "apple", "letter", "house", "river", "garden", "window", "book", "song", "stone", "table")
_ADJECTIVES = ("old", "young", "small", "big", "happy", "quiet", "red", "green", "clever", "brave", "tired",
               "strange", "kind", "proud", "lazy", "tall")
_VERBS = ("see", "like", "help", "follow", "find", "call", "watch", "paint", "visit", "carry", "hear",
          "greet", "know", "meet", "thank", "miss")
_ADVERBS = ("today", "yesterday", "often", "never", "always", "tomorrow", "sometimes", "again")
_SYLLABLES = ("ka", "lo", "mi", "re", "tu", "sa", "ne", "po", "vi", "gu", "da", "fe", "zo", "bi", "wa", "xe",
              "ri", "mo", "ke", "ju")


def _coin_words(english: tuple[str, ...], rng: random.Random, used: set[str]) -> dict[str, str]:
    """Invent a distinct two-syllable source stem for every English word."""
    lexicon = {}
    for word in english:
        stem = rng.choice(_SYLLABLES) + rng.choice(_SYLLABLES)
        while stem in used:
            stem = rng.choice(_SYLLABLES) + rng.choice(_SYLLABLES) + rng.choice(_SYLLABLES)
        used.add(stem)
        lexicon[word] = stem
    return lexicon


@dataclass(frozen=True)
class _NounPhrase:
    noun: str
    adjective: str | None
    plural: bool


class ToyLanguagePair:
    """The grammar and lexicon are fixed by ``lexicon_seed``; sentences are drawn with ``sample(n, seed)``."""

    def __init__(self, lexicon_seed: int = 0) -> None:
        rng = random.Random(lexicon_seed)
        used: set[str] = set()
        self.nouns = _coin_words(_NOUNS, rng, used)
        self.adjectives = _coin_words(_ADJECTIVES, rng, used)
        self.verbs = _coin_words(_VERBS, rng, used)
        self.adverbs = _coin_words(_ADVERBS, rng, used)
        self.gender = {noun: rng.choice("mf") for noun in _NOUNS}

    def _phrase(self, rng: random.Random) -> _NounPhrase:
        return _NounPhrase(rng.choice(_NOUNS), rng.choice(_ADJECTIVES) if rng.random() < 0.5 else None,
                           rng.random() < 0.4)

    def _src_phrase(self, p: _NounPhrase) -> list[str]:
        agreement = "i" if p.plural else {"m": "o", "f": "a"}[self.gender[p.noun]]
        words = ["l" + agreement, self.nouns[p.noun] + ("en" if p.plural else "")]
        if p.adjective:
            words.append(self.adjectives[p.adjective] + agreement)
        return words

    @staticmethod
    def _tgt_phrase(p: _NounPhrase) -> list[str]:
        return ["the"] + ([p.adjective] if p.adjective else []) + [p.noun + ("s" if p.plural else "")]

    def sentence(self, rng: random.Random) -> tuple[str, str]:
        subject, obj, verb = self._phrase(rng), self._phrase(rng), rng.choice(_VERBS)
        adverb = rng.choice(_ADVERBS) if rng.random() < 0.5 else None
        src = ([self.adverbs[adverb]] if adverb else []) + self._src_phrase(subject) + self._src_phrase(obj)
        src.append(self.verbs[verb] + ("n" if subject.plural else "t"))
        tgt = self._tgt_phrase(subject) + [verb + ("" if subject.plural else "s")] + self._tgt_phrase(obj)
        tgt += [adverb] if adverb else []
        return " ".join(src), " ".join(tgt)

    def sample(self, n: int, seed: int = 0) -> list[tuple[str, str]]:
        """``n`` (source, target) sentence pairs."""
        rng = random.Random(seed)
        return [self.sentence(rng) for _ in range(n)]

    def monolingual_source(self, n: int, seed: int = 0) -> list[str]:
        """``n`` source-side sentences (e.g. for pre-training a source-language BERT)."""
        return [src for src, _ in self.sample(n, seed)]


class SynonymToyPair(ToyLanguagePair):
    """The toy pair where every source noun concept has two synonymous stems, for testing whether a BERT
    pre-trained on monolingual text carries knowledge the parallel data lacks (SYNTHETIC).

    Each noun concept gets a second stem (``synonyms``). Half of the concepts (``held_out``, fixed by
    ``lexicon_seed``) appear in the parallel training data with their first stem only, and the test set uses
    their second stem; the other concepts use either stem at random everywhere. The monolingual text uses
    both stems of every concept interchangeably, in contexts that tell the concept apart, so a masked LM can
    learn from them that the two stems mean the same: every concept has ``attributes_per_concept`` typical
    attribute words of its own (``attributes``, adjectives with agreement that occur in the monolingual text
    only, as a large monolingual corpus holds words a small parallel one lacks), and a noun phrase there
    carries one of them (after its other adjective, if any) ``attribute_rate`` of the time. In all text, each
    verb prefers a few object nouns and each noun a few generic adjectives (``preference`` of the time).
    """

    STEM_MODES = ("monolingual", "train", "test")

    def __init__(self, lexicon_seed: int = 0, preference: float = 0.8, attribute_rate: float = 0.9,
                 attributes_per_concept: int = 2) -> None:
        super().__init__(lexicon_seed)
        for name, rate in (("preference", preference), ("attribute_rate", attribute_rate)):
            if not 0 <= rate <= 1:
                raise GraftkitError(f"{name} must be in [0, 1], got {rate}")
        if isinstance(attributes_per_concept, bool) or not isinstance(attributes_per_concept, int) \
                or attributes_per_concept < 1:
            raise GraftkitError(f"attributes_per_concept must be an integer >= 1, got {attributes_per_concept!r}")
        rng = random.Random(lexicon_seed + 7919)
        used = set(self.nouns.values()) | set(self.adjectives.values()) | set(self.verbs.values()) \
            | set(self.adverbs.values())
        self.synonyms = _coin_words(_NOUNS, rng, used)
        self.held_out = frozenset(rng.sample(_NOUNS, len(_NOUNS) // 2))
        self.preference = preference
        self.preferred_objects = {verb: tuple(rng.sample(_NOUNS, 3)) for verb in _VERBS}
        self.preferred_adjectives = {noun: tuple(rng.sample(_ADJECTIVES, 2)) for noun in _NOUNS}
        # drawn last, so the parallel data (which never uses them) is the same whatever their settings
        self.attribute_rate = attribute_rate
        coined = _coin_words(tuple(f"{noun}/{k}" for noun in _NOUNS for k in range(attributes_per_concept)),
                             rng, used)
        self.attributes = {noun: tuple(coined[f"{noun}/{k}"] for k in range(attributes_per_concept))
                           for noun in _NOUNS}

    def _stem(self, noun: str, mode: str, rng: random.Random) -> str:
        if mode != "monolingual" and noun in self.held_out:
            return self.nouns[noun] if mode == "train" else self.synonyms[noun]
        return self.nouns[noun] if rng.random() < 0.5 else self.synonyms[noun]

    def _preferred_phrase(self, rng: random.Random, nouns: tuple[str, ...] | None) -> _NounPhrase:
        noun = rng.choice(nouns) if nouns and rng.random() < self.preference else rng.choice(_NOUNS)
        adjective = None
        if rng.random() < 0.5:
            adjectives = self.preferred_adjectives[noun]
            adjective = rng.choice(adjectives) if rng.random() < self.preference else rng.choice(_ADJECTIVES)
        return _NounPhrase(noun, adjective, rng.random() < 0.4)

    def _src_phrase_with(self, p: _NounPhrase, stem: str, attribute: str | None = None) -> list[str]:
        """The source noun phrase with ``stem`` for the noun and, if given, ``attribute`` after its adjective."""
        agreement = "i" if p.plural else {"m": "o", "f": "a"}[self.gender[p.noun]]
        words = ["l" + agreement, stem + ("en" if p.plural else "")]
        adjectives = ([self.adjectives[p.adjective]] if p.adjective else []) + ([attribute] if attribute else [])
        return words + [adjective + agreement for adjective in adjectives]

    def sentence_with_flag(self, rng: random.Random, mode: str) -> tuple[str, str, bool]:
        """(source, target, whether the source uses a held-out concept's second stem) for ``mode``:
        ``"monolingual"`` (both stems of every concept, concept attributes; no target: ``""``), ``"train"`` or
        ``"test"``."""
        if mode not in self.STEM_MODES:
            raise GraftkitError(f"mode must be one of {', '.join(self.STEM_MODES)}, got {mode!r}")
        verb = rng.choice(_VERBS)
        subject, obj = self._preferred_phrase(rng, None), self._preferred_phrase(rng, self.preferred_objects[verb])
        adverb = rng.choice(_ADVERBS) if rng.random() < 0.5 else None
        stems = [self._stem(p.noun, mode, rng) for p in (subject, obj)]
        attributes = [rng.choice(self.attributes[p.noun]) if rng.random() < self.attribute_rate else None
                      for p in (subject, obj)] if mode == "monolingual" else [None, None]
        src = ([self.adverbs[adverb]] if adverb else []) + self._src_phrase_with(subject, stems[0], attributes[0]) \
            + self._src_phrase_with(obj, stems[1], attributes[1])
        src.append(self.verbs[verb] + ("n" if subject.plural else "t"))
        held_out_stem = any(p.noun in self.held_out and stem == self.synonyms[p.noun]
                            for p, stem in zip((subject, obj), stems, strict=True))
        if mode == "monolingual":
            return " ".join(src), "", held_out_stem
        tgt = self._tgt_phrase(subject) + [verb + ("" if subject.plural else "s")] + self._tgt_phrase(obj)
        tgt += [adverb] if adverb else []
        return " ".join(src), " ".join(tgt), held_out_stem

    def sample_split(self, n: int, mode: str, seed: int = 0) -> tuple[list[tuple[str, str]], list[bool]]:
        """``n`` sentence pairs drawn for ``mode`` and, per pair, whether it uses a held-out second stem."""
        rng = random.Random(seed)
        drawn = [self.sentence_with_flag(rng, mode) for _ in range(n)]
        return [(src, tgt) for src, tgt, _ in drawn], [flag for _, _, flag in drawn]

    def monolingual_source(self, n: int, seed: int = 0) -> list[str]:
        """``n`` source sentences using both stems of every concept (BERT's pre-training text)."""
        return [src for src, _ in self.sample_split(n, "monolingual", seed)[0]]


def write_parallel_raw(out_dir: str | Path, splits: dict[str, list[tuple[str, str]]],
                       src_lang: str = "src", tgt_lang: str = "tgt") -> Path:
    """Write ``{split}.{src_lang}`` and ``{split}.{tgt_lang}`` files: the raw input of ``fairseq-preprocess``."""
    if src_lang == tgt_lang:
        raise GraftkitError("source and target language codes must differ")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, pairs in splits.items():
        if not pairs:
            raise GraftkitError(f"split {split!r} is empty")
        (out / f"{split}.{src_lang}").write_text("".join(s + "\n" for s, _ in pairs))
        (out / f"{split}.{tgt_lang}").write_text("".join(t + "\n" for _, t in pairs))
    return out
