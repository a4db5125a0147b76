"""TUPE for HF transformers: base model, masked-LM, sequence and token classification.

The encoder, heads, losses, weight tying and remote-code saving are graftkit's shared core
(``hf_models.core``), and so are the positions and their checks: the core's :class:`EncoderModel` builds
TUPE's positional term (:mod:`.positional`) from ``config.position_embedding_type``, so the input gets no
position vector, the term is computed once per forward and added to every layer's attention with the padding
mask, and the content logits are scaled by 1/sqrt(2d). Any other model on the core takes the same setting
(docs/compose.md); a tupe config is one whose positions are TUPE's.
"""

from __future__ import annotations

from ..core.modeling import (
    EncoderForMaskedLM,
    EncoderForSequenceClassification,
    EncoderForTokenClassification,
    EncoderModel,
    EncoderPreTrainedModel,
)
from .configuration_tupe import TupeConfig


class TupePreTrainedModel(EncoderPreTrainedModel):
    """Config class and weight prefix of the tupe models (everything else: the core's base)."""

    config: TupeConfig
    config_class = TupeConfig
    base_model_prefix = "tupe"


class TupeModel(TupePreTrainedModel, EncoderModel):
    """Token (+ type) embeddings -> encoder with TUPE's positional bias in every layer -> optional pooler.

    ``output_attentions`` returns softmax(content + positional + padding), the probabilities the layers use.
    Without ``position_ids`` positions are counted over the real tokens (left padding: the first real token is
    position 0, the [CLS] slot), as the core counts them.
    """


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
