"""MC-BERT for HF transformers: the pre-training model (meta controller + main model + loss) and the main
encoder alone for fine-tuning (:class:`McBertModel`, :class:`McBertForSequenceClassification`, ...).

The encoders are graftkit's shared core (``hf_models.core``); the method's math is :mod:`.objectives`. With
``config.num_rare_words`` >= 1 the pre-training model also takes TNF's notes (:mod:`hf_models.tnf.notes`) on the
main model's input, as the TNF paper's ELECTRA-TNF does on ELECTRA's discriminator.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from transformers import initialization as init
from transformers.utils import ModelOutput

from ..core.embeddings import Embeddings
from ..core.encoder import Encoder
from ..core.modeling import (
    EncoderForSequenceClassification,
    EncoderForTokenClassification,
    EncoderModel,
    EncoderPreTrainedModel,
    encoder_attention_bias,
    maybe_tuple,
    tupe_positional_bias,
)
from ..core.remote_code import write_remote_code
from ..tnf.notes import NoteDictionary, check_spans, core_note_inputs, init_note_state
from ..tnf.rare_spans import RareWordFinder
from .configuration_mc_bert import McBertConfig
from .objectives import (
    LossParts,
    PredictionTransform,
    ReplacedTokenDetectionHead,
    candidate_scores,
    choose_masked_positions,
    corrupt,
    mean_pretraining_loss,
    multi_choice_candidates,
    replaced_token_detection_sum,
    sample_negatives,
    sample_replacements,
    token_cross_entropy_sum,
)

if TYPE_CHECKING:
    from transformers import EvalPrediction

NO_RARE_VOCABULARY = (
    "MC-BERT with notes is training without them: this batch has no 'rare_spans' and the model holds no "
    "rare-word vocabulary, so no rare word gets a note. Store one in the config (McBertConfig(**RareVocabulary"
    ".load(...).config_fields(tokenizer), ...)) or use DataCollatorForTnf.")


class McBertPreTrainedModel(EncoderPreTrainedModel):
    """Config class and weight prefix of the mc_bert models (everything else: the core's base)."""

    config: McBertConfig
    config_class = McBertConfig
    base_model_prefix = "mc_bert"

    def _init_weights(self, module: nn.Module) -> None:
        """The core's init (HF's default), plus the pre-training model's own parameter: the shared vocabulary
        bias starts at 0 (as the reference's output bias). HF runs this on every module whose weights a
        checkpoint does not hold, e.g. the head and meta controller when pre-training starts from an encoder."""
        super()._init_weights(module)
        if isinstance(module, McBertForPreTraining):
            init.zeros_(module.vocabulary_bias)
        init_note_state(module, self.config.initializer_range)  # TNF's notes, when on

    def save_pretrained(self, save_directory, is_main_process: bool = True, **kwargs) -> None:
        """The core's save, plus :mod:`.objectives` and TNF's note and rare-span modules (imported by the config
        and model modules) for ``trust_remote_code`` loading."""
        super().save_pretrained(save_directory, is_main_process=is_main_process, **kwargs)
        if is_main_process:
            write_remote_code(save_directory, [PredictionTransform, NoteDictionary, RareWordFinder])


class McBertModel(McBertPreTrainedModel, EncoderModel):
    """The main model: embeddings -> encoder -> optional pooler (the core's :class:`EncoderModel`). The one that
    is fine-tuned; it has no meta controller weights."""


class _MetaControllerConfig:
    """The main config as the meta controller sees it: hidden size, FFN size and heads divided by
    ``mc_size_divider``; every other field (attention implementation included) read from the main config."""

    def __init__(self, config: McBertConfig) -> None:
        self._config = config
        self.hidden_size = config.hidden_size // config.mc_size_divider
        self.intermediate_size = config.intermediate_size // config.mc_size_divider
        self.num_attention_heads = config.num_attention_heads // config.mc_size_divider

    def __getattr__(self, name: str) -> Any:
        if name == "_config":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._config, name)


class McBertMetaController(nn.Module):
    """The meta controller (ELECTRA's generator): a narrow MLM encoder of the main model's depth.

    It reads the main model's word embeddings E through ``embedding_projection`` (d -> d/divider; none when
    the widths are equal), and scores the vocabulary with the same projected E: LN(GELU(W h))·P(E)ᵀ + b.
    Its positions follow ``position_embedding_type`` as the main model's: with TUPE it has its own positional
    term at its width and heads (``positional_bias``) and no position vectors.
    """

    def __init__(self, config: McBertConfig) -> None:
        super().__init__()
        mc_config = _MetaControllerConfig(config)
        self.embedding_projection = (nn.Linear(config.hidden_size, mc_config.hidden_size)
                                     if mc_config.hidden_size != config.hidden_size else None)
        positional_bias = tupe_positional_bias(mc_config)
        self.embeddings = Embeddings(mc_config, position_embeddings=positional_bias is None)
        self.embeddings.word_embeddings = None  # the main model's word embeddings are read instead
        self.positional_bias = positional_bias
        self.encoder = Encoder(mc_config, attention_scale=getattr(positional_bias, "scale", None))
        self.lm_transform = PredictionTransform(mc_config.hidden_size, config.hidden_act, config.layer_norm_eps)

    def project(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings if self.embedding_projection is None else self.embedding_projection(embeddings)

    def forward(self, input_ids: torch.Tensor, word_embeddings: nn.Embedding, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden states [batch, seq, d/divider] of the (masked) input."""
        embedded = self.embeddings(inputs_embeds=self.project(word_embeddings(input_ids)),
                                   token_type_ids=token_type_ids)
        bias = encoder_attention_bias(self.positional_bias, None, attention_mask, embedded)
        return self.encoder(embedded, bias).last_hidden_state


@dataclass
class McBertForPreTrainingOutput(ModelOutput):
    """``loss`` = mean MLM loss of the meta controller (of the main model for "mlm") + λ · mean
    discriminator loss over non-pad tokens. ``logits``: the main model's per-token output (k candidate scores
    for "mc", one RTD logit for "rtd", vocabulary logits at the masked positions for "mlm");
    ``discriminator_labels`` its targets per non-pad token (candidate index, or 1 = replaced);
    ``candidate_ids`` [n_tokens, k] for "mc"."""

    loss: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    discriminator_loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    masked_positions: torch.Tensor | None = None
    corrupted_input_ids: torch.Tensor | None = None
    candidate_ids: torch.Tensor | None = None
    discriminator_labels: torch.Tensor | None = None
    loss_parts: LossParts | None = None


class McBertForPreTraining(McBertPreTrainedModel):
    """Meta controller + main model + the pre-training loss of ``config.objective`` ("mc", "rtd", "mlm").

    ``forward(input_ids, attention_mask)`` masks, samples and returns the loss itself; pass a
    ``torch.Generator`` (or seed torch) to make it reproducible. :meth:`pretrain` does the same for an
    already chosen set of masked positions (the fairseq task masks in its data pipeline).

    With notes (``config.num_rare_words`` >= 1) it holds TNF's note dictionary ``notes`` and, when the config
    stores the rare vocabulary, ``rare_words``; in training mode the main model's input at the rare words of
    the original text is (1 - λ)(tok + pos) + λ ND[w] (see :meth:`pretrain`) and the notes are taken from the
    main model's final hidden states after its forward. The meta controller reads no notes.
    """

    def __init__(self, config: McBertConfig) -> None:
        super().__init__(config)
        config.require_pretraining_tokens()
        self.mc_bert = McBertModel(config, add_pooling_layer=False)
        # per-token output bias b: the MC's vocabulary bias and the main head's b[c] (shared, as the reference)
        self.vocabulary_bias = nn.Parameter(torch.zeros(config.vocab_size))
        if config.objective == "mlm":
            self.meta_controller = None
            self.head = PredictionTransform(config.hidden_size, config.hidden_act, config.layer_norm_eps)
        else:
            self.meta_controller = McBertMetaController(config)
            self.head = (PredictionTransform(config.hidden_size, config.hidden_act, config.layer_norm_eps)
                         if config.objective == "mc" else
                         ReplacedTokenDetectionHead(config.hidden_size, config.hidden_act))
        self.notes = self.rare_words = None
        if config.notes:
            self.notes = NoteDictionary(config.num_rare_words, config.hidden_size, momentum=config.note_momentum,
                                        half_window=config.note_half_window, first_note=config.first_note,
                                        init_std=config.initializer_range)
            if config.rare_word_token_ids is not None:
                self.rare_words = RareWordFinder(config.rare_word_token_ids, config.word_boundary_marks)
        self._warned_no_vocabulary = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.mc_bert.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.mc_bert.set_input_embeddings(value)

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None,
                                mean_resizing: bool = True) -> nn.Embedding:
        """HF's resize of the word embeddings (shared by the meta controller and the candidate scores), and of
        the vocabulary bias with them: kept rows keep their values, new rows start at 0 (the init)."""
        size = self.config.vocab_size if new_num_tokens is None else new_num_tokens
        if pad_to_multiple_of is not None:
            size = -(-size // pad_to_multiple_of) * pad_to_multiple_of
        needed = {name: getattr(self.config, name) for name in self.config.token_id_fields
                  if getattr(self.config, name) is not None}
        for name, token_id in needed.items():
            if token_id >= size:
                raise ValueError(f"cannot resize the vocabulary to {size} tokens: {name}={token_id} would be "
                                 "outside it")
        if size < self.config.num_candidates:
            raise ValueError(f"cannot resize the vocabulary to {size} tokens: fewer than num_candidates "
                             f"(k={self.config.num_candidates})")
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        old_bias, rows = self.vocabulary_bias, embeddings.num_embeddings
        if old_bias.shape[0] != rows:
            new_bias = old_bias.new_zeros(rows)
            kept = min(rows, old_bias.shape[0])
            new_bias[:kept] = old_bias.detach()[:kept]
            self.vocabulary_bias = nn.Parameter(new_bias, requires_grad=old_bias.requires_grad)
        return embeddings

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        special_tokens_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        return_loss: bool = True,
        return_dict: bool | None = None,
        rare_spans: torch.Tensor | None = None,
    ) -> McBertForPreTrainingOutput | tuple:
        """Mask ``mask_prob`` of the non-pad tokens (never those of ``special_tokens_mask``), then
        :meth:`pretrain`. ``attention_mask`` 1 = real token, 0 = padding (all real when None).

        ``labels`` (optional, [batch, seq]): a masked-LM collator's choice instead (``DataCollatorForLanguage
        Modeling``, as ``run_mlm.py`` uses): the positions whose label is not -100 are the masked ones and their
        labels the original tokens; what the collator put in ``input_ids`` there (<mask>, a random or the same
        token) is not read, as MC-BERT masks every chosen position with <mask>; ``config.mask_prob`` is then
        unused. The loss is always computed: ``return_loss=True`` tells HF's ``Trainer`` so, which then evaluates
        it also without labels when ``TrainingArguments(label_names=[])`` (with labels it does anyway).

        ``rare_spans`` [batch, max_spans, 3] (notes only; :class:`~hf_models.tnf.DataCollatorForTnf`): the rare
        words' occurrences, read in training mode; without them the model finds them itself from the stored rare
        vocabulary (as :class:`~hf_models.tnf.TnfForMaskedLM`).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape [batch, seq_len], got {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ValueError(f"labels must have the shape of input_ids {tuple(input_ids.shape)}, "
                                 f"got {tuple(labels.shape)}")
            masked = labels != -100
            input_ids = torch.where(masked, labels, input_ids)
        else:
            maskable = attention_mask.bool()
            if special_tokens_mask is not None:
                maskable = maskable & ~special_tokens_mask.bool()
            masked = choose_masked_positions(maskable, self.config.mask_prob, generator)
        output = self.pretrain(input_ids, masked, attention_mask, token_type_ids, generator, rare_spans)
        return maybe_tuple(output, return_dict, self.config)

    def pretrain(self, input_ids: torch.Tensor, masked_positions: torch.Tensor, attention_mask: torch.Tensor,
                 token_type_ids: torch.Tensor | None = None, generator: torch.Generator | None = None,
                 rare_spans: torch.Tensor | None = None) -> McBertForPreTrainingOutput:
        """One pre-training step's outputs for original ``input_ids`` whose ``masked_positions`` (bool) are
        replaced by <mask>; ``attention_mask`` marks the tokens the discriminator is trained on.

        With notes, in training mode: the rare words' occurrences in the original text (``rare_spans``, or
        found in ``input_ids``) get their notes mixed into the main model's input where none of their tokens
        is masked (or, with ``mix_masked_words``, everywhere), so the main model reads the original word there
        (the corrupted text equals the original outside the masked positions)."""
        config = self.config
        if attention_mask.shape != input_ids.shape or masked_positions.shape != input_ids.shape:
            raise ValueError(f"attention_mask and masked_positions must have the shape of input_ids "
                             f"{tuple(input_ids.shape)}, got {tuple(attention_mask.shape)} and "
                             f"{tuple(masked_positions.shape)}")
        tokens = attention_mask.bool()
        masked = masked_positions.bool() & tokens
        masked_input = input_ids.masked_fill(masked, config.mask_token_id)
        embedding = self.get_input_embeddings()
        targets = input_ids[masked]
        n_masked, n_tokens = masked.sum(), tokens.sum()
        spans = self._note_spans(input_ids, rare_spans)

        if self.meta_controller is None:  # BERT's MLM on the main model
            hidden = self._main_hidden(masked_input, input_ids, masked, attention_mask, token_type_ids, spans)
            logits = nn.functional.linear(self.head(hidden[masked]), embedding.weight, self.vocabulary_bias)
            parts = LossParts(token_cross_entropy_sum(logits, targets), n_masked, None, n_tokens)
            return McBertForPreTrainingOutput(loss=mean_pretraining_loss(parts, 0.0),
                                              mlm_loss=parts.mlm_sum / n_masked.clamp_min(1), logits=logits,
                                              masked_positions=masked, loss_parts=parts)

        mc_hidden = self.meta_controller(masked_input, embedding, attention_mask, token_type_ids)
        mc_output_weight = self.meta_controller.project(embedding.weight)  # [V, d/divider]
        mc_transform = self.meta_controller.lm_transform
        mlm_logits = nn.functional.linear(mc_transform(mc_hidden[masked]), mc_output_weight, self.vocabulary_bias)
        mlm_sum = token_cross_entropy_sum(mlm_logits, targets)
        with torch.no_grad():
            corrupted = corrupt(input_ids, masked, sample_replacements(mlm_logits, generator))
        hidden = self._main_hidden(corrupted, input_ids, masked, attention_mask, token_type_ids, spans)[tokens]

        candidates = None
        if config.objective == "rtd":
            labels = (corrupted != input_ids)[tokens]
            logits = self.head(hidden)
            discriminator_sum = replaced_token_detection_sum(logits, labels)
            weight = config.rtd_loss_weight
        else:
            with torch.no_grad():
                # negatives from the MC's distribution at every non-pad position, in float32: the unmasked
                # rows from the vocabulary head in blocks (no [n_tokens, V] logits: see
                # sample_from_vocabulary_head), the masked rows from their MLM logits, already computed
                original = input_ids[tokens]
                unmasked = tokens & ~masked
                features = mc_transform(mc_hidden[unmasked]).float()
                drawn = sample_negatives(
                    features, mc_output_weight.float(), self.vocabulary_bias.float(), config.num_candidates - 1,
                    with_replacement=config.candidates_with_replacement, computed_logits=mlm_logits.detach().float(),
                    exclude=torch.cat([input_ids[unmasked], targets]) if config.candidates_exclude_original else None,
                    generator=generator)
                masked_rows = masked[tokens]
                negatives = torch.empty_like(drawn)
                negatives[~masked_rows], negatives[masked_rows] = drawn[:len(features)], drawn[len(features):]
                candidates, labels = multi_choice_candidates(original, corrupted[tokens], negatives,
                                                             config.neither_token_id)
            logits = candidate_scores(self.head(hidden), candidates, embedding.weight, self.vocabulary_bias)
            discriminator_sum = token_cross_entropy_sum(logits, labels)
            weight = config.mc_loss_weight
        parts = LossParts(mlm_sum, n_masked, discriminator_sum, n_tokens)
        return McBertForPreTrainingOutput(
            loss=mean_pretraining_loss(parts, weight), mlm_loss=mlm_sum / n_masked.clamp_min(1),
            discriminator_loss=discriminator_sum / n_tokens.clamp_min(1), logits=logits, masked_positions=masked,
            corrupted_input_ids=corrupted, candidate_ids=candidates, discriminator_labels=labels,
            loss_parts=parts)

    def _note_spans(self, input_ids: torch.Tensor, rare_spans: torch.Tensor | None) -> torch.Tensor | None:
        """The rare spans the main model's input takes notes at this step: None without notes, in eval mode,
        or when neither the batch nor the config gives the rare words (warned once)."""
        if self.notes is None:
            if rare_spans is not None:
                raise ValueError("rare_spans are given but this MC-BERT model has no notes: set "
                                 "config.num_rare_words (TNF's notes) or drop rare_spans from the batch")
            return None
        if not self.training:
            return None
        if rare_spans is None:
            if self.rare_words is not None:  # the original text: input_ids here hold the masked tokens' labels
                return self.rare_words(input_ids)
            if not self._warned_no_vocabulary and not torch.compiler.is_compiling():
                warnings.warn(NO_RARE_VOCABULARY, UserWarning, stacklevel=6)  # model(...)'s caller
                self._warned_no_vocabulary = True
        return rare_spans

    def _main_hidden(self, main_input: torch.Tensor, input_ids: torch.Tensor, masked: torch.Tensor,
                     attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None,
                     spans: torch.Tensor | None) -> torch.Tensor:
        """The main model's last hidden states [batch, seq, d] on ``main_input`` (the corrupted text, or the
        masked one for "mlm"); with ``spans``, notes mixed in as TNF's (:func:`note_inputs_embeds`) and taken
        after the forward (:meth:`NoteDictionary.update`)."""
        if spans is None:
            return self.mc_bert(main_input, attention_mask, token_type_ids).last_hidden_state
        embeddings = self.mc_bert.embeddings
        seq_len = main_input.shape[1]
        check_spans(spans, seq_len, self.notes.num_words)
        targets = None if self.config.mix_masked_words else input_ids.masked_fill(~masked, -100)
        mix, notes = self.notes.token_notes(spans, seq_len, targets)
        mixed, position_ids = core_note_inputs(embeddings, main_input, None, attention_mask, notes, mix,
                                               self.config.note_weight)
        hidden = self.mc_bert(None, attention_mask, token_type_ids, position_ids, mixed).last_hidden_state
        self.notes.update(hidden, spans, attention_mask)
        return hidden


def pretraining_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """``compute_metrics`` for HF's ``Trainer`` evaluating :class:`McBertForPreTraining`: each part of the loss,
    ``mlm_loss`` (the meta controller's, or the main model's for "mlm") and ``discriminator_loss`` (the mean
    per-token multi-choice or RTD loss), averaged over the evaluation batches as ``eval_loss`` is, so that
    eval_loss = eval_mlm_loss + λ · eval_discriminator_loss. The Trainer calls it when the batches carry labels
    (``DataCollatorForLanguageModeling``); the other outputs are ``config.keys_to_ignore_at_inference``."""
    parts = prediction.predictions if isinstance(prediction.predictions, tuple) else (prediction.predictions,)
    return {name: float(np.mean(values)) for name, values in zip(("mlm_loss", "discriminator_loss"), parts)}


class McBertForSequenceClassification(McBertPreTrainedModel, EncoderForSequenceClassification):
    """Pooled [CLS] -> dropout -> linear over the main model; loss by ``config.problem_type``, as in BERT."""

    base_model_class = McBertModel


class McBertForTokenClassification(McBertPreTrainedModel, EncoderForTokenClassification):
    """Per-token dropout -> linear over the main model; loss = cross-entropy over labels != -100."""

    base_model_class = McBertModel


McBertPreTrainedModel.auto_classes = {
    "AutoConfig": McBertConfig,
    "AutoModel": McBertModel,
    "AutoModelForPreTraining": McBertForPreTraining,
    "AutoModelForMaskedLM": McBertForPreTraining,  # what run_mlm.py loads: MC-BERT's masked-LM pre-training
    "AutoModelForSequenceClassification": McBertForSequenceClassification,
    "AutoModelForTokenClassification": McBertForTokenClassification,
}

__all__ = [
    "McBertForPreTraining",
    "McBertForPreTrainingOutput",
    "McBertForSequenceClassification",
    "McBertForTokenClassification",
    "McBertModel",
    "McBertPreTrainedModel",
    "pretraining_metrics",
]
