"""A real-English corpus from prose that ships with Python, and a word-level vocabulary with counts.

The text is the interactive help's topic pages (``pydoc_data.topics``) and the docstrings of a fixed list
of standard-library modules: real English, identical on every machine with the same Python version.
"""

from __future__ import annotations

import importlib
import inspect
import json
import random
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from graftkit.errors import GraftkitError

_STDLIB_MODULES = (
    "argparse", "asyncio", "collections", "contextlib", "csv", "dataclasses", "datetime", "decimal",
    "email", "enum", "fractions", "functools", "heapq", "http.client", "inspect", "io", "itertools",
    "json", "logging", "os", "pathlib", "pickle", "random", "re", "shutil", "socket", "sqlite3",
    "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "typing",
    "unittest", "urllib.request", "uuid", "zipfile",
)
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|[0-9]+|[.,;:!?()]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)


def module_docstrings(name: str) -> list[str]:
    """The docstrings of standard-library module ``name``'s own classes and functions (by name), then its own."""
    docs = []
    with warnings.catch_warnings():  # reading typing's deprecated aliases warns
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module(name)
        for _, obj in sorted(vars(module).items()):
            doc = inspect.getdoc(obj) if (inspect.isclass(obj) or inspect.isfunction(obj)) else None
            if doc and getattr(obj, "__module__", None) == module.__name__:
                docs.append(doc)
    if module.__doc__:
        docs.append(module.__doc__)
    return docs


def _documents() -> Iterable[str]:
    from pydoc_data.topics import topics

    for key in sorted(topics):
        yield topics[key]
    for name in _STDLIB_MODULES:
        yield from module_docstrings(name)


def words(sentence: str) -> list[str]:
    """Lower-cased word tokens: letters (with an inner apostrophe), digit runs, punctuation."""
    return _WORD.findall(sentence.lower())


def _prose_sentences(doc: str, min_words: int, max_words: int) -> list[str]:
    """The prose sentences of one document with ``min_words``..``max_words`` words, in order.

    Code blocks and tables are skipped: a kept line has at least 70% letters and no leading indentation.
    """
    prose = " ".join(line.strip() for line in doc.splitlines()
                     if line.strip() and not line.startswith((" ", "\t", ">>>", "...", "*", "+", "|", "="))
                     and sum(c.isalpha() or c == " " for c in line) >= 0.7 * len(line))
    return [sentence.strip() for sentence in _SENTENCE_END.split(prose)
            if min_words <= len(words(sentence)) <= max_words]


def english_sentences(min_words: int = 5, max_words: int = 48) -> list[str]:
    """Every prose sentence of the corpus with ``min_words``..``max_words`` words, in a fixed order.

    Code blocks and tables are skipped: a kept line has at least 70% letters and no leading indentation.
    """
    sentences = [s for doc in _documents() for s in _prose_sentences(doc, min_words, max_words)]
    return list(dict.fromkeys(sentences))  # drop repeats, keep order


def english_documents(min_words: int = 5, max_words: int = 48) -> list[list[str]]:
    """The corpus as documents (one help topic page or one docstring each): each document's prose sentences
    as :func:`english_sentences` finds them, in order; documents without any are left out. A sentence that
    occurs in several documents is kept in each."""
    return [sentences for doc in _documents() if (sentences := _prose_sentences(doc, min_words, max_words))]


def split_corpus(sentences: Sequence[str], valid_fraction: float = 0.1,
                 seed: int = 0) -> tuple[list[str], list[str]]:
    """Shuffle with ``seed`` and split off a validation part."""
    if not 0 < valid_fraction < 1:
        raise GraftkitError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    order = list(sentences)
    random.Random(seed).shuffle(order)
    n_valid = max(1, int(len(order) * valid_fraction))
    return order[n_valid:], order[:n_valid]


@dataclass
class WordVocab:
    """Word-level vocabulary: the special tokens first, then words by descending count (ties by word)."""

    tokens: list[str]
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise GraftkitError("vocabulary has duplicate tokens")

    @classmethod
    def build(cls, sentences: Iterable[str], min_count: int = 1, max_size: int | None = None) -> WordVocab:
        counts = Counter(w for s in sentences for w in words(s))
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(SPECIAL_TOKENS))]
        return cls(list(SPECIAL_TOKENS) + ranked, {w: counts[w] for w in ranked})

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, sentence: str) -> list[int]:
        unk = self.index[UNK]
        return [self.index.get(w, unk) for w in words(sentence)]

    def encode_rows(self, texts: Sequence[str], max_len: int):
        """A LongTensor [len(texts), max_len] of ``[CLS] w1 .. wn [SEP]`` rows, right-padded with [PAD]; a text
        longer than ``max_len - 2`` words is cut."""
        import torch

        out = torch.full((len(texts), max_len), self.index[PAD], dtype=torch.long)
        for i, text in enumerate(texts):
            ids = [self.index[CLS]] + self.encode(text)[: max_len - 2] + [self.index[SEP]]
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.tokens[i] for i in ids)

    def count(self, token: str) -> int:
        """Occurrences of ``token`` in the corpus the vocabulary was built from (0 for special tokens)."""
        return self.counts.get(token, 0)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"tokens": self.tokens, "counts": self.counts}))

    @classmethod
    def load(cls, path: str | Path) -> WordVocab:
        path = Path(path)
        if not path.is_file():
            raise GraftkitError(f"vocabulary file not found: {path}")
        data = json.loads(path.read_text())
        return cls(data["tokens"], data["counts"])

    def to_hf_tokenizer(self, model_max_length: int = 512):
        """A ``transformers.PreTrainedTokenizerFast`` over this vocabulary ([CLS] x [SEP] templates)."""
        from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
        from transformers import PreTrainedTokenizerFast

        tok = Tokenizer(models.WordLevel(vocab=dict(self.index), unk_token=UNK))
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(_WORD.pattern), behavior="removed", invert=True)
        cls_id, sep_id = self.index[CLS], self.index[SEP]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B {SEP}", special_tokens=[(CLS, cls_id), (SEP, sep_id)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, pad_token=PAD, cls_token=CLS,
                                       sep_token=SEP, mask_token=MASK, model_max_length=model_max_length)
