"""Pre-LN BERT (``model_type="preln_bert"``): Xiong et al., ICML 2020."""

from .configuration_preln_bert import PreLNBertConfig
from .modeling_preln_bert import (
    PreLNBertForMaskedLM,
    PreLNBertForSequenceClassification,
    PreLNBertForTokenClassification,
    PreLNBertModel,
    PreLNBertPreTrainedModel,
)

__all__ = [
    "PreLNBertConfig",
    "PreLNBertForMaskedLM",
    "PreLNBertForSequenceClassification",
    "PreLNBertForTokenClassification",
    "PreLNBertModel",
    "PreLNBertPreTrainedModel",
]
