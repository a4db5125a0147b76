"""The feed-forward activations the encoder accepts, under HF's names ("gelu" is the exact erf GELU)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_new": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module called ``name``."""
    if name not in ACTIVATIONS:
        raise ValueError(f"hidden_act must be one of {tuple(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()
