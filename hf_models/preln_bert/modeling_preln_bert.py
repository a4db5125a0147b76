"""Pre-LN BERT for HF transformers: base model, masked-LM, sequence and token classification.

The encoder is graftkit's shared core (``hf_models.core``), and so are the heads, losses, weight tying and
remote-code saving (``hf_models.core.modeling``): this module names the config and assembles the base model.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..core.attention import padding_bias
from ..core.embeddings import Embeddings
from ..core.encoder import Encoder
from ..core.heads import Pooler
from ..core.modeling import (
    EncoderForMaskedLM,
    EncoderForSequenceClassification,
    EncoderForTokenClassification,
    EncoderPreTrainedModel,
    maybe_tuple,
)
from .configuration_preln_bert import PreLNBertConfig


class PreLNBertPreTrainedModel(EncoderPreTrainedModel):
    """Config class and weight prefix of the preln_bert models (everything else: the core's base)."""

    config: PreLNBertConfig
    config_class = PreLNBertConfig
    base_model_prefix = "bert"


class PreLNBertModel(PreLNBertPreTrainedModel):
    """Embeddings -> Pre-LN (or Post-LN) encoder -> optional pooler.

    ``hidden_states`` (when asked) are the embedding output and each layer's output; with Pre-LN the last
    entry is before the final LayerNorm and ``last_hidden_state`` after it. Without ``position_ids``, positions
    are counted over the tokens ``attention_mask`` keeps, so left- and right-padded batches agree.
    """

    def __init__(self, config: PreLNBertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.pooler = Pooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value
        self.embeddings.vocab_size = value.num_embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        output_attentions = self.config.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (self.config.output_hidden_states if output_hidden_states is None
                                else output_hidden_states)
        # positions follow the mask (left padding counts from the first real token, as HF RoBERTa)
        embedded = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds, attention_mask)
        encoded = self.encoder(embedded, padding_bias(attention_mask, embedded.dtype),
                               output_attentions=bool(output_attentions),
                               output_hidden_states=bool(output_hidden_states))
        pooled = self.pooler(encoded.last_hidden_state) if self.pooler is not None else None
        output = BaseModelOutputWithPooling(last_hidden_state=encoded.last_hidden_state, pooler_output=pooled,
                                            hidden_states=encoded.hidden_states,
                                            attentions=encoded.attentions)
        return maybe_tuple(output, return_dict, self.config)


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
