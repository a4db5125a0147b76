"""Pre-LN BERT for HF transformers: base model, masked-LM, sequence and token classification.

The encoder is graftkit's shared core (``hf_models.core``), and so are the heads, losses, weight tying and
remote-code saving (``hf_models.core.modeling``): this module names the config and assembles the base model.
"""

from __future__ import annotations

from ..core.modeling import (
    EncoderForMaskedLM,
    EncoderForSequenceClassification,
    EncoderForTokenClassification,
    EncoderModel,
    EncoderPreTrainedModel,
)
from .configuration_preln_bert import PreLNBertConfig


class PreLNBertPreTrainedModel(EncoderPreTrainedModel):
    """Config class and weight prefix of the preln_bert models (everything else: the core's base)."""

    config: PreLNBertConfig
    config_class = PreLNBertConfig
    base_model_prefix = "bert"


class PreLNBertModel(PreLNBertPreTrainedModel, EncoderModel):
    """Embeddings -> Pre-LN (or Post-LN) encoder -> optional pooler: the core's :class:`EncoderModel`.

    ``hidden_states`` (when asked) are the embedding output and each layer's output; with Pre-LN the last
    entry is before the final LayerNorm and ``last_hidden_state`` after it. Without ``position_ids``, positions
    are counted over the tokens ``attention_mask`` keeps, so left- and right-padded batches agree.
    """


class PreLNBertForMaskedLM(PreLNBertPreTrainedModel, EncoderForMaskedLM):
    """Masked-LM head over :class:`PreLNBertModel`; loss = cross-entropy over labels != -100."""

    base_model_class = PreLNBertModel


class PreLNBertForSequenceClassification(PreLNBertPreTrainedModel, EncoderForSequenceClassification):
    """Pooled [CLS] -> dropout -> linear; loss by ``config.problem_type``, as in BERT."""

    base_model_class = PreLNBertModel


class PreLNBertForTokenClassification(PreLNBertPreTrainedModel, EncoderForTokenClassification):
    """Per-token dropout -> linear; loss = cross-entropy over labels != -100."""

    base_model_class = PreLNBertModel


PreLNBertPreTrainedModel.auto_classes = {
    "AutoConfig": PreLNBertConfig,
    "AutoModel": PreLNBertModel,
    "AutoModelForMaskedLM": PreLNBertForMaskedLM,
    "AutoModelForSequenceClassification": PreLNBertForSequenceClassification,
    "AutoModelForTokenClassification": PreLNBertForTokenClassification,
}

__all__ = [
    "PreLNBertForMaskedLM",
    "PreLNBertForSequenceClassification",
    "PreLNBertForTokenClassification",
    "PreLNBertModel",
    "PreLNBertPreTrainedModel",
]
