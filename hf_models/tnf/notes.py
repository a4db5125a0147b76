r"""Taking Notes on the Fly (Wu et al., ICLR 2021): the note dictionary, written once in plain torch.

Used by both hosts: :class:`hf_models.tnf.TnfForMaskedLM` (HF) and the fairseq task ``masked_lm_tnf``
(``plugins/tnf.py``).

Rare-word occurrences reach the model as a span tensor ``rare_spans`` [batch, max_spans, 3] (long): each row
is (rare-word index w, first token s, last token t) of one occurrence, t inclusive; padding rows are -1.
Spans of one sequence must not overlap.

- Input (training only): for every token of a span whose word has a note,
  e_i = (1 - λ)(tok_i + pos_i) + λ ND[w] (+ the token-type term, outside the mix); other tokens unchanged.
  :func:`note_inputs_embeds` expresses this through a host's ``inputs_embeds`` (the host adds pos itself).
- Update after the forward: Note(w, x) = mean of the detached final-layer outputs over the window
  [s - k, t + k], clipped to the sequence's real (attention mask 1) tokens; the notes of one step's
  occurrences of w are averaged (over every rank under DDP: the per-word sums and counts are all-reduced),
  then ND[w] <- (1 - γ) ND[w] + γ Note.

Every step runs on index tensors (one batched matmul for the windows, ``index_add_`` for the per-word sums):
no Python loop over words or spans.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from transformers import initialization as init

from ..core.embeddings import resolve_position_ids
from .rare_spans import RareWordFinder, check_rare_word_fields

FIRST_NOTE_MODES = ("replace", "ema")


def _note_field(default: object, meaning: str, fairseq: str) -> dataclasses.Field:
    return dataclasses.field(default=default, metadata={"help": meaning, "fairseq": fairseq})


@dataclasses.dataclass(frozen=True)
class NoteFields:
    """TNF's note settings, declared once: their names, defaults and meanings in every config that holds notes
    (:class:`TnfConfig`; :class:`McBertConfig` with notes on) and, under ``metadata["fairseq"]``, the setting of
    fairseq's ``masked_lm_tnf`` task that holds each (``--tnf-*``; :meth:`from_fairseq` reads a checkpoint's).
    :meth:`check` raises a ValueError naming the field as the caller's users write it."""

    note_weight: float = _note_field(0.5, "λ, the note's share of a rare word's input", "tnf_note_weight")
    note_momentum: float = _note_field(0.1, "γ in ND <- (1 - γ) ND + γ Note", "tnf_note_momentum")
    note_half_window: int = _note_field(16, "k: notes average outputs over [s - k, t + k]", "tnf_half_window")
    first_note: str = _note_field(
        "replace", "replace: a word is mixed once it has a note, its first note copied in; ema: random start",
        "tnf_first_note")
    mix_masked_words: bool = _note_field(False, "also mix notes into rare words that are prediction targets",
                                         "tnf_mix_masked_words")

    @classmethod
    def of(cls, config: object) -> NoteFields:
        """The note settings a config holds (its attributes of these names)."""
        return cls(**{name: getattr(config, name) for name in cls.names()})

    @classmethod
    def from_fairseq(cls, settings: Any) -> NoteFields:
        """The note settings of fairseq's ``masked_lm_tnf`` task (its config, or a checkpoint's settings as a
        dict), checked; what they lack takes the default."""
        get = settings.get if isinstance(settings, dict) else lambda key, default: getattr(settings, key, default)
        fields = cls(**{f.name: get(f.metadata["fairseq"], f.default) for f in dataclasses.fields(cls)})
        fields.check(cls.fairseq_flag)
        return fields

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def fairseq_flag(cls, name: str) -> str:
        """The fairseq flag of field ``name``: ``note_weight`` -> ``--tnf-note-weight``."""
        return "--" + cls.__dataclass_fields__[name].metadata["fairseq"].replace("_", "-")

    @classmethod
    def flag_field(cls, name: str) -> dataclasses.Field:
        """A dataclass field with the default and help of field ``name``: the fairseq task's config declares
        its ``--tnf-*`` settings through it."""
        spec = cls.__dataclass_fields__[name]
        return dataclasses.field(default=spec.default, metadata={"help": spec.metadata["help"]})

    def check(self, name: Callable[[str], str] = str) -> None:
        """Raise a ValueError naming the field (``name(field)``) when a value is unusable."""
        check_fraction(f"{name('note_weight')} (λ)", self.note_weight)
        check_fraction(f"{name('note_momentum')} (γ)", self.note_momentum)
        window = self.note_half_window
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise ValueError(f"{name('note_half_window')} (k) must be an integer >= 0, got {window!r}")
        if self.first_note not in FIRST_NOTE_MODES:
            raise ValueError(f"{name('first_note')} must be one of {FIRST_NOTE_MODES}, got {self.first_note!r}")
        if not isinstance(self.mix_masked_words, bool):
            raise ValueError(f"{name('mix_masked_words')} must be true or false, got {self.mix_masked_words!r}")

    def config_fields(self) -> dict[str, Any]:
        """These settings under the config fields' names."""
        return dataclasses.asdict(self)


#: the note dictionary's config fields, with these names and meanings in every config that holds notes
#: (:class:`TnfConfig`; :class:`McBertConfig` with notes on), checked by :func:`check_note_fields`
NOTE_FIELDS = ("num_rare_words", *NoteFields.names(), "rare_word_token_ids", "word_boundary_marks")


def check_note_fields(config: object, notes_optional: bool = False) -> None:
    """Raise a ValueError naming the field when a config's :data:`NOTE_FIELDS` are unusable.

    ``notes_optional``: ``num_rare_words=0`` means no notes (a model whose notes are an option, MC-BERT); the
    other note fields must then keep their defaults (they would be silently unused)."""
    words = config.num_rare_words
    if notes_optional:
        if isinstance(words, bool) or not isinstance(words, int) or words < 0:
            raise ValueError(f"num_rare_words must be an integer >= 0 (0: no notes), got {words!r}")
        if words == 0:
            defaults = {field.name: field.default for field in dataclasses.fields(config)}
            for name in NOTE_FIELDS[1:]:
                if getattr(config, name) != defaults[name]:
                    raise ValueError(f"{name}={getattr(config, name)!r} is a setting of TNF's notes: it needs "
                                     "num_rare_words >= 1 (0 means no notes)")
            return
    elif isinstance(words, bool) or not isinstance(words, int) or words < 1:
        raise ValueError(f"num_rare_words must be a positive integer, got {words!r}")
    NoteFields.of(config).check()
    check_rare_word_fields(config.rare_word_token_ids, config.word_boundary_marks, words, config.vocab_size)


def check_spans(spans: torch.Tensor, seq_len: int, num_words: int) -> None:
    """Raise a ValueError naming the problem when ``spans`` is not a valid [batch, max_spans, 3] span tensor.

    Skipped while compiling (the checks read tensor values)."""
    if torch.compiler.is_compiling():
        return
    if spans.dim() != 3 or spans.shape[-1] != 3 or spans.dtype != torch.long:
        raise ValueError(f"rare_spans must be a long tensor [batch, max_spans, 3], got {spans.dtype} "
                         f"{tuple(spans.shape)}")
    real = spans[..., 0] >= 0
    if not real.any():
        return
    words, starts, ends = spans[real].unbind(-1)
    if int(words.max()) >= num_words:
        raise ValueError(f"rare_spans name word {int(words.max())}, beyond the {num_words} rare words of the "
                         "note dictionary (a rare-word vocabulary of another size?)")
    if int(starts.min()) < 0 or int(ends.max()) >= seq_len or bool((ends < starts).any()):
        raise ValueError(f"rare_spans must satisfy 0 <= start <= end < seq_len={seq_len}")
    if int(span_token_mask(spans, seq_len).sum(1).max()) > 1:
        raise ValueError("rare_spans of one sequence overlap")


def span_token_mask(spans: torch.Tensor, seq_len: int, widen: int = 0) -> torch.Tensor:
    """[batch, max_spans, seq_len] bool: token j lies in [s - widen, t + widen] of a real span."""
    positions = torch.arange(seq_len, device=spans.device)
    inside = (positions >= (spans[..., 1:2] - widen)) & (positions <= (spans[..., 2:3] + widen))
    return inside & (spans[..., :1] >= 0)


def span_notes(hidden: torch.Tensor, spans: torch.Tensor, attention_mask: torch.Tensor | None,
               half_window: int) -> torch.Tensor:
    """The note of every span row: mean of ``hidden`` [batch, seq, d] over [s - k, t + k] ∩ real tokens.

    Returns [batch, max_spans, d] float32 (padding rows: zeros), one fixed shape whatever the spans hold, so
    the note update compiles without data-dependent shapes."""
    window = span_token_mask(spans, hidden.shape[1], widen=half_window)
    if attention_mask is not None:
        window = window & attention_mask.bool()[:, None, :]
    weights = window.to(torch.float32)
    sums = torch.bmm(weights, hidden.detach().to(torch.float32))  # [batch, spans, d]
    return sums / weights.sum(-1, keepdim=True).clamp_min(1.0)  # a real span covers its own (real) tokens


def window_means(hidden: torch.Tensor, spans: torch.Tensor, attention_mask: torch.Tensor | None,
                 half_window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`span_notes` of the real spans only: (words [n], notes [n, d] float32) in span order (batch-major)."""
    real = spans[..., 0] >= 0
    return spans[..., 0][real], span_notes(hidden, spans, attention_mask, half_window)[real]


def note_inputs_embeds(token_embeds: torch.Tensor, position_embeds: torch.Tensor | None,
                       notes: torch.Tensor, mix: torch.Tensor, weight: float) -> torch.Tensor:
    """``inputs_embeds`` for a host that adds ``position_embeds`` (and token types) itself.

    Where ``mix`` [batch, seq] is true: tok + λ(ND - tok - pos), so that after the host adds pos the sum is
    (1 - λ)(tok + pos) + λ ND; elsewhere ``token_embeds`` unchanged (so the host's output is bit-identical
    there). Give ``position_embeds=None`` for a host without additive absolute positions."""
    base = token_embeds if position_embeds is None else token_embeds + position_embeds
    mixed = token_embeds + weight * (notes.to(token_embeds.dtype) - base)
    return torch.where(mix[..., None], mixed, token_embeds)


def core_note_inputs(embeddings: nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor | None,
                     attention_mask: torch.Tensor | None, notes: torch.Tensor, mix: torch.Tensor,
                     weight: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(``inputs_embeds``, ``position_ids``) to give a backbone on graftkit's core whose ``embeddings`` are the
    core's :class:`~hf_models.core.embeddings.Embeddings`: :func:`note_inputs_embeds` of ``input_ids``.

    With BERT's learned absolute positions the positions are resolved once (the core's rule) and returned: the
    mix subtracts them, the backbone adds them. With TUPE's (``position_embedding_type`` "tupe_*") the input
    has no position vector to mix and ``position_ids`` is returned as given, so that the backbone resolves the
    positions itself (one positional bias for a right-padded batch, not one per row)."""
    if embeddings.position_embeddings is None:
        positions = None
    else:
        position_ids = resolve_position_ids(position_ids, attention_mask, input_ids.shape[1], input_ids.device)
        positions = embeddings.position_embeddings(position_ids)
    return note_inputs_embeds(embeddings.word_embeddings(input_ids), positions, notes, mix, weight), position_ids


class NoteDictionary(nn.Module):
    """ND: one note per rare word, a buffer (never trained by backprop), saved in the module's state dict.

    Args:
        num_words: rare words R (rows of ND).
        dim: note size, the host's hidden size (final-layer outputs and input embeddings share it).
        momentum: γ in ND[w] <- (1 - γ) ND[w] + γ Note, in [0, 1].
        half_window: k, the note window [s - k, t + k], >= 0.
        first_note: ``"replace"``: ND starts empty, a word is mixed only once it has a note, and its first
            note is copied in (no EMA against an arbitrary start); ``"ema"``: ND starts at
            N(0, init_std²) and every word is mixed and EMA-updated from the first step.
        init_std: the start's standard deviation for ``"ema"``.
        sync_ranks: all-reduce each step's per-word note sums and counts when torch.distributed is
            initialized with more than one rank, so every rank holds the same ND.
    """

    def __init__(self, num_words: int, dim: int, momentum: float = NoteFields.note_momentum,
                 half_window: int = NoteFields.note_half_window, first_note: str = NoteFields.first_note,
                 init_std: float = 0.02, sync_ranks: bool = True) -> None:
        super().__init__()
        for name, value in (("num_words", num_words), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        NoteFields(note_momentum=momentum, note_half_window=half_window, first_note=first_note).check()
        self.momentum, self.half_window, self.first_note = momentum, half_window, first_note
        self.sync_ranks = sync_ranks
        self._start_shared = False
        start = torch.zeros(num_words, dim)
        if first_note == "ema":  # the draw TnfPreTrainedModel._init_weights makes (init.normal_)
            nn.init.normal_(start, mean=0.0, std=init_std)
        self.register_buffer("notes", start)
        self.register_buffer("has_note", torch.full((num_words,), first_note == "ema"))

    @property
    def num_words(self) -> int:
        return self.notes.shape[0]

    def token_notes(self, spans: torch.Tensor, seq_len: int,
                    labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mix [batch, seq] bool, notes [batch, seq, d]) for the input.

        A token is mixed when it lies in a span whose word has a note; with ``labels`` given, a span any of
        whose tokens is a prediction target (label != -100) is not mixed: its note names the hidden word.
        Under DDP, the first call shares rank 0's notes with every rank (:meth:`share_start`)."""
        self.share_start()
        inside = span_token_mask(spans, seq_len)  # [batch, spans, seq]
        words = spans[..., 0].clamp_min(0)
        usable = self.has_note[words] & (spans[..., 0] >= 0)
        if labels is not None:
            usable = usable & ~(inside & (labels != -100)[:, None, :]).any(-1)
        mix = (inside & usable[..., None]).any(1)
        token_word = (inside.long() * words[..., None]).sum(1)  # spans do not overlap: one word per token
        return mix, self.notes[token_word]

    @torch.no_grad()
    def update(self, hidden: torch.Tensor, spans: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Take this step's notes from ``hidden`` (final-layer outputs) and apply the EMA; returns how many
        words were updated (on every rank alike), a 0-d tensor.

        Per-word sums and counts are accumulated densely over all R words (``index_add_``; [R, d + 1] float32,
        all-reduced under DDP), so every shape is fixed: the update compiles with ``fullgraph=True`` and
        exports. The EMA is one in-place ``lerp_`` of ND, computed in float32 (float64 for a float64 buffer)
        and stored in the buffer's dtype (a bf16 model keeps working)."""
        notes = span_notes(hidden, spans, attention_mask, self.half_window).flatten(0, 1)  # [batch * spans, d]
        real = (spans[..., 0] >= 0).flatten().to(torch.float32)
        words = spans[..., 0].flatten().clamp_min(0)
        device = self.notes.device
        totals = torch.zeros(self.num_words, notes.shape[1] + 1, device=device)
        totals[:, :-1].index_add_(0, words.to(device), (notes * real[:, None]).to(device))
        totals[:, -1].index_add_(0, words.to(device), real.to(device))
        if self._distributed():
            dist.all_reduce(totals)
        updated = totals[:, -1] > 0
        ema_dtype = torch.promote_types(self.notes.dtype, torch.float32)
        mean = (totals[:, :-1] / totals[:, -1:].clamp_min(1.0)).to(ema_dtype)
        # each row's step towards this step's note: 0 keeps it, γ is the EMA, 1 copies a first note in
        # ("replace"); one fused pass over ND (lerp), as R is large and few rows change in a step
        weight = updated.to(ema_dtype) * self.momentum
        if self.first_note == "replace":
            weight = torch.where(self.has_note, weight, updated.to(ema_dtype))
        current = self.notes if self.notes.dtype == ema_dtype else self.notes.to(ema_dtype)
        current.lerp_(mean, weight[:, None])
        if current is not self.notes:
            self.notes.copy_(current)
        self.has_note.logical_or_(updated)
        return updated.sum()

    def share_start(self) -> None:
        """Once, under DDP: every rank takes rank 0's notes, so the ranks start (and, as every update is
        all-reduced, stay) identical even where their random starts differ (``"ema"``, different seeds,
        ``broadcast_buffers=False``). Skipped while compiling (call it once before compiling under DDP)."""
        if self._start_shared or torch.compiler.is_compiling() or not self._distributed():
            return
        dist.broadcast(self.notes, 0)
        dist.broadcast(self.has_note, 0)
        self._start_shared = True

    def _distributed(self) -> bool:
        return (self.sync_ranks and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1)

    def extra_repr(self) -> str:
        return (f"num_words={self.num_words}, dim={self.notes.shape[1]}, momentum={self.momentum}, "
                f"half_window={self.half_window}, first_note={self.first_note!r}")



def init_note_state(module: nn.Module, initializer_range: float) -> None:
    """The weight init of TNF's state, for the ``_init_weights`` of every model that holds notes (TNF's, and
    MC-BERT's with notes): a :class:`NoteDictionary` starts empty ("replace": zeros, no word has a note) or at
    N(0, initializer_range²) with every word usable ("ema"); a :class:`~.rare_spans.RareWordFinder` rebuilds its
    tables from the config. Other modules are left as they are."""
    if isinstance(module, NoteDictionary):
        ema = module.first_note == "ema"
        if ema:
            init.normal_(module.notes, mean=0.0, std=initializer_range)
        else:
            init.zeros_(module.notes)
        init.constant_(module.has_note, ema)
    elif isinstance(module, RareWordFinder):
        module.reset_tables()

def check_fraction(name: str, value: object) -> float:
    """``value`` if it is a real number in [0, 1]; else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)
