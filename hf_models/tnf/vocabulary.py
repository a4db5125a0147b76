"""The rare-word vocabulary of TNF: which words get notes, found once over the pre-training corpus.

A word is what the tokenizer's own normalizer and pre-tokenizer make of the text (lower-cased, punctuation
split, for BERT's WordPiece), so a word's subword tokens are exactly those the fast tokenizer's
``word_ids()`` assigns to it. Rare = corpus count in [min_count, max_count] (paper: 100 to 500).

Stored as versioned JSON beside the tokenizer (``tnf_rare_words.json``) with the tokenizer's fingerprint (a
hash of its vocabulary, model, normalizer and pre-tokenizer): loading it with another tokenizer is an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graftkit.errors import GraftkitError, check_int

FORMAT = "graftkit-tnf-rare-words"
VERSION = 1
FILE_NAME = "tnf_rare_words.json"


def _backend(tokenizer: Any):
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise GraftkitError(f"TNF needs a fast (tokenizers-backed) tokenizer to find word boundaries, got "
                            f"{type(tokenizer).__name__}")
    return backend


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 of the tokenizer's definition without its truncation and padding settings (which calls change)."""
    spec = json.loads(_backend(tokenizer).to_str())
    spec.pop("truncation", None)
    spec.pop("padding", None)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def tokenizer_words(tokenizer: Any, text: str) -> list[str]:
    """The words of ``text`` as the tokenizer sees them (its normalizer, then its pre-tokenizer)."""
    backend = _backend(tokenizer)
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    if backend.pre_tokenizer is None:
        return text.split()
    return [word for word, _ in backend.pre_tokenizer.pre_tokenize_str(text)]


@dataclass
class RareVocabulary:
    """Rare words (index = row of the note dictionary) with their corpus counts and provenance."""

    words: list[str]
    counts: list[int]
    min_count: int
    max_count: int
    tokenizer_fingerprint: str
    corpus: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_rare_range(self.min_count, self.max_count)
        self.index = {word: i for i, word in enumerate(self.words)}
        if len(self.index) != len(self.words) or len(self.counts) != len(self.words):
            raise GraftkitError("rare-word vocabulary: duplicate words or counts of another length")

    def __len__(self) -> int:
        return len(self.words)

    @classmethod
    def build(cls, tokenizer: Any, texts: Iterable[str], min_count: int = 100, max_count: int = 500,
              corpus: dict[str, Any] | None = None) -> RareVocabulary:
        """Count the tokenizer's words over ``texts``; keep those with min_count <= count <= max_count,
        by descending count (ties by word)."""
        check_rare_range(min_count, max_count)
        counts: Counter[str] = Counter()
        lines = 0
        for text in texts:
            counts.update(tokenizer_words(tokenizer, text))
            lines += 1
        if not counts:
            raise GraftkitError("the corpus has no words: a rare-word vocabulary needs text to count")
        rare = sorted((w for w, c in counts.items() if min_count <= c <= max_count), key=lambda w: (-counts[w], w))
        info = {**(corpus or {}), "texts": lines, "words": sum(counts.values()), "distinct_words": len(counts)}
        return cls(rare, [counts[w] for w in rare], min_count, max_count, tokenizer_fingerprint(tokenizer), info)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the JSON atomically (a temporary file renamed into place)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"format": FORMAT, "version": VERSION, "tokenizer_fingerprint": self.tokenizer_fingerprint,
                "min_count": self.min_count, "max_count": self.max_count, "corpus": self.corpus,
                "words": self.words, "counts": self.counts}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, tokenizer: Any) -> RareVocabulary:
        """Read ``path`` (a JSON file, or a tokenizer folder holding ``tnf_rare_words.json``) and check that it
        was built with ``tokenizer``."""
        path = Path(path)
        if path.is_dir():
            path = path / FILE_NAME
        if not path.is_file():
            raise GraftkitError(f"TNF rare-word vocabulary not found: {path} (build it with `graftkit tnf "
                                "build-vocab --tokenizer DIR --corpus FILE`)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise GraftkitError(f"cannot read TNF rare-word vocabulary {path}: {err}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise GraftkitError(f"{path} is not a TNF rare-word vocabulary (format {FORMAT!r})")
        if data.get("version") != VERSION:
            raise GraftkitError(f"{path} has version {data.get('version')!r}; this graftkit reads version {VERSION}")
        expected = tokenizer_fingerprint(tokenizer)
        if data["tokenizer_fingerprint"] != expected:
            raise GraftkitError(f"{path} was built with another tokenizer (fingerprint "
                                f"{data['tokenizer_fingerprint'][:12]}…, this tokenizer's {expected[:12]}…): "
                                "rebuild it with `graftkit tnf build-vocab`")
        return cls(data["words"], data["counts"], data["min_count"], data["max_count"],
                   data["tokenizer_fingerprint"], data.get("corpus", {}))

    def spans(self, word_ids: list[int | None], words: list[str]) -> list[list[int]]:
        """[w, s, t] for every rare word in one encoded sequence: ``word_ids`` is the encoding's
        ``word_ids()``, ``words`` the sequence's :func:`tokenizer_words`."""
        spans: list[list[int]] = []
        for position, word_id in enumerate(word_ids):
            if word_id is None:
                continue
            if spans and spans[-1][3] == word_id:
                spans[-1][2] = position
                continue
            rare = self.index.get(words[word_id], -1)
            spans.append([rare, position, position, word_id])
        return [span[:3] for span in spans if span[0] >= 0]

    def tokenize(self, tokenizer: Any, texts: Iterable[str], max_length: int | None = None) -> list[dict]:
        """Tokenize ``texts`` (right-truncated to ``max_length``) and mark their rare-word spans: one example
        per text with ``input_ids`` and ``rare_spans``, ready for :class:`DataCollatorForTnf`. A rare word
        that truncation cuts gets no span."""
        if tokenizer_fingerprint(tokenizer) != self.tokenizer_fingerprint:
            raise GraftkitError("this rare-word vocabulary was built with another tokenizer: rebuild it with "
                                "`graftkit tnf build-vocab`")
        examples = []
        for text in texts:
            encoding = tokenizer(text, truncation=max_length is not None, max_length=max_length)
            # spans over the untruncated encoding, then only those that truncation left whole: a word cut
            # in two has no note (its note would be mixed into part of it)
            full = encoding if max_length is None else tokenizer(text, verbose=False)
            kept = [i for i, word in enumerate(encoding.word_ids()) if word is not None]
            spans = [span for span in self.spans(full.word_ids(), tokenizer_words(tokenizer, text))
                     if kept and span[2] <= kept[-1]]
            examples.append({"input_ids": encoding["input_ids"], "rare_spans": spans})
        return examples


def check_rare_range(min_count: object, max_count: object) -> None:
    """Both counts integers >= 1 and min_count <= max_count; else a GraftkitError."""
    check_int("min_count", min_count)
    check_int("max_count", max_count)
    if min_count > max_count:
        raise GraftkitError(f"rare range: min_count ({min_count}) must be <= max_count ({max_count})")
