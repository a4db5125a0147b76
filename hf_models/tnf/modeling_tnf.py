"""TNF masked-LM for HF transformers: graftkit's core encoder (BERT by default) plus a note dictionary.

In training mode the model mixes notes into the rare words' input embeddings and, after the forward, takes new
notes from the final-layer outputs (``hf_models.tnf.notes``). The rare words' occurrences come from the batch's
``rare_spans`` (:class:`DataCollatorForTnf`) or, with any other collator, are found in the token ids from the
rare vocabulary the config stores (:mod:`hf_models.tnf.rare_spans`). In eval mode it is exactly its backbone
(:meth:`TnfForMaskedLM.backbone`), which is what is kept after pre-training:
``model.backbone().save_pretrained(path)`` writes a :class:`PreLNBertForMaskedLM` folder without the notes.

The mixing goes through the backbone's public ``inputs_embeds``: tok + λ(ND - tok - pos), to which the
embeddings add pos and the token type, so the input is exactly (1 - λ)(tok + pos) + λ ND[w] + type.

This module imports only the core and its own package, so a saved TNF folder loads with ``trust_remote_code``.
"""

from __future__ import annotations

import os
import warnings

import torch
from transformers.modeling_outputs import MaskedLMOutput

from ..core.heads import token_cross_entropy
from ..core.modeling import (
    EncoderForMaskedLM,
    EncoderForSequenceClassification,
    EncoderForTokenClassification,
    EncoderModel,
    EncoderPreTrainedModel,
    maybe_tuple,
)
from ..core.remote_code import write_remote_code
from .configuration_tnf import TnfConfig
from .notes import NoteDictionary, check_spans, core_note_inputs, init_note_state
from .rare_spans import RareWordFinder

NO_RARE_VOCABULARY = (
    "TNF is training as its plain backbone: this batch has no 'rare_spans' and the model holds no rare-word "
    "vocabulary, so no rare word gets a note. Store one in the config (TnfConfig(**RareVocabulary.load(...)"
    ".config_fields(tokenizer), ...)) or use DataCollatorForTnf.")


class TnfPreTrainedModel(EncoderPreTrainedModel):
    """Config class and weight prefix (``bert``, as the backbone's, so the weights move over unchanged)."""

    config: TnfConfig
    config_class = TnfConfig
    base_model_prefix = "bert"

    def _init_weights(self, module) -> None:
        """The core's init, plus the note dictionary's start (``first_note``): "replace": no notes (zeros,
        ``has_note`` false); "ema": N(0, initializer_range²), every word usable; and the rare-word finder's
        tables (from the config). HF runs it for every module whose weights a checkpoint lacks (a
        backbone/BERT folder has no notes)."""
        super()._init_weights(module)
        init_note_state(module, self.config.initializer_range)

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True, **kwargs) -> None:
        """The core's save (weights, notes, ``auto_map`` and the model code), plus the note and rare-span
        modules the remote code imports: the folder (``save_pretrained`` or a Trainer checkpoint) loads with
        ``trust_remote_code=True`` without graftkit."""
        super().save_pretrained(save_directory, is_main_process=is_main_process, **kwargs)
        if is_main_process:
            write_remote_code(save_directory, [NoteDictionary, RareWordFinder])


class TnfModel(TnfPreTrainedModel, EncoderModel):
    """The backbone TNF trains: the core's :class:`EncoderModel` (``config.layer_norm_position``: ``"post"`` =
    BERT), the same module and weights as :class:`PreLNBertModel`."""


class TnfForMaskedLM(TnfPreTrainedModel, EncoderForMaskedLM):
    """Masked-LM over :class:`TnfModel` (``config.layer_norm_position``: ``"post"`` = BERT) with a note
    dictionary ``notes`` (:class:`NoteDictionary`, ``config.num_rare_words`` x hidden) and, when the config
    stores the rare vocabulary, ``rare_words`` (:class:`RareWordFinder`) for batches without ``rare_spans``."""

    base_model_class = TnfModel

    def __init__(self, config: TnfConfig) -> None:
        super().__init__(config)
        self.notes = NoteDictionary(config.num_rare_words, config.hidden_size, momentum=config.note_momentum,
                                    half_window=config.note_half_window, first_note=config.first_note,
                                    init_std=config.initializer_range)
        self.rare_words = (None if config.rare_word_token_ids is None
                           else RareWordFinder(config.rare_word_token_ids, config.word_boundary_marks))
        self._warned_no_vocabulary = False
        # post_init ran in the parent's __init__, before these existed: their own __init__ gives exactly what
        # _init_weights gives (the notes' start drawn by the same normal_), which from_pretrained runs

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        rare_spans: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> MaskedLMOutput | tuple:
        """As the backbone's masked-LM forward, plus ``rare_spans`` [batch, max_spans, 3] (rare-word index,
        first token, last token; -1 rows pad), used in training mode only; without them the model finds the
        rare words in the batch itself (:meth:`find_rare_spans`), or warns once that it trains as BERT."""
        if self.training and rare_spans is None and input_ids is not None:
            rare_spans = self.find_rare_spans(input_ids, labels)
        if not (self.training and rare_spans is not None):
            return super().forward(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                                   labels, output_attentions, output_hidden_states, return_dict)
        if input_ids is None or inputs_embeds is not None:
            raise ValueError("TNF training takes input_ids (the notes are mixed into their embeddings), "
                             "not inputs_embeds")
        embeddings = self.bert.embeddings
        seq_len = embeddings.check_inputs(input_ids, token_type_ids, position_ids, None, attention_mask)[1]
        check_spans(rare_spans, seq_len, self.notes.num_words)
        mix, notes = self.notes.token_notes(rare_spans, seq_len,
                                            None if self.config.mix_masked_words else labels)
        mixed, position_ids = core_note_inputs(embeddings, input_ids, position_ids, attention_mask, notes, mix,
                                               self.config.note_weight)
        outputs = self._encode(None, attention_mask, token_type_ids, position_ids, mixed,
                               output_attentions, output_hidden_states)
        self.notes.update(outputs.last_hidden_state, rare_spans, attention_mask)
        logits = self.lm_head(outputs.last_hidden_state)
        loss = token_cross_entropy(logits, labels) if labels is not None else None
        output = MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                attentions=outputs.attentions)
        return maybe_tuple(output, return_dict, self.config)

    def find_rare_spans(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor | None:
        """The rare words' spans in the batch's original text (the masked positions' ``labels`` put back, as a
        masked-LM collator leaves them), from the stored rare vocabulary; None, with a warning the first time,
        when the model holds none."""
        if self.rare_words is None:
            if not self._warned_no_vocabulary and not torch.compiler.is_compiling():
                warnings.warn(NO_RARE_VOCABULARY, UserWarning, stacklevel=5)  # model(...)'s caller
                self._warned_no_vocabulary = True
            return None
        original = input_ids if labels is None else torch.where(labels != -100, labels, input_ids)
        return self.rare_words(original)

    def backbone(self):
        """The plain masked-LM this model trains (a new :class:`PreLNBertForMaskedLM` holding copies of the
        weights, no notes; with ``hf_models`` imported, which registers it)."""
        from transformers import AutoModelForMaskedLM

        model = AutoModelForMaskedLM.from_config(self.config.backbone_config())
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("notes.")}
        model.load_state_dict(state)
        return model.to(self.device)


class TnfForSequenceClassification(TnfPreTrainedModel, EncoderForSequenceClassification):
    """The core's sequence classifier over :class:`TnfModel`: a TNF folder (notes included, which fine-tuning
    does not use and the load leaves out) fine-tunes directly, the same model as its backbone's classifier."""

    base_model_class = TnfModel


class TnfForTokenClassification(TnfPreTrainedModel, EncoderForTokenClassification):
    """The core's token classifier over :class:`TnfModel` (notes left out, as for sequence classification)."""

    base_model_class = TnfModel


TnfPreTrainedModel.auto_classes = {
    "AutoConfig": TnfConfig,
    "AutoModel": TnfModel,
    "AutoModelForMaskedLM": TnfForMaskedLM,
    "AutoModelForSequenceClassification": TnfForSequenceClassification,
    "AutoModelForTokenClassification": TnfForTokenClassification,
}

__all__ = ["TnfForMaskedLM", "TnfForSequenceClassification", "TnfForTokenClassification", "TnfModel",
           "TnfPreTrainedModel"]
