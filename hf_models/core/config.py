"""Validation of the config fields the shared encoder core reads (any object with these attributes works)."""

from __future__ import annotations

from typing import Any

from .activations import ACTIVATIONS

LAYER_NORM_POSITIONS = ("post", "pre")


def validate_encoder_config(config: Any) -> None:
    """Raise a ValueError naming the field when an encoder setting is unusable.

    Read fields: hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, hidden_act,
    hidden_dropout_prob, attention_probs_dropout_prob, layer_norm_eps, layer_norm_position.
    """
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(f"hidden_size ({config.hidden_size}) must be divisible by num_attention_heads "
                         f"({config.num_attention_heads})")
    if config.layer_norm_position not in LAYER_NORM_POSITIONS:
        raise ValueError(f"layer_norm_position must be one of {LAYER_NORM_POSITIONS}, "
                         f"got {config.layer_norm_position!r}")
    if config.hidden_act not in ACTIVATIONS:
        raise ValueError(f"hidden_act must be one of {tuple(ACTIVATIONS)}, got {config.hidden_act!r}")
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        value = getattr(config, name)
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    if not config.layer_norm_eps > 0:
        raise ValueError(f"layer_norm_eps must be positive, got {config.layer_norm_eps!r}")
