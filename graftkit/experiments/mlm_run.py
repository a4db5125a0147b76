"""Masked-LM training runs shared by the Pre-LN and TUPE experiments.

The real-English corpus of :mod:`graftkit.data.text` as padded ``[CLS] w1 .. wn [SEP]`` id rows, BERT's
masking, and one seeded training loop that records the validation MLM loss every few steps. A run is fixed
by its seed (weights, batches, masks, dropout), and the validation masks are the same for every run, so
arms trained with the same seed see the same batches and are scored on the same positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from graftkit.data.text import (
    CLS,
    MASK,
    PAD,
    SEP,
    SPECIAL_TOKENS,
    WordVocab,
    english_sentences,
    split_corpus,
)
from graftkit.errors import GraftkitError, check_int, check_number
from graftkit.experiments.protocol import Gate

#: the seed of the validation masks: one fixed set of masked positions for every run
VALID_MASK_SEED = 12345
#: what a table shows for a target a run never reached
NEVER = "never reached"
#: a run has left the unigram plateau (see :func:`unigram_loss`) once its validation loss is this far below it
PLATEAU_MARGIN = 0.1


def off_plateau_loss(unigram: float) -> float:
    """The validation loss at or below which a run has left the unigram plateau (``unigram``: see
    :func:`unigram_loss`)."""
    return unigram - PLATEAU_MARGIN


@dataclass(frozen=True)
class MLMCorpus:
    """Train and validation id rows (``[CLS] w1 .. wn [SEP]``, right-padded to ``max_len``) and their vocabulary."""

    vocab: WordVocab
    train: torch.Tensor
    valid: torch.Tensor

    @property
    def pad(self) -> int:
        return self.vocab.index[PAD]

    @property
    def max_len(self) -> int:
        return self.train.shape[1]


def mlm_corpus(vocab_size: int, max_len: int) -> MLMCorpus:
    """graftkit's real English sentences, split 90/10 (seed 0), with a word vocabulary of ``vocab_size``
    entries (special tokens included; rarer words become [UNK]) built on the training part; sentences longer
    than ``max_len - 2`` words are cut."""
    check_int("vocab_size", vocab_size, minimum=len(SPECIAL_TOKENS) + 1)
    check_int("max_len", max_len, minimum=3)
    train, valid = split_corpus(english_sentences(), valid_fraction=0.1, seed=0)
    vocab = WordVocab.build(train, max_size=vocab_size)
    return MLMCorpus(vocab, vocab.encode_rows(train, max_len), vocab.encode_rows(valid, max_len))


def markov_corpus(words: int, successors: int, max_len: int, train_rows: int, valid_rows: int,
                  seed: int = 0) -> MLMCorpus:
    """SYNTHETIC rows ``[CLS] w1 .. wn [SEP]`` (n = ``max_len`` - 2) of a first-order Markov chain over
    ``words`` word types: each word has ``successors`` possible next words (chosen at random, weights from a
    flat Dirichlet), the first word is uniform. A masked word is then almost fixed by its neighbours, while
    word frequencies alone say little (the unigram loss is near log ``words``): context signal that sits at
    fixed relative positions. The chain follows ``seed``; training and validation rows are drawn
    independently from it."""
    check_int("words", words, minimum=2)
    check_int("successors", successors, minimum=1)
    check_int("max_len", max_len, minimum=3)
    check_int("train_rows", train_rows)
    check_int("valid_rows", valid_rows)
    if successors > words:
        raise GraftkitError(f"successors ({successors}) must be at most words ({words})")
    g = torch.Generator().manual_seed(seed)
    transition = _sparse_dirichlet_rows(words, words, successors, g)

    def body(n: int) -> torch.Tensor:
        chain = torch.empty(n, max_len - 2, dtype=torch.long)
        chain[:, 0] = torch.randint(words, (n,), generator=g)
        for t in range(1, max_len - 2):
            chain[:, t] = torch.multinomial(transition[chain[:, t - 1]], 1, generator=g).squeeze(1)
        return chain

    return _synthetic_corpus(words, body(train_rows), body(valid_rows))


def _sparse_dirichlet_rows(rows: int, words: int, support: int, g: torch.Generator) -> torch.Tensor:
    """[rows, words]: each row a distribution over ``support`` random words, weights from a flat Dirichlet."""
    members = torch.stack([torch.randperm(words, generator=g)[:support] for _ in range(rows)])
    weights = -torch.rand(rows, support, generator=g).log()  # Dirichlet(1, .., 1), unnormalised
    return torch.zeros(rows, words).scatter_(1, members, weights / weights.sum(1, keepdim=True))


def _synthetic_corpus(words: int, train_body: torch.Tensor, valid_body: torch.Tensor) -> MLMCorpus:
    """The corpus of word types ``w0 .. w{words-1}`` whose rows are ``[CLS] body [SEP]`` (body: word indices)."""
    vocab = WordVocab(list(SPECIAL_TOKENS) + [f"w{i}" for i in range(words)])

    def framed(body: torch.Tensor) -> torch.Tensor:
        out = torch.empty(body.shape[0], body.shape[1] + 2, dtype=torch.long)
        out[:, 0], out[:, -1], out[:, 1:-1] = vocab.index[CLS], vocab.index[SEP], body + len(SPECIAL_TOKENS)
        return out

    return MLMCorpus(vocab, framed(train_body), framed(valid_body))


@dataclass(frozen=True)
class MarkovData:
    """The SYNTHETIC data of ``tupe-vs-bert`` and ``preln-warmup`` (see :func:`markov_corpus`, chain seed 0).

    With 64 words of 3 successors in 16-token rows the word-frequency plateau is left within ~100 steps by
    a 4-layer BERT (batch 32): on graftkit's real English, short rows took 250-300 steps, and rows packed to
    64 tokens from consecutive sentences were still on it after 300 steps at lr 1e-3 and 3e-3."""

    words: int = 64
    successors: int = 3
    max_len: int = 16
    train_rows: int = 8000
    valid_rows: int = 500

    def corpus(self) -> MLMCorpus:
        return markov_corpus(self.words, self.successors, self.max_len, self.train_rows, self.valid_rows)

    def describe(self) -> str:
        return (f"SYNTHETIC: rows [CLS] w1 .. w{self.max_len - 2} [SEP] of a first-order Markov chain over "
                f"{self.words} word types, each with {self.successors} possible successors (weights from a flat "
                f"Dirichlet; graftkit.experiments.mlm_run.markov_corpus, chain seed 0); {self.train_rows} training "
                f"and {self.valid_rows} validation rows drawn independently; BERT masking (15%), one fixed set of "
                "validation masks.")


def left_plateau_gate(finals: dict[str, Sequence[float]], seeds: Sequence[int], unigram: float) -> Gate:
    """The gate ``left_plateau``: every arm of ``finals`` (arm -> final validation loss per seed) ended, in
    every seed, at least :data:`PLATEAU_MARGIN` below the unigram loss (a diverged run, nan, fails it)."""
    worst = max(((math.inf if math.isnan(v) else v), arm, seed) for arm, values in finals.items()
                for v, seed in zip(values, seeds, strict=True))
    return Gate("left_plateau", worst[0] <= off_plateau_loss(unigram),
                f"the highest final validation loss of {', '.join(finals)} ({worst[1]}, seed {worst[2]}) is "
                f"{worst[0]:.3f}; leaving the plateau needs at most {off_plateau_loss(unigram):.3f} (the unigram "
                f"loss {unigram:.3f} - {PLATEAU_MARGIN}).")


def bert_mask(ids: torch.Tensor, vocab: WordVocab, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: 15% of the word tokens; of those 80% [MASK], 10% a random word, 10% unchanged.

    Special tokens ([PAD], [UNK], [CLS], [SEP], [MASK]) are never chosen. Returns the inputs and the labels
    (-100 where not chosen).
    """
    words = ids >= len(SPECIAL_TOKENS)
    chosen = words & (torch.rand(ids.shape, generator=generator) < 0.15)
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[chosen & (roll < 0.8)] = vocab.index[MASK]
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = torch.randint(len(SPECIAL_TOKENS), len(vocab), (int(swap.sum()),), generator=generator)
    return inputs, labels


def unigram_loss(corpus: MLMCorpus) -> float:
    """Validation MLM loss of the best context-free predictor: the training word frequencies (add-½
    smoothing), scored on the validation masks every run uses. A model at this loss has learned word
    frequencies only (the plateau every MLM run starts on)."""
    first_word = len(SPECIAL_TOKENS)
    counts = torch.bincount(corpus.train[corpus.train >= first_word] - first_word,
                            minlength=len(corpus.vocab) - first_word).double() + 0.5
    log_p = counts.log() - counts.sum().log()
    _, labels = bert_mask(corpus.valid, corpus.vocab, torch.Generator().manual_seed(VALID_MASK_SEED))
    return float(-log_p[labels[labels != -100] - first_word].mean())


@dataclass(frozen=True)
class MLMTraining:
    """The optimisation of one run: AdamW (``weight_decay=0`` is Adam), lr linear from
    ``lr / (warmup_steps + 1)`` to ``lr`` over the first ``warmup_steps`` steps, then constant."""

    steps: int
    eval_every: int
    lr: float
    warmup_steps: int = 0
    batch: int = 16
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check_int("steps", self.steps, minimum=1)
        check_int("eval_every", self.eval_every, minimum=1)
        if self.steps % self.eval_every:
            raise GraftkitError(f"steps ({self.steps}) must be a multiple of eval_every ({self.eval_every})")
        check_number("lr", self.lr, minimum=0.0, strict=True)
        check_int("warmup_steps", self.warmup_steps, minimum=0)
        check_int("batch", self.batch, minimum=1)
        if not all(0 <= b < 1 for b in self.betas):
            raise GraftkitError(f"betas must be in [0, 1), got {self.betas}")

    @property
    def evaluations(self) -> int:
        return self.steps // self.eval_every

    def lr_factor(self, step: int) -> float:
        """The multiplier of ``lr`` at optimizer step ``step`` (0-based)."""
        return min(1.0, (step + 1) / (self.warmup_steps + 1))


def train_mlm(build_model: Callable[[], torch.nn.Module], corpus: MLMCorpus, training: MLMTraining, seed: int,
              on_eval: Callable[[int], None] | None = None) -> list[float]:
    """Train ``build_model()`` (a masked-LM returning ``.loss`` and ``.logits``) and return its validation
    MLM loss after every ``eval_every`` steps; from the first non-finite value on the curve is nan (the run
    stops there). ``on_eval(step)`` is called after each evaluation.

    The model's weights, the batches, the masks and dropout follow ``seed``; the caller's random state is
    left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model()
        optimizer = torch.optim.AdamW(model.parameters(), lr=training.lr, betas=training.betas, eps=training.eps,
                                      weight_decay=training.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, training.lr_factor)
        data = torch.Generator().manual_seed(seed)
        valid_inputs, valid_labels = bert_mask(corpus.valid, corpus.vocab,
                                               torch.Generator().manual_seed(VALID_MASK_SEED))
        valid_attention = (corpus.valid != corpus.pad).long()
        curve: list[float] = []
        for step in range(1, training.steps + 1):
            model.train()
            batch = corpus.train[torch.randint(len(corpus.train), (training.batch,), generator=data)]
            inputs, labels = bert_mask(batch, corpus.vocab, data)
            loss = model(inputs, attention_mask=(batch != corpus.pad).long(), labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if step % training.eval_every == 0:
                model.eval()
                with torch.no_grad():
                    logits = model(valid_inputs, attention_mask=valid_attention).logits
                    value = float(torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]),
                                                                    valid_labels.view(-1)))
                if not math.isfinite(value):
                    return curve + [math.nan] * (training.evaluations - len(curve))
                curve.append(value)
                if on_eval is not None:
                    on_eval(step)
    return curve


def steps_to_reach(curve: Sequence[float], target: float, eval_every: int) -> int | None:
    """The first evaluated step whose validation loss is <= ``target`` (None: never)."""
    for i, value in enumerate(curve):
        if value <= target:
            return (i + 1) * eval_every
    return None


def topic_corpus(words: int, topics: int, topic_words: int, max_len: int, train_rows: int, valid_rows: int,
                 seed: int = 0) -> MLMCorpus:
    """SYNTHETIC rows ``[CLS] w1 .. wn [SEP]`` (n = ``max_len`` - 2), each about one topic: ``topics`` topics,
    each a random set of ``topic_words`` of the ``words`` word types with weights from a flat Dirichlet
    (topics may share words); a row draws its topic uniformly, then its n words independently from that
    topic. A masked word is predictable from the row's other words whatever their positions (the topic is in
    their mean), while word frequencies alone say little: a signal that even uniform attention carries, so
    that a deep stack leaves the word-frequency plateau early. The topics follow ``seed``; training and
    validation rows are drawn independently."""
    check_int("words", words, minimum=2)
    check_int("topics", topics, minimum=1)
    check_int("topic_words", topic_words, minimum=1)
    check_int("max_len", max_len, minimum=3)
    check_int("train_rows", train_rows)
    check_int("valid_rows", valid_rows)
    if topic_words > words:
        raise GraftkitError(f"topic_words ({topic_words}) must be at most words ({words})")
    g = torch.Generator().manual_seed(seed)
    distribution = _sparse_dirichlet_rows(topics, words, topic_words, g)

    def body(n: int) -> torch.Tensor:
        topic = torch.randint(topics, (n,), generator=g)
        return torch.multinomial(distribution[topic], max_len - 2, replacement=True, generator=g)

    return _synthetic_corpus(words, body(train_rows), body(valid_rows))


@dataclass(frozen=True)
class TopicData:
    """The SYNTHETIC data of ``preln-warmup`` (see :func:`topic_corpus`, topic seed 0).

    A 12-layer stack of width 32 stays on the word-frequency plateau of :class:`MarkovData` for most of 250
    steps (the fixed relative positions a Markov chain needs are slow to learn through 12 layers); a row's
    topic is a position-free signal that the stack can read from the start."""

    words: int = 64
    topics: int = 8
    topic_words: int = 16
    max_len: int = 16
    train_rows: int = 8000
    valid_rows: int = 500

    def corpus(self) -> MLMCorpus:
        return topic_corpus(self.words, self.topics, self.topic_words, self.max_len, self.train_rows,
                            self.valid_rows)

    def describe(self) -> str:
        return (f"SYNTHETIC: rows [CLS] w1 .. w{self.max_len - 2} [SEP], each about one of {self.topics} topics; "
                f"a topic is a random set of {self.topic_words} of {self.words} word types (weights from a flat "
                "Dirichlet, topics may share words), a row draws its topic uniformly and its words independently "
                f"from it (graftkit.experiments.mlm_run.topic_corpus, topic seed 0); {self.train_rows} training and "
                f"{self.valid_rows} validation rows drawn independently; BERT masking (15%), one fixed set of "
                "validation masks.")
