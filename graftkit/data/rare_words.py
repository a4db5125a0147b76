"""SYNTHETIC rows in which rare words carry a meaning recoverable only from their other sentences (TNF's setting).

Every row is ``[CLS] slot partner f1 .. fn [SEP]``: a *pair* of words, then filler words from a first-order
Markov chain (:func:`graftkit.experiments.mlm_run.markov_corpus`, which says nothing about meaning). The pair
sits at fixed places so that a 2-layer model learns within a few hundred steps that a class word follows the
slot (with the pair at random places in random order, a 2-layer, d-64 BERT still predicted fillers there after
700 steps):

- in a common row the slot and the partner are two **class words** of one hidden class (``classes`` classes
  of ``words_per_class`` words each): a masked partner is recovered from the slot;
- in a rare row the slot is a **rare word** and the partner a class word of the rare word's hidden class: each
  rare word is a rare alias of a class, and only its sentences' partners say which.

A fraction ``rare_sentence_fraction`` of the training rows are rare rows, each rare word in exactly
``occurrences`` of them. The *probe* rows put each rare word in the slot and mask the partner, a class word of
its class (drawn anew, the fillers new): the class word is then predictable only through what the model knows of
that rare word, from its other sentences (the fillers carry no class).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from graftkit.data.text import CLS, MASK, SEP, SPECIAL_TOKENS, WordVocab
from graftkit.errors import GraftkitError, check_int

#: where every row's partner sits: right after the slot (a class word, or a rare word), itself after [CLS]
PARTNER = 2


def mask_partners(rows: torch.Tensor, vocab: WordVocab) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` with every partner [MASK]ed, and the labels (the partner there, -100 elsewhere)."""
    labels = torch.full_like(rows, -100)
    labels[:, PARTNER] = rows[:, PARTNER]
    inputs = rows.clone()
    inputs[:, PARTNER] = vocab.index[MASK]
    return inputs, labels


@dataclass(frozen=True)
class RareWordCorpus:
    """The rows of :class:`RareWordData`.

    ``corpus``: training and validation rows (an :class:`MLMCorpus`); ``probe_inputs``/``probe_labels``: the
    probe rows with their class word masked ([MASK]; the label there, -100 elsewhere); ``probe_words``: each
    probe row's rare word (index into the rare words); ``rare_classes``: each rare word's hidden class; rare
    word ``i`` is token ``first_rare + i``."""

    corpus: object  # graftkit.experiments.mlm_run.MLMCorpus (imported lazily: the data package stays light)
    probe_inputs: torch.Tensor
    probe_labels: torch.Tensor
    probe_words: torch.Tensor
    rare_classes: torch.Tensor
    first_rare: int

    @property
    def num_rare(self) -> int:
        return len(self.rare_classes)

    def common_partners(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The validation rows without a rare word, their partner masked (:func:`mask_partners`): there the
        slot, a class word, shows the class, so the loss on them says whether a model has learned the classes."""
        common = self.corpus.valid[~self.rare_mask(self.corpus.valid).any(1)]
        return mask_partners(common, self.corpus.vocab)

    def rare_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """True where ``ids`` holds a rare word."""
        return (ids >= self.first_rare) & (ids < self.first_rare + self.num_rare)

    def rare_spans(self, ids: torch.Tensor) -> torch.Tensor:
        """TNF's ``rare_spans`` [batch, max(1, most rare words in a row), 3] of the (unmasked) rows ``ids``:
        (rare-word index, position, position) per rare word, in position order; -1 rows pad. A rare word is one
        token, so its span is that token."""
        rare = self.rare_mask(ids)
        width = max(1, int(rare.sum(1).max()))
        # a stable sort on "not rare" brings each row's rare positions first, in order
        positions = torch.sort((~rare).long(), dim=1, stable=True).indices[:, :width]
        real = rare.gather(1, positions)
        spans = torch.stack([ids.gather(1, positions) - self.first_rare, positions, positions], -1)
        return torch.where(real[..., None], spans, torch.full_like(spans, -1))


@dataclass(frozen=True)
class RareWordData:
    """The maker's settings (see the module docstring); :meth:`make` builds the rows, fixed by ``seed``."""

    classes: int = 16
    words_per_class: int = 2
    fillers: int = 32
    successors: int = 2
    max_len: int = 14
    train_rows: int = 8000
    valid_rows: int = 500
    rare_sentence_fraction: float = 0.2
    occurrences: int = 8
    probes_per_word: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("classes", "words_per_class", "fillers", "successors", "train_rows", "valid_rows",
                     "occurrences", "probes_per_word"):
            check_int(name, getattr(self, name))
        check_int("max_len", self.max_len, minimum=5)  # [CLS], the pair, one filler, [SEP]
        if not 0 < self.rare_sentence_fraction < 1:
            raise GraftkitError(f"rare_sentence_fraction must be in (0, 1), got {self.rare_sentence_fraction}")
        if self.num_rare < 1:
            raise GraftkitError(f"{self.train_rows} rows x {self.rare_sentence_fraction} rare rows / "
                                f"{self.occurrences} occurrences leave no rare word")

    @property
    def num_rare(self) -> int:
        """Rare words: the rare training rows shared ``occurrences`` each."""
        return round(self.rare_sentence_fraction * self.train_rows) // self.occurrences

    @property
    def words(self) -> int:
        """Words per row (fillers and the pair), between [CLS] and [SEP]."""
        return self.max_len - 2

    def vocab(self) -> WordVocab:
        """Special tokens, fillers ``w<i>`` (as :func:`markov_corpus` numbers them), class words ``c<class>_<j>``,
        rare words ``r<i>``."""
        return WordVocab(list(SPECIAL_TOKENS) + [f"w{i}" for i in range(self.fillers)]
                         + [f"c{c}_{j}" for c in range(self.classes) for j in range(self.words_per_class)]
                         + [f"r{i}" for i in range(self.num_rare)])

    def make(self) -> RareWordCorpus:
        from graftkit.experiments.mlm_run import MLMCorpus, markov_corpus

        vocab = self.vocab()
        first_class = len(SPECIAL_TOKENS) + self.fillers
        first_rare = first_class + self.classes * self.words_per_class
        probes = self.num_rare * self.probes_per_word
        chain = markov_corpus(self.fillers, self.successors, self.words, self.train_rows,
                              self.valid_rows + probes, seed=self.seed)
        fill_train, fill_rest = chain.train[:, 1:-1], chain.valid[:, 1:-1]  # filler token ids (same numbering)
        g = torch.Generator().manual_seed(self.seed + 1)
        rare_classes = torch.arange(self.num_rare) % self.classes
        rare_classes = rare_classes[torch.randperm(self.num_rare, generator=g)]

        def class_word(classes: torch.Tensor) -> torch.Tensor:
            return first_class + classes * self.words_per_class + torch.randint(
                self.words_per_class, classes.shape, generator=g)

        def rows(fill: torch.Tensor, rare_words: torch.Tensor) -> torch.Tensor:
            """``[CLS] slot partner fillers.. [SEP]``; ``rare_words[i]`` >= 0 makes row i a rare row (its slot
            holds that rare word, else a class word of the row's class)."""
            is_rare = rare_words >= 0
            classes = torch.where(is_rare, rare_classes[rare_words.clamp_min(0)],
                                  torch.randint(self.classes, (len(fill),), generator=g))
            slot = torch.where(is_rare, first_rare + rare_words.clamp_min(0), class_word(classes))
            ends = torch.full((len(fill), 1), vocab.index[CLS]), torch.full((len(fill), 1), vocab.index[SEP])
            return torch.cat([ends[0], slot[:, None], class_word(classes)[:, None], fill, ends[1]], 1)

        # training: the rare rows at random places, each rare word in exactly `occurrences` of them
        rare_rows = torch.randperm(self.train_rows, generator=g)[: self.num_rare * self.occurrences]
        train_words = torch.full((self.train_rows,), -1, dtype=torch.long)
        train_words[rare_rows] = torch.arange(self.num_rare).repeat_interleave(self.occurrences)
        train = rows(fill_train, train_words)
        # validation: the same mix, the rare rows' words drawn at random
        valid_words = torch.where(torch.rand(self.valid_rows, generator=g) < self.rare_sentence_fraction,
                                  torch.randint(self.num_rare, (self.valid_rows,), generator=g), -1)
        valid = rows(fill_rest[: self.valid_rows], valid_words)
        # probes: every rare word `probes_per_word` times, its partner class word masked
        probe_words = torch.arange(self.num_rare).repeat(self.probes_per_word)
        probe_inputs, labels = mask_partners(rows(fill_rest[self.valid_rows:], probe_words), vocab)
        return RareWordCorpus(MLMCorpus(vocab, train, valid), probe_inputs, labels, probe_words, rare_classes,
                              first_rare)

    def describe(self) -> str:
        return (f"SYNTHETIC (graftkit.data.rare_words, seed {self.seed}): rows [CLS] slot partner f1 .. "
                f"f{self.words - 2} [SEP], the fillers from a first-order Markov chain over {self.fillers} words "
                f"({self.successors} successors each); in a common row slot and partner are two class words of "
                f"one of {self.classes} hidden classes ({self.words_per_class} words each); in a rare row "
                f"({self.rare_sentence_fraction:.0%} of the {self.train_rows} training rows) a "
                f"rare word and a class word of the rare word's class. {self.num_rare} rare words, each in exactly "
                f"{self.occurrences} training rows ({1 / self.words * self.rare_sentence_fraction:.1%} of the word "
                f"tokens); {self.valid_rows} validation rows of the same mix; {self.probes_per_word} probe rows per "
                "rare word with new fillers and its partner (a new class word of its class) masked: the class shows "
                "only through the rare word's other sentences.")
