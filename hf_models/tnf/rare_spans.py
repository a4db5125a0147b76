r"""Find TNF's rare-word occurrences in token ids, for batches that carry no ``rare_spans`` (any collator).

Written in plain torch (it travels with a saved model as remote code). What it needs is stored in the config
(:class:`TnfConfig` fields, made by :meth:`RareVocabulary.config_fields`):

- ``rare_word_token_ids``: each rare word's token ids (row w of the note dictionary), as the tokenizer's model
  tokenizes the word (``[]``: a word that cannot be told from its ids, e.g. one the tokenizer makes [UNK]);
- ``word_boundary_marks``: two characters per token id, from the tokenizer's word-boundary marks. The first says
  how the token begins: ``s`` a word (WordPiece without ``##``, SentencePiece ``▁``, byte-level BPE ``Ġ``),
  ``c`` inside a word (WordPiece ``##``, SentencePiece without ``▁``), ``x`` outside words (special tokens), or,
  for a byte-level BPE piece without ``Ġ``, the class of its first character (``L`` letter, ``N`` number, ``W``
  space, ``O`` other): it continues the previous token's word exactly when that token's last character (the
  second mark: ``L N W O``; ``-`` where it does not decide, or for a piece that only ends a character cut
  before it, whose class is then the previous token's) has the same class, as the GPT-2
  pre-tokenizer splits words at every change of class, or when that token is a lone space (``J``: the GPT-2
  pre-tokenizer joins one space to the letters, digits or other characters that follow it). Whitespace-only
  pieces (``W``) continue a whitespace run, except the last one before a word.

A word starts at the first token, after an ``x`` token, at an ``s``/``x`` token and where a class changes; an
occurrence of rare word w is a whole word whose ids are w's. Every step is a tensor operation over the batch
(a loop over the at most ``max_word_tokens`` token positions of a word, never over words or sequences): words
are keyed by two polynomial hashes of their padded ids, looked up with ``searchsorted`` among the rare words'
keys, and each hit is checked id by id, so a hash collision can only miss a word (two rare words with one key
are refused on construction), never invent one.
"""

from __future__ import annotations

import torch
from torch import nn

BEGIN_CODES = "scxLNWO"  # how a token begins: a word, inside one, outside words, or a character class
END_CODES = "-LNWOJ"  # the class of a token's last character (byte-level BPE), J a lone space, "-" otherwise
_START, _CONTINUE, _OUTSIDE, _FIRST_CLASS, _SPACE = 0, 1, 2, 3, 5
_JOINS, _END_SPACE = END_CODES.index("J"), END_CODES.index("W")
_HASHES = ((1_000_003, 2_147_483_647), (999_983, 2_147_483_629))  # (base, prime modulus), each key < 2^31


def check_rare_word_fields(rare_word_token_ids: object, word_boundary_marks: object, num_rare_words: int,
                           vocab_size: int) -> None:
    """Raise a ValueError naming the field when the stored rare vocabulary is unusable."""
    if (rare_word_token_ids is None) != (word_boundary_marks is None):
        raise ValueError("rare_word_token_ids and word_boundary_marks go together: give both or neither")
    if rare_word_token_ids is None:
        return
    if not isinstance(rare_word_token_ids, list) or len(rare_word_token_ids) != num_rare_words:
        raise ValueError(f"rare_word_token_ids must be a list of num_rare_words={num_rare_words} token-id lists")
    for word in rare_word_token_ids:
        if not isinstance(word, list) or not all(isinstance(i, int) and 0 <= i < vocab_size for i in word):
            raise ValueError(f"rare_word_token_ids: every entry must be a list of token ids in [0, "
                             f"vocab_size={vocab_size}), got {word!r}")
    marks = word_boundary_marks
    if (not isinstance(marks, str) or len(marks) % 2 or len(marks) // 2 > vocab_size
            or any(c not in BEGIN_CODES for c in marks[::2]) or any(c not in END_CODES for c in marks[1::2])):
        raise ValueError(f"word_boundary_marks must hold two marks per token id ({BEGIN_CODES!r} then "
                         f"{END_CODES!r}) for at most vocab_size={vocab_size} ids")


def _keys(tokens: torch.Tensor) -> torch.Tensor:
    """[..., max_len] padded ids (-1 pads) -> [...] int64 keys (two 31-bit polynomial hashes side by side)."""
    key = torch.zeros(tokens.shape[:-1], dtype=torch.long, device=tokens.device)
    for base, prime in _HASHES:
        h = torch.zeros_like(key)
        for position in range(tokens.shape[-1]):
            h = (h * base + tokens[..., position] + 2) % prime
        key = key * prime + h
    return key


class RareWordFinder(nn.Module):
    """``rare_spans`` [batch, max_spans, 3] (w, first token, last token; -1 rows pad) of token ids [batch, seq].

    The tables are non-persistent buffers made from the config's lists (:meth:`reset_tables`, which the model's
    weight init runs), so they follow the model's device and never enter its state dict."""

    def __init__(self, rare_word_token_ids: list[list[int]], word_boundary_marks: str) -> None:
        super().__init__()
        self.rare_word_token_ids = rare_word_token_ids
        self.word_boundary_marks = word_boundary_marks
        self.max_word_tokens = max([1] + [len(word) for word in rare_word_token_ids])
        tables = self._tables()
        for name, value in tables.items():
            self.register_buffer(name, value, persistent=False)

    def _tables(self) -> dict[str, torch.Tensor]:
        """The tables, made on the CPU whatever the default device (HF builds a model on meta before loading)."""
        marks, cpu = self.word_boundary_marks, torch.device("cpu")
        begin = torch.tensor([BEGIN_CODES.index(c) for c in marks[::2]], dtype=torch.int8, device=cpu)
        end = torch.tensor([END_CODES.index(c) for c in marks[1::2]], dtype=torch.int8, device=cpu)
        words = torch.full((len(self.rare_word_token_ids), self.max_word_tokens), -1, dtype=torch.long, device=cpu)
        for row, word in enumerate(self.rare_word_token_ids):
            words[row, : len(word)] = torch.tensor(word, dtype=torch.long, device=cpu)
        keys = _keys(words)
        known = words[:, 0] >= 0  # a word without ids is never found
        keys = torch.where(known, keys, torch.full_like(keys, -1))
        sorted_keys, order = torch.sort(keys)
        real = sorted_keys >= 0
        if bool((sorted_keys[1:] == sorted_keys[:-1])[real[1:]].any()):
            raise ValueError("rare_word_token_ids: two rare words have the same token ids (or hash key)")
        return {"begin_marks": begin, "end_marks": end, "rare_words": words, "sorted_keys": sorted_keys,
                "key_order": order}

    def reset_tables(self) -> None:
        """Refill the buffers from the stored lists (after a meta-device build moved them to empty memory)."""
        for name, value in self._tables().items():
            getattr(self, name).copy_(value)

    def word_starts(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[batch, seq] bool: the token begins a word (or stands outside words)."""
        size = self.begin_marks.shape[0]
        inside = input_ids < size
        index = input_ids.clamp(0, size - 1)
        begin = torch.where(inside, self.begin_marks[index].long(), _START)
        end = torch.where(inside, self.end_marks[index].long(), 0)
        previous_begin = torch.nn.functional.pad(begin[:, :-1], (1, 0), value=_OUTSIDE)
        previous_end = torch.nn.functional.pad(end[:, :-1], (1, 0), value=0)
        # a token that only ends a character cut before it (end "-") ends with that character's class
        inherited = torch.nn.functional.pad(end[:, :-2], (2, 0), value=0)
        previous_end = torch.where((previous_end == 0) & (previous_begin == _CONTINUE), inherited, previous_end)
        next_begin = torch.nn.functional.pad(begin[:, 1:], (0, 1), value=_OUTSIDE)
        space = begin == _SPACE
        # whitespace continues a run of whitespace, except the last before a word (GPT-2's \s+(?!\S))
        after_space = (previous_end == _END_SPACE) | (previous_end == _JOINS)
        before_word = (next_begin >= _FIRST_CLASS) & (next_begin != _SPACE)
        same_class = previous_end == begin - _FIRST_CLASS + 1  # BEGIN_CODES "LNWO" -> END_CODES "LNWO"
        joined = (previous_end == _JOINS) & ~space  # a lone space joins the word after it
        continues = torch.where(space, after_space & ~before_word, same_class | joined)
        return ((begin == _START) | (begin == _OUTSIDE) | (previous_begin == _OUTSIDE)
                | ((begin >= _FIRST_CLASS) & ~continues))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        batch, seq_len = input_ids.shape
        starts = self.word_starts(input_ids)
        positions = torch.arange(seq_len, device=input_ids.device)
        # the next word start after each position (seq_len past the last): the word at i is [i, next - 1]
        marked = torch.where(starts, positions, seq_len)
        following = torch.nn.functional.pad(marked[:, 1:], (0, 1), value=seq_len)
        next_start = following.flip(1).cummin(1).values.flip(1)
        lengths = next_start - positions
        width = self.max_word_tokens
        window = positions[:, None] + torch.arange(width, device=input_ids.device)  # [seq, width]
        tokens = input_ids[:, window.clamp_max(seq_len - 1)]  # [batch, seq, width]
        tokens = torch.where(torch.arange(width, device=input_ids.device) < lengths[..., None], tokens, -1)
        keys = _keys(tokens)
        slot = torch.searchsorted(self.sorted_keys, keys).clamp_max(self.sorted_keys.shape[0] - 1)
        word = self.key_order[slot]
        found = (starts & (lengths <= width) & (self.sorted_keys[slot] == keys)
                 & (self.rare_words[word] == tokens).all(-1))
        spans = torch.stack([word, positions.expand(batch, -1), positions + lengths - 1], -1)
        spans = spans.masked_fill(~found[..., None], -1)
        # found occurrences first, in order; as many rows as the busiest sequence (all of them while compiling)
        most = seq_len if torch.compiler.is_compiling() else max(1, int(found.sum(1).max()))
        order = torch.argsort((~found).to(torch.int8), dim=1, stable=True)[:, :most]
        return spans.gather(1, order[..., None].expand(-1, -1, 3))


__all__ = ["BEGIN_CODES", "END_CODES", "RareWordFinder", "check_rare_word_fields"]
