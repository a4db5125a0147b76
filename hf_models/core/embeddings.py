r"""Input embeddings: word + learned absolute position + token type, then LayerNorm and dropout.

Split in two steps so methods can act between them: :meth:`Embeddings.sum_embeddings` gives the raw sum
e_i = tok_i + pos_i + type_i (TNF mixes its note vectors into this), :meth:`Embeddings.finalize` applies the
LayerNorm (``embedding_layer_norm``, on by default as in BERT) and dropout. A model with its own position
scheme (TUPE's attention bias) builds it with ``position_embeddings=False``; the positions are still checked
here (``max_position_embeddings`` bounds them wherever they are embedded) and derived by
:func:`resolve_position_ids`, the one rule every model on the core counts positions by.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .checks import check_index_ranges
from .config import padding_index


def positions_from_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each token counted over the real (mask 1) tokens only: ``[batch, seq]`` long.

    Right padding gives 0..n-1 as ``arange``; left padding gives the first real token position 0, as HF
    RoBERTa derives positions from the mask. Padding positions are clamped to 0 (they are masked anyway).
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def resolve_position_ids(position_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, length: int,
                         device: torch.device) -> torch.Tensor:
    """The positions of a ``length``-token input: ``position_ids`` when given, else counted over the real tokens
    of ``attention_mask`` (:func:`positions_from_attention_mask`, [batch, seq]), else 0..length-1 as [1, seq]."""
    if position_ids is not None:
        return position_ids
    if attention_mask is not None:
        return positions_from_attention_mask(attention_mask)
    return torch.arange(length, device=device)[None, :]


class Embeddings(nn.Module):
    """Reads vocab_size, hidden_size, max_position_embeddings, type_vocab_size (0: none), pad_token_id (None
    or negative: no padding row), layer_norm_eps, hidden_dropout_prob and embedding_layer_norm (default True)
    from ``config``.

    Bad input raises a ValueError naming it: ids outside their tables, position_ids of another shape than
    [batch|1, seq] or outside [0, max_position_embeddings), an empty sequence, a sequence longer than
    max_position_embeddings (also with ``position_embeddings=False``: the positions then index the model's own
    table); the checks that read tensor values are skipped while compiling or exporting.
    """

    def __init__(self, config: Any, position_embeddings: bool = True) -> None:
        super().__init__()
        self.vocab_size = config.vocab_size
        self.max_positions = config.max_position_embeddings
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                            padding_idx=padding_index(config))
        self.position_embeddings = (nn.Embedding(config.max_position_embeddings, config.hidden_size)
                                    if position_embeddings else None)
        self.token_type_embeddings = (nn.Embedding(config.type_vocab_size, config.hidden_size)
                                      if config.type_vocab_size > 0 else None)
        self.layer_norm = (nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                           if getattr(config, "embedding_layer_norm", True) else nn.Identity())
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def check_inputs(self, input_ids: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                     position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                     attention_mask: torch.Tensor | None = None) -> tuple[int, int]:
        """Raise a ValueError naming the first bad input (see the class docstring); return (batch, seq).

        :meth:`sum_embeddings` calls it; a model that looks rows up itself before the sum (TNF mixes notes
        into the word and position vectors) calls it first, so bad ids fail with this message, not an IndexError.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        if input_ids is not None and input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape [batch, seq_len], got {tuple(input_ids.shape)}")
        shape = tuple(input_ids.shape if input_ids is not None else inputs_embeds.shape[:2])
        if shape[1] == 0:
            raise ValueError(f"the input has no tokens (shape {shape}): give at least one token per sequence")
        if attention_mask is not None and tuple(attention_mask.shape) != shape:
            raise ValueError(f"attention_mask must have shape {shape}, got {tuple(attention_mask.shape)}")
        if position_ids is not None and (position_ids.dim() != 2 or position_ids.shape[1] != shape[1]
                                         or position_ids.shape[0] not in (1, shape[0])):
            raise ValueError(f"position_ids must have shape [batch|1, {shape[1]}], got {tuple(position_ids.shape)}")
        if position_ids is None and shape[1] > self.max_positions:
            raise ValueError(f"sequence length {shape[1]} exceeds max_position_embeddings={self.max_positions}: "
                             "truncate the input (e.g. the tokenizer's truncation=True)")
        type_vocab_size = (self.token_type_embeddings.num_embeddings
                           if self.token_type_embeddings is not None else 0)
        check_index_ranges(
            ("input_ids", input_ids, self.vocab_size, f"vocab_size={self.vocab_size}"),
            ("token_type_ids", token_type_ids, max(type_vocab_size, 1),
             f"type_vocab_size={type_vocab_size}" if type_vocab_size else "1: the model has no token types"),
            ("position_ids", position_ids, self.max_positions, f"max_position_embeddings={self.max_positions}"))
        return shape

    def sum_embeddings(self, input_ids: torch.Tensor | None = None,
                       token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                       inputs_embeds: torch.Tensor | None = None,
                       attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """tok + pos + type, [batch, seq, hidden]; give exactly one of ``input_ids`` / ``inputs_embeds``.

        Without ``position_ids``, positions are counted over the real tokens of ``attention_mask``
        (:func:`positions_from_attention_mask`, as HF RoBERTa), so a left-padded sequence gets the same
        positions as its right-padded twin; without a mask they are 0..seq-1.
        """
        shape = self.check_inputs(input_ids, token_type_ids, position_ids, inputs_embeds, attention_mask)
        x = self.word_embeddings(input_ids) if input_ids is not None else inputs_embeds
        if self.position_embeddings is not None:
            x = x + self.position_embeddings(resolve_position_ids(position_ids, attention_mask, shape[1], x.device))
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                x = x + self.token_type_embeddings.weight[0]
            else:
                x = x + self.token_type_embeddings(token_type_ids)
        return x

    def finalize(self, embeddings: torch.Tensor) -> torch.Tensor:
        """LayerNorm (when configured) and dropout of a summed embedding."""
        return self.dropout(self.layer_norm(embeddings))

    def forward(self, input_ids: torch.Tensor | None = None, token_type_ids: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.finalize(self.sum_embeddings(input_ids, token_type_ids, position_ids, inputs_embeds,
                                                 attention_mask))
