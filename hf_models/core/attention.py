"""Multi-head self-attention with an additive float bias, through the fused SDPA kernel or an eager path.

Every bias the encoder applies (padding, and later positional biases such as TUPE's) is one additive float
tensor broadcastable to ``[batch, heads, query, key]``, so all of them reuse
``torch.nn.functional.scaled_dot_product_attention``. The eager path computes the same thing by hand and also
returns the attention probabilities.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checks import checking_values

ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa")


def attention_implementation(config: Any) -> str:
    """The config's ``_attn_implementation`` (HF's field), ``"sdpa"`` when unset."""
    name = getattr(config, "_attn_implementation", None) or "sdpa"
    if name not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {ATTENTION_IMPLEMENTATIONS}, got {name!r}")
    return name


def padding_bias(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """``[batch, key]`` 1/0 mask -> additive ``[batch, 1, 1, key]`` bias: 0 to keep, dtype's minimum to drop.

    Returns None when there is nothing to mask, so the kernel runs without a mask; while compiling or
    exporting it always returns the bias (knowing that would read the mask's values: a graph break).
    """
    if attention_mask is None:
        return None
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must have shape [batch, seq_len], "
                         f"got {tuple(attention_mask.shape)}")
    keep = attention_mask.bool()
    if checking_values() and bool(keep.all()):
        return None
    bias = torch.zeros(keep.shape, dtype=dtype, device=attention_mask.device)
    bias.masked_fill_(~keep, torch.finfo(dtype).min)
    return bias[:, None, None, :]


def combine_biases(*biases: torch.Tensor | None) -> torch.Tensor | None:
    """Sum of the given additive biases (None entries skipped); None when all are None."""
    present = [b for b in biases if b is not None]
    if not present:
        return None
    total = present[0]
    for bias in present[1:]:
        total = total + bias
    # padding bias (dtype minimum) plus a negative positional bias must not overflow to -inf
    return total.clamp_min(torch.finfo(total.dtype).min) if len(present) > 1 else total


class SelfAttention(nn.Module):
    r"""Multi-head self-attention: softmax(Q Kᵀ · scale + bias) V, then the output projection.

    ``scale`` defaults to 1/sqrt(head_dim); a method that adds a second attention term (TUPE scales each
    term by 1/sqrt(2·head_dim)) passes its own.
    """

    def __init__(self, config: Any, scale: float | None = None) -> None:
        super().__init__()
        self.config = config  # read at call time: attn_implementation may change after construction
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scale = self.head_dim**-0.5 if scale is None else scale
        self.dropout_prob = config.attention_probs_dropout_prob
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.output = nn.Linear(config.hidden_size, config.hidden_size)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, hidden_states: torch.Tensor, attention_bias: torch.Tensor | None = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``hidden_states`` [batch, seq, hidden]; ``attention_bias`` broadcasts to [batch, heads, seq, seq].

        Returns (output [batch, seq, hidden], attention probabilities [batch, heads, seq, seq] or None).
        Asking for the probabilities runs the eager path whatever the implementation.
        """
        batch, length, hidden = hidden_states.shape
        q = self._heads(self.query(hidden_states))
        k = self._heads(self.key(hidden_states))
        v = self._heads(self.value(hidden_states))
        dropout = self.dropout_prob if self.training else 0.0
        if attention_bias is not None and attention_bias.dtype != q.dtype:
            attention_bias = attention_bias.to(q.dtype)
        weights = None
        if output_attentions or attention_implementation(self.config) == "eager":
            scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale
            if attention_bias is not None:
                scores = scores + attention_bias
            weights = torch.softmax(scores, dim=-1)
            context = torch.matmul(F.dropout(weights, dropout, self.training), v)
        else:
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_bias, dropout_p=dropout,
                                                     scale=self.scale)
        context = context.transpose(1, 2).reshape(batch, length, hidden)
        return self.output(context), weights if output_attentions else None
