"""The HF plumbing every graftkit encoder model shares: a ``PreTrainedModel`` base and the task models.

A model package (``preln_bert``, ``tupe``, ...) defines its config and its base model (embeddings + encoder
+ pooler, with the forward signature below), then derives the task models from these classes by naming
its base model class; the heads, losses, weight tying and remote-code saving live here once.

Base model forward: ``(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
output_attentions, output_hidden_states, return_dict)`` returning ``BaseModelOutputWithPooling``; its word
embeddings are ``embeddings.word_embeddings``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import PreTrainedModel

from .attention import combine_biases, padding_bias
from .checks import checking_values
from .config import uses_tupe
from .embeddings import Embeddings, resolve_position_ids
from .encoder import Encoder
from .heads import MaskedLMHead, Pooler, classifier_dropout, sequence_classification_loss, token_cross_entropy
from .remote_code import remote_auto_map, write_remote_code


def maybe_tuple(output: Any, return_dict: bool | None, config: Any) -> Any:
    """``output`` or its tuple form, following ``return_dict`` (the config's when None), as HF models do."""
    return output if (config.return_dict if return_dict is None else return_dict) else output.to_tuple()


class EncoderPreTrainedModel(PreTrainedModel):
    """Weight init (HF's default: normal(0, initializer_range), zero biases, LayerNorm (1, 0), the padding
    row zeroed, as BERT), SDPA support, activation checkpointing (``gradient_checkpointing_enable()``, in each
    of the core's encoder layers), and saving that makes the folder loadable with ``trust_remote_code``.

    A model package sets ``auto_classes`` (Auto class name -> its class) once its classes exist;
    ``save_pretrained`` writes them as ``auto_map`` and copies their code beside the weights.
    """

    main_input_name = "input_ids"
    _supports_sdpa = True
    supports_gradient_checkpointing = True  # the core's EncoderLayer is a GradientCheckpointingLayer
    _no_split_modules = ["Embeddings", "EncoderLayer"]
    auto_classes: ClassVar[dict[str, type]] = {}

    def save_pretrained(self, save_directory, is_main_process: bool = True, **kwargs) -> None:
        """HF's save, plus ``auto_map`` in config.json and this model's code beside the weights."""
        self.config.auto_map = remote_auto_map(self.auto_classes)
        super().save_pretrained(save_directory, is_main_process=is_main_process, **kwargs)
        if is_main_process:
            write_remote_code(save_directory, list(self.auto_classes.values()))


def tupe_positional_bias(config: Any) -> nn.Module | None:
    """TUPE's positional attention term (:class:`hf_models.tupe.TupePositionalBias`) for a config whose
    ``position_embedding_type`` is ``"tupe_absolute"`` / ``"tupe_relative"``, at the config's width and heads
    (a meta controller's config gives its own); None for BERT's absolute positions."""
    if not uses_tupe(config):
        return None
    # imported here: the tupe package imports this module (its models are the core's)
    from ..tupe.positional import TupePositionalBias

    return TupePositionalBias(
        config.hidden_size, config.num_attention_heads, config.max_position_embeddings,
        position_mode="relative" if config.position_embedding_type == "tupe_relative" else "absolute",
        untie_cls=config.untie_cls, num_buckets=config.relative_attention_num_buckets,
        max_distance=config.relative_attention_max_distance, layer_norm_eps=config.layer_norm_eps)


def positional_attention_bias(positional_bias: nn.Module | None, position_ids: torch.Tensor | None,
                              attention_mask: torch.Tensor | None, embedded: torch.Tensor) -> torch.Tensor | None:
    """``positional_bias`` of the input's positions, in the embeddings' dtype; None without one.

    The positions are the embeddings' (:func:`resolve_position_ids`, checked there): counted over the tokens
    the mask keeps, for every row whatever the other rows hold. In eager mode a mask whose rows are all real
    tokens followed by padding (right padding, the common batch) takes 0..seq-1 for the whole batch instead:
    the same positions on every real token (only the padding's, which no real token attends to, differ), and one
    [1, heads, seq, seq] bias for the batch. While compiling the mask is always used (no data-dependent branch).
    """
    if positional_bias is None:
        return None
    if (position_ids is None and attention_mask is not None and checking_values()
            and bool((attention_mask[:, 1:] <= attention_mask[:, :-1]).all())):
        attention_mask = None
    positions = resolve_position_ids(position_ids, attention_mask, embedded.shape[1], embedded.device)
    return positional_bias(positions.long()).to(embedded.dtype)


def encoder_attention_bias(positional_bias: nn.Module | None, position_ids: torch.Tensor | None,
                           attention_mask: torch.Tensor | None, embedded: torch.Tensor) -> torch.Tensor | None:
    """The one additive bias every encoder layer takes: padding (:func:`padding_bias`) + positional
    (:func:`positional_attention_bias`, when the model has one)."""
    return combine_biases(padding_bias(attention_mask, embedded.dtype),
                          positional_attention_bias(positional_bias, position_ids, attention_mask, embedded))


class EncoderModel(EncoderPreTrainedModel):
    """BERT's base model on the core: :class:`Embeddings` -> :class:`Encoder` (Post-LN or Pre-LN by
    ``config.layer_norm_position``) -> optional :class:`Pooler`; positions by ``config.position_embedding_type``.

    ``hidden_states`` (when asked) are the embedding output and each layer's output; with Pre-LN the last
    entry is before the final LayerNorm and ``last_hidden_state`` after it. Without ``position_ids``, positions
    are counted over the tokens ``attention_mask`` keeps, so left- and right-padded batches agree.

    With ``"absolute"`` the embeddings add BERT's learned position vectors. With ``"tupe_absolute"`` /
    ``"tupe_relative"`` the input gets none: ``positional_bias`` (TUPE's term, :func:`tupe_positional_bias`)
    maps the position ids to an additive bias [batch|1, heads, seq, seq], computed once per forward and added
    to the padding's in every layer, and each layer scales its content logits by the term's 1/sqrt(2d).
    """

    def __init__(self, config: Any, add_pooling_layer: bool = True) -> None:
        super().__init__(config)
        positional_bias = tupe_positional_bias(config)
        self.embeddings = Embeddings(config, position_embeddings=positional_bias is None)
        self.positional_bias = positional_bias
        self.encoder = Encoder(config, attention_scale=getattr(positional_bias, "scale", None))
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
        bias = encoder_attention_bias(self.positional_bias, position_ids, attention_mask, embedded)
        encoded = self.encoder(embedded, bias, output_attentions=bool(output_attentions),
                               output_hidden_states=bool(output_hidden_states))
        pooled = self.pooler(encoded.last_hidden_state) if self.pooler is not None else None
        output = BaseModelOutputWithPooling(last_hidden_state=encoded.last_hidden_state, pooler_output=pooled,
                                            hidden_states=encoded.hidden_states,
                                            attentions=encoded.attentions)
        return maybe_tuple(output, return_dict, self.config)


class _TaskModel(EncoderPreTrainedModel):
    """A task head over ``base_model_class``, stored under ``base_model_prefix`` (``bert`` for preln_bert)."""

    base_model_class: ClassVar[type]
    add_pooling_layer: ClassVar[bool] = False

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        base_model = self.base_model_class(config, add_pooling_layer=self.add_pooling_layer)
        setattr(self, self.base_model_prefix, base_model)

    def _encode(self, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                output_attentions, output_hidden_states):
        return getattr(self, self.base_model_prefix)(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True)


class EncoderForMaskedLM(_TaskModel):
    """Masked-LM head (:class:`MaskedLMHead`, decoder tied to the word embeddings); loss = cross-entropy
    over labels != -100."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # tie keys name the base model's attribute, which each model package chooses (``bert`` for preln_bert)
        embeddings = f"{cls.base_model_prefix}.embeddings.word_embeddings.weight"
        cls._tied_weights_keys = {"lm_head.decoder.weight": embeddings}

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.lm_head = MaskedLMHead(config)
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
        outputs = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                               output_attentions, output_hidden_states)
        logits = self.lm_head(outputs.last_hidden_state)
        loss = token_cross_entropy(logits, labels) if labels is not None else None
        output = MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                attentions=outputs.attentions)
        return maybe_tuple(output, return_dict, self.config)


class EncoderForSequenceClassification(_TaskModel):
    """Pooled [CLS] -> dropout -> linear; loss by ``config.problem_type``, as in BERT."""

    add_pooling_layer = True

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.dropout = nn.Dropout(classifier_dropout(config))
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
        outputs = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                               output_attentions, output_hidden_states)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = sequence_classification_loss(self.config, logits, labels) if labels is not None else None
        output = SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                          attentions=outputs.attentions)
        return maybe_tuple(output, return_dict, self.config)


class EncoderForTokenClassification(_TaskModel):
    """Per-token dropout -> linear; loss = cross-entropy over labels != -100."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.dropout = nn.Dropout(classifier_dropout(config))
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
        outputs = self._encode(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                               output_attentions, output_hidden_states)
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = token_cross_entropy(logits, labels) if labels is not None else None
        output = TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                       attentions=outputs.attentions)
        return maybe_tuple(output, return_dict, self.config)
