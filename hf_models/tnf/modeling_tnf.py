"""TNF masked-LM for HF transformers: graftkit's core encoder (BERT by default) plus a note dictionary.

In training mode with ``rare_spans`` the model mixes notes into the rare words' input embeddings and, after
the forward, takes new notes from the final-layer outputs (``hf_models.tnf.notes``). In eval mode, or
without ``rare_spans``, it is exactly its backbone (:meth:`TnfForMaskedLM.backbone`), which is what is kept
after pre-training: ``model.backbone().save_pretrained(path)`` writes a :class:`PreLNBertForMaskedLM`
folder without the notes.

The mixing goes through the backbone's public ``inputs_embeds``: tok + λ(ND - tok - pos), to which the
embeddings add pos and the token type, so the input is exactly (1 - λ)(tok + pos) + λ ND[w] + type.
"""

from __future__ import annotations

import torch
from transformers import initialization as init
from transformers.modeling_outputs import MaskedLMOutput
from transformers.modeling_utils import PreTrainedModel

from ..core.embeddings import resolve_position_ids
from ..core.heads import token_cross_entropy
from ..core.modeling import EncoderForMaskedLM, EncoderPreTrainedModel, maybe_tuple
from ..preln_bert.modeling_preln_bert import PreLNBertForMaskedLM, PreLNBertModel
from .configuration_tnf import TnfConfig
from .notes import NoteDictionary, check_spans, note_inputs_embeds


class TnfPreTrainedModel(EncoderPreTrainedModel):
    """Config class and weight prefix (``bert``, as the backbone's, so the weights move over unchanged)."""

    config: TnfConfig
    config_class = TnfConfig
    base_model_prefix = "bert"
    auto_classes = {}  # a TNF folder is a training checkpoint (load it with hf_models imported)

    def _init_weights(self, module) -> None:
        """The core's init, plus the note dictionary's start (``first_note``): "replace": no notes (zeros,
        ``has_note`` false); "ema": N(0, initializer_range²), every word usable. HF runs it for every module
        whose weights a checkpoint lacks (a backbone/BERT folder has no notes)."""
        super()._init_weights(module)
        if isinstance(module, NoteDictionary):
            ema = module.first_note == "ema"
            if ema:
                init.normal_(module.notes, mean=0.0, std=self.config.initializer_range)
            else:
                init.zeros_(module.notes)
            init.constant_(module.has_note, ema)

    def save_pretrained(self, save_directory, is_main_process: bool = True, **kwargs) -> None:
        """HF's save (weights and the note dictionary); no remote code, which is for the exported backbone."""
        PreTrainedModel.save_pretrained(self, save_directory, is_main_process=is_main_process, **kwargs)


class TnfForMaskedLM(TnfPreTrainedModel, EncoderForMaskedLM):
    """Masked-LM over :class:`PreLNBertModel` (``config.layer_norm_position``: ``"post"`` = BERT) with a
    note dictionary ``notes`` (:class:`NoteDictionary`, ``config.num_rare_words`` x hidden)."""

    base_model_class = PreLNBertModel

    def __init__(self, config: TnfConfig) -> None:
        super().__init__(config)
        self.notes = NoteDictionary(config.num_rare_words, config.hidden_size, momentum=config.note_momentum,
                                    half_window=config.note_half_window, first_note=config.first_note,
                                    init_std=config.initializer_range)
        # post_init ran in the parent's __init__, before the notes existed: init them now (only them, the
        # other modules are marked initialized), so __init__ and from_pretrained start alike (_init_weights)
        self.init_weights()

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
        first token, last token; -1 rows pad), used in training mode only."""
        if not (self.training and rare_spans is not None):
            return super().forward(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                                   labels, output_attentions, output_hidden_states, return_dict)
        if input_ids is None or inputs_embeds is not None:
            raise ValueError("TNF training takes input_ids (the notes are mixed into their embeddings), "
                             "not inputs_embeds")
        embeddings = self.bert.embeddings
        seq_len = embeddings.check_inputs(input_ids, token_type_ids, position_ids, None, attention_mask)[1]
        check_spans(rare_spans, seq_len, self.notes.num_words)
        # the backbone's positions (the core's rule), resolved once: the mix subtracts them, the backbone adds them
        position_ids = resolve_position_ids(position_ids, attention_mask, seq_len, input_ids.device)
        mix, notes = self.notes.token_notes(rare_spans, seq_len,
                                            None if self.config.mix_masked_words else labels)
        # with TUPE's positions (position_embedding_type "tupe_*") the input has no position vector to mix
        positions = None if embeddings.position_embeddings is None else embeddings.position_embeddings(position_ids)
        mixed = note_inputs_embeds(embeddings.word_embeddings(input_ids), positions, notes, mix,
                                   self.config.note_weight)
        outputs = self._encode(None, attention_mask, token_type_ids, position_ids, mixed,
                               output_attentions, output_hidden_states)
        self.notes.update(outputs.last_hidden_state, rare_spans, attention_mask)
        logits = self.lm_head(outputs.last_hidden_state)
        loss = token_cross_entropy(logits, labels) if labels is not None else None
        output = MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                attentions=outputs.attentions)
        return maybe_tuple(output, return_dict, self.config)

    def backbone(self) -> PreLNBertForMaskedLM:
        """The plain masked-LM this model trains (a new model holding copies of the weights, no notes)."""
        model = PreLNBertForMaskedLM(self.config.backbone_config())
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("notes.")}
        model.load_state_dict(state)
        return model.to(self.device)


__all__ = ["TnfForMaskedLM", "TnfPreTrainedModel"]
