"""Output heads shared by graftkit's HF models: BERT's pooler, the tied masked-LM head, classifier losses.

Written once here (transformers v5's modular idea) and used by every model built on the core, so a Pre-LN
BERT, TUPE, TNF and MC-BERT checkpoint name their head weights the same way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss

from .activations import activation


class Pooler(nn.Module):
    """tanh(W h_[CLS] + b): BERT's pooler over the first token."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if hidden_states.shape[1] == 0:
            raise ValueError(f"the pooler reads the first token, but the sequence is empty "
                             f"(hidden_states of shape {tuple(hidden_states.shape)})")
        return self.activation(self.dense(hidden_states[:, 0]))


class MaskedLMHead(nn.Module):
    """decoder(LN(act(W h + b))); the model ties the decoder weight to its word embeddings."""

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = activation(config.hidden_act)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(self.activation(self.dense(hidden_states))))


def classifier_dropout(config: Any) -> float:
    """``classifier_dropout`` when set, else ``hidden_dropout_prob`` (BERT's rule)."""
    value = getattr(config, "classifier_dropout", None)
    return config.hidden_dropout_prob if value is None else value


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every position whose label is not -100 (masked-LM and token classification)."""
    return CrossEntropyLoss()(logits.view(-1, logits.shape[-1]), labels.to(logits.device).view(-1))


def sequence_classification_loss(config: Any, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BERT's loss by ``config.problem_type``, inferred on first use as transformers does: regression for one
    label, single-label cross-entropy for integer labels, multi-label BCE otherwise."""
    labels = labels.to(logits.device)
    num_labels = logits.shape[-1]
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        if num_labels == 1:
            return MSELoss()(logits.squeeze(-1), labels.float())
        return MSELoss()(logits, labels)
    if config.problem_type == "single_label_classification":
        return CrossEntropyLoss()(logits.view(-1, num_labels), labels.view(-1))
    return BCEWithLogitsLoss()(logits, labels.float())
