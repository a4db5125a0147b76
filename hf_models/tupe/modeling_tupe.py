"""TUPE for HF transformers: base model, masked-LM, sequence and token classification.

The encoder, heads, losses, weight tying and remote-code saving are graftkit's shared core
(``hf_models.core``); TUPE adds no position vector to the input (``Embeddings(position_embeddings=False)``),
scales the content logits by 1/sqrt(2d), and adds the positional term of :mod:`.positional`, computed once
per forward, to every layer's attention as one bias together with the padding mask.
"""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from ..core.attention import combine_biases, padding_bias
from ..core.embeddings import Embeddings, positions_from_attention_mask
from ..core.encoder import Encoder
from ..core.heads import Pooler
from ..core.modeling import (
    EncoderForMaskedLM,
    EncoderForSequenceClassification,
    EncoderForTokenClassification,
    EncoderPreTrainedModel,
    maybe_tuple,
)
from ..core.remote_code import write_remote_code
from .configuration_tupe import TupeConfig
from .positional import TupePositionalBias


class TupePreTrainedModel(EncoderPreTrainedModel):
    """Config class and weight prefix of the tupe models (everything else: the core's base)."""

    config: TupeConfig
    config_class = TupeConfig
    base_model_prefix = "tupe"

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True, **kwargs) -> None:
        """The core's save, plus ``positional.py``, which the remote code imports beside the model code."""
        super().save_pretrained(save_directory, is_main_process=is_main_process, **kwargs)
        if is_main_process:
            write_remote_code(save_directory, [TupePositionalBias])


def tupe_position_ids(length: int, max_positions: int, attention_mask: torch.Tensor | None,
                      position_ids: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """Positions for the positional term, [batch|1, seq]: given ones, else counted over real tokens.

    Without left padding every row counts 0..seq-1 ([1, seq], one bias for the batch); with left padding
    (first token masked in some row) the first real token is position 0, the [CLS] slot, as HF RoBERTa
    counts. Under ``torch.compile`` the mask is always used (same values, no data-dependent branch).
    """
    if position_ids is not None:
        if position_ids.dim() != 2 or position_ids.shape[-1] != length:
            raise ValueError(f"position_ids must have shape [batch|1, {length}], got {tuple(position_ids.shape)}")
        if not torch.compiler.is_compiling() and position_ids.numel():
            low, high = torch.stack(torch.aminmax(position_ids)).tolist()
            if low < 0 or high >= max_positions:
                raise ValueError(f"position_ids must lie in [0, max_position_embeddings={max_positions}), "
                                 f"got values in [{low}, {high}]")
        return position_ids.long()
    if length > max_positions:
        raise ValueError(f"sequence length {length} exceeds max_position_embeddings={max_positions}: truncate "
                         "the input (e.g. the tokenizer's truncation=True)")
    if attention_mask is not None and (torch.compiler.is_compiling() or bool((attention_mask[:, 0] == 0).any())):
        return positions_from_attention_mask(attention_mask)
    return torch.arange(length, device=device)[None, :]


class TupeModel(TupePreTrainedModel):
    """Token (+ type) embeddings -> encoder with TUPE's positional bias in every layer -> optional pooler.

    ``output_attentions`` returns softmax(content + positional + padding), the probabilities the layers use.
    """

    def __init__(self, config: TupeConfig, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        self.embeddings = Embeddings(config, position_embeddings=False)
        self.positional_bias = TupePositionalBias(
            config.hidden_size, config.num_attention_heads, config.max_position_embeddings,
            position_mode=config.position_mode, untie_cls=config.untie_cls,
            num_buckets=config.relative_attention_num_buckets,
            max_distance=config.relative_attention_max_distance, layer_norm_eps=config.layer_norm_eps)
        head_dim = config.hidden_size // config.num_attention_heads
        self.encoder = Encoder(config, attention_scale=(2 * head_dim) ** -0.5)
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
        embedded = self.embeddings(input_ids, token_type_ids, None, inputs_embeds)
        if attention_mask is not None and attention_mask.shape != embedded.shape[:2]:
            raise ValueError(f"attention_mask must have shape {tuple(embedded.shape[:2])}, "
                             f"got {tuple(attention_mask.shape)}")
        positions = tupe_position_ids(embedded.shape[1], self.config.max_position_embeddings, attention_mask,
                                      position_ids, embedded.device)
        bias = combine_biases(padding_bias(attention_mask, embedded.dtype),
                              self.positional_bias(positions).to(embedded.dtype))
        encoded = self.encoder(embedded, bias, output_attentions=bool(output_attentions),
                               output_hidden_states=bool(output_hidden_states))
        pooled = self.pooler(encoded.last_hidden_state) if self.pooler is not None else None
        output = BaseModelOutputWithPooling(last_hidden_state=encoded.last_hidden_state, pooler_output=pooled,
                                            hidden_states=encoded.hidden_states,
                                            attentions=encoded.attentions)
        return maybe_tuple(output, return_dict, self.config)


class TupeForMaskedLM(TupePreTrainedModel, EncoderForMaskedLM):
    """Masked-LM head over :class:`TupeModel`; loss = cross-entropy over labels != -100."""

    base_model_class = TupeModel


class TupeForSequenceClassification(TupePreTrainedModel, EncoderForSequenceClassification):
    """Pooled [CLS] -> dropout -> linear; loss by ``config.problem_type``, as in BERT."""

    base_model_class = TupeModel


class TupeForTokenClassification(TupePreTrainedModel, EncoderForTokenClassification):
    """Per-token dropout -> linear; loss = cross-entropy over labels != -100."""

    base_model_class = TupeModel


TupePreTrainedModel.auto_classes = {
    "AutoConfig": TupeConfig,
    "AutoModel": TupeModel,
    "AutoModelForMaskedLM": TupeForMaskedLM,
    "AutoModelForSequenceClassification": TupeForSequenceClassification,
    "AutoModelForTokenClassification": TupeForTokenClassification,
}

__all__ = [
    "TupeForMaskedLM",
    "TupeForSequenceClassification",
    "TupeForTokenClassification",
    "TupeModel",
    "TupePreTrainedModel",
]
