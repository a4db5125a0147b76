r"""The BERT-style Transformer encoder shared by graftkit's HF models, with Post-LN or Pre-LN layers.

Post-LN (Vaswani et al.; BERT):  x' = LN(x + Attn(x));   y = LN(x' + FFN(x'))
Pre-LN  (Xiong et al. 2020):     x' = x + Attn(LN(x));   y = x' + FFN(LN(x'))
and Pre-LN normalises the last layer's output once more (``final_layer_norm``).
Dropout is applied to each sub-layer's output before the residual sum; FFN(x) = W2 act(W1 x + b1) + b2.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers.modeling_layers import GradientCheckpointingLayer

from .activations import activation
from .attention import SelfAttention
from .config import validate_encoder_config


class EncoderOutput(NamedTuple):
    """``hidden_states``: the input and every layer's output (before Pre-LN's final LN), when asked."""

    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class FeedForward(nn.Module):
    """W2 · act(W1 · x): ``intermediate`` is W1 (hidden -> intermediate), ``output`` is W2."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.intermediate = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = activation(config.hidden_act)
        self.output = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.activation(self.intermediate(x)))


class EncoderLayer(GradientCheckpointingLayer):
    """One Transformer encoder layer; ``layer_norm_position`` picks where its two LayerNorms sit.

    Activation checkpointing is transformers' :class:`GradientCheckpointingLayer`: once
    ``gradient_checkpointing_enable()`` (or ``layer.gradient_checkpointing = True``) is set, the layer's
    activations are recomputed in the backward pass, in training mode with gradients on; the gradients are
    the same (dropout's random state is replayed). Call it with ``hidden_states`` positional.
    """

    def __init__(self, config: Any, attention_scale: float | None = None) -> None:
        super().__init__()
        self._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)  # HF replaces it on enable
        self.pre_norm = config.layer_norm_position == "pre"
        self.attention = SelfAttention(config, scale=attention_scale)
        self.attention_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config)
        self.feed_forward_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, attention_bias: torch.Tensor | None = None,
                output_attentions: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = hidden_states
        if self.pre_norm:
            normed = self.attention_layer_norm(x)
            attended, weights = self.attention(normed, attention_bias, output_attentions)
            x = x + self.dropout(attended)
            x = x + self.dropout(self.feed_forward(self.feed_forward_layer_norm(x)))
        else:
            attended, weights = self.attention(x, attention_bias, output_attentions)
            x = self.attention_layer_norm(x + self.dropout(attended))
            x = self.feed_forward_layer_norm(x + self.dropout(self.feed_forward(x)))
        return x, weights


class Encoder(nn.Module):
    """A stack of ``num_hidden_layers`` :class:`EncoderLayer`; Pre-LN adds ``final_layer_norm``.

    ``attention_scale`` overrides the 1/sqrt(head_dim) logit scale of every layer. Each layer can recompute
    its activations in the backward pass (activation checkpointing, see :class:`EncoderLayer`).
    """

    def __init__(self, config: Any, attention_scale: float | None = None) -> None:
        super().__init__()
        validate_encoder_config(config)
        self.config = config
        self.layers = nn.ModuleList(EncoderLayer(config, attention_scale)
                                    for _ in range(config.num_hidden_layers))
        if config.layer_norm_position == "pre":
            self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor, attention_bias: torch.Tensor | None = None,
                output_attentions: bool = False, output_hidden_states: bool = False) -> EncoderOutput:
        """``hidden_states`` [batch, seq, hidden]; ``attention_bias`` additive, broadcastable to
        [batch, heads, seq, seq] (build it with :func:`padding_bias` / :func:`combine_biases`)."""
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.config.hidden_size:
            raise ValueError(f"hidden_states must have shape [batch, seq_len, {self.config.hidden_size}], "
                             f"got {tuple(hidden_states.shape)}")
        all_hidden = [hidden_states] if output_hidden_states else None
        all_attentions = [] if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, attention_bias, output_attentions)
            if all_hidden is not None:
                all_hidden.append(hidden_states)
            if all_attentions is not None:
                all_attentions.append(weights)
        if hasattr(self, "final_layer_norm"):
            hidden_states = self.final_layer_norm(hidden_states)
        return EncoderOutput(hidden_states, tuple(all_hidden) if all_hidden is not None else None,
                             tuple(all_attentions) if all_attentions is not None else None)
