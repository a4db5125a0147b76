r"""Input embeddings: word + learned absolute position + token type, then LayerNorm and dropout.

Split in two steps so methods can act between them: :meth:`Embeddings.sum_embeddings` gives the raw sum
e_i = tok_i + pos_i + type_i (TNF mixes its note vectors into this), :meth:`Embeddings.finalize` applies the
LayerNorm (``embedding_layer_norm``, on by default as in BERT) and dropout. A model with its own position
scheme (TUPE's attention bias) builds it with ``position_embeddings=False``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def positions_from_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each token counted over the real (mask 1) tokens only: ``[batch, seq]`` long.

    Right padding gives 0..n-1 as ``arange``; left padding gives the first real token position 0, as HF
    RoBERTa derives positions from the mask. Padding positions are clamped to 0 (they are masked anyway).
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


class Embeddings(nn.Module):
    """Reads vocab_size, hidden_size, max_position_embeddings, type_vocab_size (0: none), pad_token_id,
    layer_norm_eps, hidden_dropout_prob and embedding_layer_norm (default True) from ``config``."""

    def __init__(self, config: Any, position_embeddings: bool = True) -> None:
        super().__init__()
        self.vocab_size = config.vocab_size
        self.max_positions = config.max_position_embeddings if position_embeddings else None
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size,
                                            padding_idx=getattr(config, "pad_token_id", None))
        self.position_embeddings = (nn.Embedding(config.max_position_embeddings, config.hidden_size)
                                    if position_embeddings else None)
        self.token_type_embeddings = (nn.Embedding(config.type_vocab_size, config.hidden_size)
                                      if config.type_vocab_size > 0 else None)
        self.layer_norm = (nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                           if getattr(config, "embedding_layer_norm", True) else nn.Identity())
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def sum_embeddings(self, input_ids: torch.Tensor | None = None,
                       token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                       inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """tok + pos + type, [batch, seq, hidden]; give exactly one of ``input_ids`` / ``inputs_embeds``."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        if input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must have shape [batch, seq_len], got {tuple(input_ids.shape)}")
            if input_ids.numel():
                low, high = torch.stack(torch.aminmax(input_ids)).tolist()  # one device sync
                if low < 0 or high >= self.vocab_size:
                    raise ValueError(f"input_ids must lie in [0, vocab_size={self.vocab_size}), "
                                     f"got values in [{low}, {high}]")
            inputs_embeds = self.word_embeddings(input_ids)
        batch, length = inputs_embeds.shape[:2]
        x = inputs_embeds
        if self.position_embeddings is not None:
            if position_ids is None:
                if length > self.max_positions:
                    raise ValueError(f"sequence length {length} exceeds max_position_embeddings="
                                     f"{self.max_positions}: truncate the input "
                                     "(e.g. the tokenizer's truncation=True)")
                position_ids = torch.arange(length, device=x.device)[None, :]
            elif position_ids.numel() and int(position_ids.max()) >= self.max_positions:
                raise ValueError(f"position_ids reach {int(position_ids.max())}, beyond "
                                 f"max_position_embeddings={self.max_positions}")
            x = x + self.position_embeddings(position_ids)
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
                position_ids: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        return self.finalize(self.sum_embeddings(input_ids, token_type_ids, position_ids, inputs_embeds))
