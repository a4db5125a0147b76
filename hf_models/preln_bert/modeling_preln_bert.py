"""Pre-LN BERT for HF transformers: base model, masked-LM, sequence and token classification.

The encoder is graftkit's shared core (``hf_models.core``); this module adds HF's plumbing: weight init,
tied MLM decoder, heads and losses, and saving with ``auto_map`` plus the code, so a saved folder loads with
``trust_remote_code=True`` where graftkit is not installed.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import PreTrainedModel

from ..core.activations import activation
from ..core.attention import padding_bias
from ..core.embeddings import Embeddings
from ..core.encoder import Encoder
from ..core.remote_code import remote_auto_map, write_remote_code
from .configuration_preln_bert import PreLNBertConfig


class PreLNBertPooler(nn.Module):
    """tanh(W h_[CLS] + b): BERT's pooler over the first token."""

    def __init__(self, config: PreLNBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class PreLNBertLMHead(nn.Module):
    """decoder(LN(act(W h + b))); the decoder weight is tied to the word embeddings."""

    def __init__(self, config: PreLNBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = activation(config.hidden_act)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layer_norm(self.activation(self.dense(hidden_states))))


class PreLNBertPreTrainedModel(PreTrainedModel):
    """Weight init, attention settings and remote-code saving shared by the preln_bert models."""

    config: PreLNBertConfig
    config_class = PreLNBertConfig
    base_model_prefix = "bert"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _no_split_modules = ["Embeddings", "EncoderLayer"]
    # weight init: HF's default _init_weights (normal(0, initializer_range) for Linear and Embedding with the
    # padding row zeroed, LayerNorm = (1, 0), zero biases), as BERT

    def save_pretrained(self, save_directory, is_main_process: bool = True, **kwargs) -> None:
        """HF's save, plus ``auto_map`` in config.json and this model's code beside the weights."""
        self.config.auto_map = remote_auto_map(_AUTO_CLASSES)
        super().save_pretrained(save_directory, is_main_process=is_main_process, **kwargs)
        if is_main_process:
            write_remote_code(save_directory, list(_AUTO_CLASSES.values()))


class PreLNBertModel(PreLNBertPreTrainedModel):
    """Embeddings -> Pre-LN (or Post-LN) encoder -> optional pooler.

    ``hidden_states`` (when asked) are the embedding output and each layer's output; with Pre-LN the last
    entry is before the final LayerNorm and ``last_hidden_state`` after it.
    """

    def __init__(self, config: PreLNBertConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.pooler = PreLNBertPooler(config) if add_pooling_layer else None
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
        embedded = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        if attention_mask is not None and attention_mask.shape != embedded.shape[:2]:
            raise ValueError(f"attention_mask must have shape {tuple(embedded.shape[:2])}, "
                             f"got {tuple(attention_mask.shape)}")
        encoded = self.encoder(embedded, padding_bias(attention_mask, embedded.dtype),
                               output_attentions=bool(output_attentions),
                               output_hidden_states=bool(output_hidden_states))
        pooled = self.pooler(encoded.last_hidden_state) if self.pooler is not None else None
        output = BaseModelOutputWithPooling(last_hidden_state=encoded.last_hidden_state, pooler_output=pooled,
                                            hidden_states=encoded.hidden_states,
                                            attentions=encoded.attentions)
        return _maybe_tuple(output, return_dict, self.config)


class PreLNBertForMaskedLM(PreLNBertPreTrainedModel):
    """Masked-LM head over :class:`PreLNBertModel`; loss = cross-entropy over labels != -100."""

    _tied_weights_keys = {"lm_head.decoder.weight": "bert.embeddings.word_embeddings.weight"}

    def __init__(self, config: PreLNBertConfig) -> None:
        super().__init__(config)
        self.bert = PreLNBertModel(config, add_pooling_layer=False)
        self.lm_head = PreLNBertLMHead(config)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head.decoder = new_embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MaskedLMOutput | tuple:
        outputs = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                            output_attentions, output_hidden_states, return_dict=True)
        logits = self.lm_head(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, logits.shape[-1]), labels.to(logits.device).view(-1))
        output = MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                attentions=outputs.attentions)
        return _maybe_tuple(output, return_dict, self.config)


class PreLNBertForSequenceClassification(PreLNBertPreTrainedModel):
    """Pooled [CLS] -> dropout -> linear; loss by ``config.problem_type``, as in BERT."""

    def __init__(self, config: PreLNBertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = PreLNBertModel(config)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        outputs = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                            output_attentions, output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = None
        if labels is not None:
            labels = labels.to(logits.device)
            if self.config.problem_type is None:
                if self.num_labels == 1:
                    self.config.problem_type = "regression"
                elif labels.dtype in (torch.long, torch.int):
                    self.config.problem_type = "single_label_classification"
                else:
                    self.config.problem_type = "multi_label_classification"
            if self.config.problem_type == "regression":
                loss = MSELoss()(logits.squeeze(-1), labels.float()) if self.num_labels == 1 else \
                    MSELoss()(logits, labels)
            elif self.config.problem_type == "single_label_classification":
                loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.view(-1))
            else:
                loss = BCEWithLogitsLoss()(logits, labels.float())
        output = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                          attentions=outputs.attentions)
        return _maybe_tuple(output, return_dict, self.config)


class PreLNBertForTokenClassification(PreLNBertPreTrainedModel):
    """Per-token dropout -> linear; loss = cross-entropy over labels != -100."""

    def __init__(self, config: PreLNBertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = PreLNBertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> TokenClassifierOutput | tuple:
        outputs = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                            output_attentions, output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = CrossEntropyLoss()(logits.view(-1, self.num_labels), labels.to(logits.device).view(-1))
        output = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                       attentions=outputs.attentions)
        return _maybe_tuple(output, return_dict, self.config)


def _classifier_dropout(config: PreLNBertConfig) -> float:
    return config.hidden_dropout_prob if config.classifier_dropout is None else config.classifier_dropout


def _maybe_tuple(output, return_dict: bool | None, config: PreLNBertConfig):
    return output if (config.return_dict if return_dict is None else return_dict) else output.to_tuple()


_AUTO_CLASSES = {
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
