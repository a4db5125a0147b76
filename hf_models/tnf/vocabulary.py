"""The rare-word vocabulary of TNF: which words get notes, found once over the pre-training corpus.

A word is what the tokenizer's own normalizer and pre-tokenizer make of the text (lower-cased, punctuation
split, for BERT's WordPiece), so a word's subword tokens are exactly those the fast tokenizer's
``word_ids()`` assigns to it. Rare = corpus count in [min_count, max_count] (paper: 100 to 500).

Stored as versioned JSON beside the tokenizer (``tnf_rare_words.json``) with the tokenizer's fingerprint (a
hash of its vocabulary, model, normalizer and pre-tokenizer): loading it with another tokenizer is an error.
:meth:`RareVocabulary.config_fields` turns it into the config fields that store it with the model (each word's
token ids and every token's word-boundary marks, :mod:`hf_models.tnf.rare_spans`), so the model finds the rare
words in any batch's token ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import unicodedata
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

    def config_fields(self, tokenizer: Any) -> dict[str, Any]:
        """The :class:`TnfConfig` fields that store this vocabulary with the model: ``num_rare_words``,
        ``rare_word_token_ids`` (each word's ids as the tokenizer's model tokenizes it; ``[]`` for a word it
        makes [UNK], which its ids cannot tell apart) and ``word_boundary_marks`` (:func:`word_boundary_marks`)."""
        self._check_tokenizer(tokenizer)
        model, unk = _backend(tokenizer).model, tokenizer.unk_token_id
        token_ids = []
        for word in self.words:
            pieces = [token.id for token in model.tokenize(word)]
            token_ids.append([] if unk in pieces else pieces)
        return {"num_rare_words": len(self.words), "rare_word_token_ids": token_ids,
                "word_boundary_marks": word_boundary_marks(tokenizer)}

    def _check_tokenizer(self, tokenizer: Any) -> None:
        if tokenizer_fingerprint(tokenizer) != self.tokenizer_fingerprint:
            raise GraftkitError("this rare-word vocabulary was built with another tokenizer: rebuild it with "
                                "`graftkit tnf build-vocab`")

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
        self._check_tokenizer(tokenizer)
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


def word_boundary_marks(tokenizer: Any) -> str:
    """Two marks per token id (the format of :mod:`hf_models.tnf.rare_spans`) from the tokenizer's own marks:
    WordPiece ``##`` (any pre-tokenizer), SentencePiece/Metaspace ``▁``, byte-level BPE ``Ġ`` (GPT-2
    pre-tokenizer: its words also split where the character class changes); a WordLevel model's tokens are
    whole words (the tokenizer of a fairseq dictionary). Added and special tokens other than the unknown token
    stand outside words. Other tokenizers: a GraftkitError (use DataCollatorForTnf)."""
    backend = _backend(tokenizer)
    model, pre = type(backend.model).__name__, backend.pre_tokenizer
    kind = type(pre).__name__ if pre is not None else "no"
    if model == "WordLevel":  # one token per word (a fairseq dictionary's tokenizer): every token starts one
        mark = lambda token: "s-"  # noqa: E731
    elif model == "WordPiece":
        prefix = backend.model.continuing_subword_prefix
        mark = lambda token: "c-" if token.startswith(prefix) else "s-"  # noqa: E731
    elif kind == "Metaspace" and pre.split:
        mark = lambda token: "s-" if token.startswith(pre.replacement) else "c-"  # noqa: E731
    elif kind == "ByteLevel" and pre.use_regex:
        mark = _byte_level_marks
    else:
        raise GraftkitError(f"TNF cannot tell word boundaries from the token ids of a {model} tokenizer with "
                            f"{kind} pre-tokenizer (it reads WordPiece '##', byte-level BPE 'Ġ' and "
                            "SentencePiece '▁' marks): give the batches rare_spans with DataCollatorForTnf")
    vocab = backend.get_vocab(with_added_tokens=True)
    outside = set(backend.get_added_tokens_decoder()) - {tokenizer.unk_token_id}
    marks = ["s-"] * (max(vocab.values()) + 1)
    for token, index in vocab.items():
        marks[index] = "x-" if index in outside else mark(token)
    return "".join(marks)


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet: character -> byte (printable bytes stand for themselves, the others are
    shifted past 255 in byte order)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = {byte: byte for byte in printable}
    for byte in range(256):
        if byte not in codes:
            codes[byte] = 256 + len(codes) - len(printable)
    return {chr(code): byte for byte, code in codes.items()}


_BYTES = _byte_level_alphabet()


def _character_class(char: str) -> str:
    """The GPT-2 pre-tokenizer's classes: L letter, N number, W space, O other."""
    if char.isspace():
        return "W"
    category = unicodedata.category(char)[0]
    return category if category in "LN" else "O"


def _byte_level_marks(token: str) -> str:
    """A byte-level BPE token's marks: whitespace only: ``W`` then ``W`` (``J`` for a lone space); else it
    begins a word after a space (``Ġ``), continues the previous token's
    character when it starts inside one (``c``), else begins with its first character's class; then the class
    of its last character (``J`` a lone space; ``-`` when it only ends another token's character: the class
    is then the previous token's last). A character cut between tokens gets the class most of the characters
    its known bytes could start have (U+2000-U+203F, after bytes E2 80: other)."""
    if any(c not in _BYTES for c in token):
        return "s-"
    raw = bytes(_BYTES[c] for c in token)
    if raw.isspace():  # a run of whitespace is a word of its own, and a lone space joins the word after it
        return "WJ" if raw == b" " else "WW"
    chars = _utf8_pieces(raw)
    end = next((cls for cls in reversed(chars) if cls), "-")
    if token.startswith("Ġ"):
        return "s" + end
    return (chars[0] or "c") + end


def _utf8_pieces(raw: bytes) -> list[str]:
    """The class of each character whose first byte is in ``raw`` (guessed for one cut at the end); "" for the
    continuation bytes that open ``raw`` (the rest of a character that began before)."""
    classes, i = [], 0
    while i < len(raw):
        byte = raw[i]
        if byte & 0xC0 == 0x80:  # a continuation byte where a character should start
            classes.append("")
            i += 1
            continue
        length = 1 if byte < 0x80 else 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
        piece = raw[i:i + length]
        classes.append(_character_class(piece.decode("utf-8", errors="replace")[0]) if len(piece) == length
                       else _cut_character_class(piece, length))
        i += length
    return classes


def _cut_character_class(prefix: bytes, length: int) -> str:
    """The most common class among the characters whose UTF-8 encoding (``length`` bytes) starts with
    ``prefix``."""
    lead_bits = {2: 0x1F, 3: 0x0F, 4: 0x07}[length]
    low = high = prefix[0] & lead_bits
    for position in range(1, length):
        bits = prefix[position] & 0x3F if position < len(prefix) else None
        low = (low << 6) | (0 if bits is None else bits)
        high = (high << 6) | (0x3F if bits is None else bits)
    points = [p for p in range(low, min(high, 0x10FFFF) + 1, max(1, (high - low) // 64))
              if not 0xD800 <= p <= 0xDFFF]
    return Counter(_character_class(chr(p)) for p in points).most_common(1)[0][0] if points else "L"
