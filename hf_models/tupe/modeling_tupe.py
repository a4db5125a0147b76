"""TUPE for HF transformers: base model, masked-LM, sequence and token classification.

The encoder, heads, losses, weight tying and remote-code saving are graftkit's shared core
(``hf_models.core``), and so are the positions and their checks: TUPE hands the core's :class:`EncoderModel`
its positional term (:mod:`.positional`) as the ``positional_bias``, so the input gets no position vector, the
term is computed once per forward and added to every layer's attention with the padding mask, and the content
logits are scaled by 1/sqrt(2d).
"""

from __future__ import annotations

import os

from ..core.modeling import (
    EncoderForMaskedLM,
    EncoderForSequenceClassification,
    EncoderForTokenClassification,
    EncoderModel,
    EncoderPreTrainedModel,
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


class TupeModel(TupePreTrainedModel, EncoderModel):
    """Token (+ type) embeddings -> encoder with TUPE's positional bias in every layer -> optional pooler.

    ``output_attentions`` returns softmax(content + positional + padding), the probabilities the layers use.
    Without ``position_ids`` positions are counted over the real tokens (left padding: the first real token is
    position 0, the [CLS] slot), as the core counts them.
    """

    def __init__(self, config: TupeConfig, add_pooling_layer: bool = True) -> None:
        positional_bias = TupePositionalBias(
            config.hidden_size, config.num_attention_heads, config.max_position_embeddings,
            position_mode=config.position_mode, untie_cls=config.untie_cls,
            num_buckets=config.relative_attention_num_buckets,
            max_distance=config.relative_attention_max_distance, layer_norm_eps=config.layer_norm_eps)
        # each of the two attention terms is scaled by 1/sqrt(2d), the positional one inside its module
        super().__init__(config, add_pooling_layer, positional_bias=positional_bias,
                         attention_scale=positional_bias.scale)


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
