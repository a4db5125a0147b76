"""HuggingFace transformers models of graftkit; importing it registers them with the Auto* classes.

``preln_bert``: Pre-LN BERT (Xiong et al., ICML 2020). ``mc_bert``: MC-BERT (Xu et al., 2020).
The shared encoder core is :mod:`hf_models.core`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .mc_bert import (
    McBertConfig,
    McBertForPreTraining,
    McBertForSequenceClassification,
    McBertForTokenClassification,
    McBertModel,
    McBertPreTrainedModel,
)
from .preln_bert import (
    PreLNBertConfig,
    PreLNBertForMaskedLM,
    PreLNBertForSequenceClassification,
    PreLNBertForTokenClassification,
    PreLNBertModel,
    PreLNBertPreTrainedModel,
)
from .tnf import (
    TnfConfig,
    TnfForMaskedLM,
    TnfForSequenceClassification,
    TnfForTokenClassification,
    TnfModel,
)
from .tupe import (
    TupeConfig,
    TupeForMaskedLM,
    TupeForSequenceClassification,
    TupeForTokenClassification,
    TupeModel,
    TupePreTrainedModel,
)

AutoConfig.register(PreLNBertConfig.model_type, PreLNBertConfig, exist_ok=True)
AutoModel.register(PreLNBertConfig, PreLNBertModel, exist_ok=True)
AutoModelForMaskedLM.register(PreLNBertConfig, PreLNBertForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(PreLNBertConfig, PreLNBertForSequenceClassification,
                                            exist_ok=True)
AutoModelForTokenClassification.register(PreLNBertConfig, PreLNBertForTokenClassification, exist_ok=True)
AutoConfig.register(TupeConfig.model_type, TupeConfig, exist_ok=True)
AutoModel.register(TupeConfig, TupeModel, exist_ok=True)
AutoModelForMaskedLM.register(TupeConfig, TupeForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(TupeConfig, TupeForSequenceClassification, exist_ok=True)
AutoModelForTokenClassification.register(TupeConfig, TupeForTokenClassification, exist_ok=True)
AutoConfig.register(TnfConfig.model_type, TnfConfig, exist_ok=True)
AutoModel.register(TnfConfig, TnfModel, exist_ok=True)
AutoModelForMaskedLM.register(TnfConfig, TnfForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(TnfConfig, TnfForSequenceClassification, exist_ok=True)
AutoModelForTokenClassification.register(TnfConfig, TnfForTokenClassification, exist_ok=True)
AutoConfig.register(McBertConfig.model_type, McBertConfig, exist_ok=True)
AutoModel.register(McBertConfig, McBertModel, exist_ok=True)
AutoModelForPreTraining.register(McBertConfig, McBertForPreTraining, exist_ok=True)
AutoModelForMaskedLM.register(McBertConfig, McBertForPreTraining, exist_ok=True)  # run_mlm.py's class
AutoModelForSequenceClassification.register(McBertConfig, McBertForSequenceClassification, exist_ok=True)
AutoModelForTokenClassification.register(McBertConfig, McBertForTokenClassification, exist_ok=True)

__all__ = [
    "McBertConfig",
    "McBertForPreTraining",
    "McBertForSequenceClassification",
    "McBertForTokenClassification",
    "McBertModel",
    "McBertPreTrainedModel",
    "PreLNBertConfig",
    "PreLNBertForMaskedLM",
    "PreLNBertForSequenceClassification",
    "PreLNBertForTokenClassification",
    "PreLNBertModel",
    "PreLNBertPreTrainedModel",
    "TupeConfig",
    "TupeForMaskedLM",
    "TupeForSequenceClassification",
    "TupeForTokenClassification",
    "TupeModel",
    "TupePreTrainedModel",
    "TnfConfig",
    "TnfForMaskedLM",
    "TnfForSequenceClassification",
    "TnfForTokenClassification",
    "TnfModel",
]
