"""A SYNTHETIC language with meaning classes, for MC-BERT's semantic-vs-syntactic experiment (issue 27).

Words (all abstract tokens; nothing here is English):

- **Objects**: ``classes`` meaning classes of ``nouns_per_class`` near-synonyms each (``obj<c>.<j>``), in two
  sub-senses per class (even / odd ``j``); each sub-sense has its own adjective (``adj<c>.<s>``), so an
  adjective narrows the near-synonyms to half of them.
- **Verbs that restrict their objects**: ``verbs_per_class`` per class (``verb<c>.<j>``), each taking only
  objects of its class, and ``neutral_verbs`` (``see<j>``) that take any object.
- **Subjects** (``subj<i>``) in singular and plural (``subj<i>-pl``); every verb has a singular
  (``...-s``) and a plural form, which agrees with its subject.

A pre-training row is ``[CLS]`` + two clauses joined by ``and`` + ``[SEP]``; a clause is
``SUBJ VERB ADJ OBJ``: the verb is neutral with probability ``neutral_rate``, else of a uniform class,
the object uniform in the verb's class (in any class after a neutral verb), ADJ the object's sub-sense
adjective with probability ``adjective_rate``, else ``the``. Every word kind sits at a fixed position: with
varying positions a 2-layer model stayed on the structure-only plateau (the same object guess after any verb)
for over 900 steps.

Two probe tasks are built from the same words (:func:`semantic_probe`, :func:`syntactic_probe`):

- **semantic**: the fine meaning (class and sub-sense) of an object seen in a class-neutral clause
  (``SUBJ see<j> the OBJ``), from frozen features at the object's position; the probe is trained on some
  near-synonyms of each sub-sense and tested on others it never saw, so only an encoder that placed
  near-synonyms together can pass it (a random encoder is at chance, 1 / (2 classes)). The class alone is
  learnt from the verbs; the sub-sense only from the adjectives (half of the clauses): the fine distinction
  among plausible candidates that MC-BERT's multi-choice asks for;
- **syntactic** (control): is a clause ``SUBJ VERB the OBJ`` grammatical (the verb agrees with its subject)?
  Half of the clauses have the wrong verb form; train, validation and test use different subjects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from graftkit.data.text import CLS, PAD, SEP, SPECIAL_TOKENS, WordVocab
from graftkit.errors import GraftkitError, check_int, check_number

NEITHER = "<neither>"
#: per class, object indices (j) of the semantic probe's train / validation / test words: both sub-senses in each
PROBE_WORD_SPLIT = ("train", "valid", "test")


@dataclass(frozen=True)
class MeaningGrammar:
    """The sizes of the SYNTHETIC language (see the module docstring)."""

    classes: int = 6
    nouns_per_class: int = 10
    verbs_per_class: int = 2
    neutral_verbs: int = 3
    subjects: int = 6
    neutral_rate: float = 0.3
    adjective_rate: float = 0.5
    clauses_per_row: int = 3
    #: near-synonyms per class the semantic probe trains on and validates on; the rest are its test words
    probe_train_nouns: int = 4
    probe_valid_nouns: int = 2

    def __post_init__(self) -> None:
        check_int("classes", self.classes, minimum=2)
        check_int("nouns_per_class", self.nouns_per_class, minimum=4)
        check_int("verbs_per_class", self.verbs_per_class, minimum=1)
        check_int("neutral_verbs", self.neutral_verbs, minimum=1)
        check_int("subjects", self.subjects, minimum=3)
        check_int("clauses_per_row", self.clauses_per_row, minimum=1)
        for name in ("neutral_rate", "adjective_rate"):
            if check_number(name, getattr(self, name)) > 1:
                raise GraftkitError(f"{name} must be at most 1, got {getattr(self, name)}")
        check_int("probe_train_nouns", self.probe_train_nouns, minimum=2)
        check_int("probe_valid_nouns", self.probe_valid_nouns, minimum=2)
        if self.probe_train_nouns % 2 or self.probe_valid_nouns % 2:
            raise GraftkitError("probe_train_nouns and probe_valid_nouns must be even (both sub-senses in each)")
        if self.probe_train_nouns + self.probe_valid_nouns + 2 > self.nouns_per_class:
            raise GraftkitError(f"probe_train_nouns + probe_valid_nouns ({self.probe_train_nouns} + "
                                f"{self.probe_valid_nouns}) leave fewer than 2 test nouns of "
                                f"{self.nouns_per_class}")

    # --- the words ---------------------------------------------------------------------------------------
    def words(self) -> list[str]:
        out = ["the", "and"]
        out += [f"subj{i}{n}" for i in range(self.subjects) for n in ("", "-pl")]
        out += [f"see{j}{f}" for j in range(self.neutral_verbs) for f in ("-s", "")]
        out += [f"verb{c}.{j}{f}" for c in range(self.classes) for j in range(self.verbs_per_class) for f in ("-s", "")]
        out += [f"adj{c}.{s}" for c in range(self.classes) for s in range(2)]
        out += [f"obj{c}.{j}" for c in range(self.classes) for j in range(self.nouns_per_class)]
        return out

    def vocab(self) -> WordVocab:
        """The special tokens, the words, and <neither> (MC-BERT's reject option) last."""
        return WordVocab(list(SPECIAL_TOKENS) + self.words() + [NEITHER])

    @property
    def max_len(self) -> int:
        """A row's length: [CLS], ``clauses_per_row`` clauses of 4 words joined by 'and', [SEP] (every row is as
        long: each word kind sits at fixed positions)."""
        return 1 + 5 * self.clauses_per_row

    def describe(self) -> str:
        return (f"SYNTHETIC language (graftkit.data.meaning_classes): {self.classes} meaning classes of "
                f"{self.nouns_per_class} near-synonym objects each (two sub-senses per class, one adjective each), "
                f"{self.verbs_per_class} verbs per class that take only that class's objects, {self.neutral_verbs} "
                f"neutral verbs ({self.neutral_rate:.0%} of clauses) that take any object, {self.subjects} "
                f"subjects in singular and plural with subject-verb agreement; rows of two clauses "
                f"'SUBJ VERB the|ADJ OBJ and ...' (adjective in {self.adjective_rate:.0%} of clauses).")

    # --- the clauses -------------------------------------------------------------------------------------
    def _ids(self, vocab: WordVocab) -> dict[str, torch.Tensor]:
        """Token id tables: subject [i, plural], neutral verb [j, plural], verb [c, j, plural], adjective [c, s],
        object [c * nouns + j]."""
        def table(names: list[str], shape: tuple[int, ...]) -> torch.Tensor:
            return torch.tensor([vocab.index[w] for w in names]).view(shape)

        forms = ("-s", "")  # index 0: singular verb, 1: plural verb
        return {
            "subject": table([f"subj{i}{n}" for i in range(self.subjects) for n in ("", "-pl")], (self.subjects, 2)),
            "neutral": table([f"see{j}{f}" for j in range(self.neutral_verbs) for f in forms], (self.neutral_verbs, 2)),
            "verb": table([f"verb{c}.{j}{f}" for c in range(self.classes) for j in range(self.verbs_per_class)
                           for f in forms], (self.classes, self.verbs_per_class, 2)),
            "adjective": table([f"adj{c}.{s}" for c in range(self.classes) for s in range(2)], (self.classes, 2)),
            "object": table([f"obj{c}.{j}" for c in range(self.classes) for j in range(self.nouns_per_class)],
                            (self.classes * self.nouns_per_class,)),
        }

    def _clauses(self, vocab: WordVocab, n: int, g: torch.Generator, *, neutral_rate: float, adjective_rate: float,
                 subjects: torch.Tensor | None = None, objects: torch.Tensor | None = None,
                 agree: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` clauses as ids [n, 4] and their flat object ids
        (c * nouns + j); ``subjects`` / ``objects``: the pools to draw them from (all when None); ``agree``
        (bool per clause): False gives the wrong verb form."""
        ids = self._ids(vocab)
        subjects = torch.arange(self.subjects) if subjects is None else subjects
        objects = torch.arange(self.classes * self.nouns_per_class) if objects is None else objects
        plural = (torch.rand(n, generator=g) < 0.5).long()
        agree = torch.ones(n, dtype=torch.bool) if agree is None else agree
        subject = subjects[torch.randint(len(subjects), (n,), generator=g)]
        neutral = torch.rand(n, generator=g) < neutral_rate
        verb_class = torch.randint(self.classes, (n,), generator=g)
        verb = torch.randint(self.verbs_per_class, (n,), generator=g)
        see = torch.randint(self.neutral_verbs, (n,), generator=g)
        adjective = torch.rand(n, generator=g) < adjective_rate
        # an object from the pool: any class after a neutral verb, the verb's class otherwise
        fits = (objects[None, :] // self.nouns_per_class == verb_class[:, None]) | neutral[:, None]
        obj = objects[torch.multinomial(fits.float(), 1, generator=g).squeeze(1)]
        verb_form = torch.where(agree, plural, 1 - plural)
        clause = torch.stack([
            ids["subject"][subject, plural],
            torch.where(neutral, ids["neutral"][see, verb_form], ids["verb"][verb_class, verb, verb_form]),
            torch.where(adjective, ids["adjective"][obj // self.nouns_per_class, obj % self.nouns_per_class % 2],
                        vocab.index["the"]),
            ids["object"][obj],
        ], dim=1)
        return clause, obj

    def _rows(self, vocab: WordVocab, *parts: torch.Tensor) -> torch.Tensor:
        """[CLS] + ``parts`` (id columns, -1 = no word) + [SEP], the words moved left, right-padded to
        :attr:`max_len` with [PAD]."""
        n = parts[0].shape[0]
        body = torch.cat(parts, dim=1)
        body = body.gather(1, (body < 0).long().argsort(dim=1, stable=True))  # holes to the end, order kept
        length = (body >= 0).sum(1)
        rows = torch.full((n, self.max_len), vocab.index[PAD], dtype=torch.long)
        rows[:, 0] = vocab.index[CLS]
        rows[:, 1:1 + body.shape[1]] = torch.where(body >= 0, body, vocab.index[PAD])
        rows[torch.arange(n), length + 1] = vocab.index[SEP]
        return rows

    def corpus(self, rows: int, seed: int) -> torch.Tensor:
        """``rows`` pre-training rows (ids of :meth:`vocab`, right-padded to :attr:`max_len`), drawn with
        ``seed``."""
        check_int("rows", rows, minimum=1)
        vocab, g = self.vocab(), torch.Generator().manual_seed(seed)
        rates = dict(neutral_rate=self.neutral_rate, adjective_rate=self.adjective_rate)
        parts = [self._clauses(vocab, rows, g, **rates)[0]]
        for _ in range(self.clauses_per_row - 1):
            parts += [torch.full((rows, 1), vocab.index["and"]), self._clauses(vocab, rows, g, **rates)[0]]
        return self._rows(vocab, *parts)

    # --- the probes --------------------------------------------------------------------------------------
    def probe_nouns(self, split: str) -> torch.Tensor:
        """Flat object ids of the semantic probe's ``split`` ("train", "valid", "test"): the same near-synonym
        indices j in every class (the first ``probe_train_nouns``, the next ``probe_valid_nouns``, the rest)."""
        bounds = {"train": (0, self.probe_train_nouns),
                  "valid": (self.probe_train_nouns, self.probe_train_nouns + self.probe_valid_nouns),
                  "test": (self.probe_train_nouns + self.probe_valid_nouns, self.nouns_per_class)}
        if split not in bounds:
            raise GraftkitError(f"split must be one of {PROBE_WORD_SPLIT}, got {split!r}")
        low, high = bounds[split]
        return torch.tensor([c * self.nouns_per_class + j for c in range(self.classes) for j in range(low, high)])

    def semantic_probe(self, split: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` rows ``[CLS] SUBJ see<j> the OBJ [SEP]`` with objects of the split's near-synonyms, the column of
        the object in each row, and its fine meaning (:meth:`sense`: the label, 2 x classes values)."""
        vocab, g = self.vocab(), torch.Generator().manual_seed(seed)
        clause, obj = self._clauses(vocab, n, g, neutral_rate=1.0, adjective_rate=0.0,
                                    objects=self.probe_nouns(split))
        # [CLS] SUBJ VERB the OBJ: the object in column 4
        return self._rows(vocab, clause), torch.full((n,), 4, dtype=torch.long), self.sense(obj)

    def sense(self, objects: torch.Tensor) -> torch.Tensor:
        """The fine meaning (class * 2 + sub-sense) of flat object ids: the semantic probe's label."""
        return objects // self.nouns_per_class * 2 + objects % self.nouns_per_class % 2

    def syntactic_probe(self, split: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` rows ``[CLS] SUBJ VERB the OBJ [SEP]`` (verbs of any kind), half with the verb agreeing with
        its subject (label 1), half not (label 0); "train" uses all subjects but the last two, "valid" the
        second to last, "test" the last (subjects the probe never saw)."""
        subjects = {"train": torch.arange(self.subjects - 2), "valid": torch.tensor([self.subjects - 2]),
                    "test": torch.tensor([self.subjects - 1])}
        if split not in subjects:
            raise GraftkitError(f"split must be one of {PROBE_WORD_SPLIT}, got {split!r}")
        g = torch.Generator().manual_seed(seed)
        agree = torch.arange(n) % 2 == 0
        agree = agree[torch.randperm(n, generator=g)]
        vocab = self.vocab()
        clause, _ = self._clauses(vocab, n, g, neutral_rate=self.neutral_rate, adjective_rate=0.0,
                                  subjects=subjects[split], agree=agree)
        return self._rows(vocab, clause), agree.long()


def unigram_p_original(train: torch.Tensor, rows: torch.Tensor, masked: torch.Tensor, vocab_size: int) -> float:
    """Mean probability the word frequencies of ``train`` give the original token at the ``masked`` positions
    of ``rows`` (a context-free controller's p(original))."""
    words = train[train >= len(SPECIAL_TOKENS)]
    frequency = torch.bincount(words, minlength=vocab_size).double() / len(words)
    return float(frequency[rows[masked]].mean())
