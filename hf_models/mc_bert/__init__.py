"""MC-BERT (``model_type="mc_bert"``): Xu et al., MC-BERT: Efficient Language Pre-Training via a Meta
Controller (2020). The pre-training math, with ELECTRA's replaced-token detection, is :mod:`.objectives`."""

from .configuration_mc_bert import McBertConfig
from .modeling_mc_bert import (
    McBertForPreTraining,
    McBertForPreTrainingOutput,
    McBertForSequenceClassification,
    McBertForTokenClassification,
    McBertModel,
    McBertPreTrainedModel,
    pretraining_metrics,
)

__all__ = [
    "McBertConfig",
    "McBertForPreTraining",
    "McBertForPreTrainingOutput",
    "McBertForSequenceClassification",
    "McBertForTokenClassification",
    "McBertModel",
    "McBertPreTrainedModel",
    "pretraining_metrics",
]
