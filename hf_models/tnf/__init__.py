"""TNF: Taking Notes on the Fly (Wu et al., ICLR 2021) for HF masked-LM pre-training.

``notes``: the note dictionary math (shared with the fairseq task ``plugins/tnf.py``); ``vocabulary``: the
rare-word vocabulary; ``rare_spans``: finding its words in token ids (any collator); :class:`TnfForMaskedLM`
(model_type ``"tnf"``) and :class:`DataCollatorForTnf`.
"""

from .configuration_tnf import TnfConfig
from .data_collator_tnf import DataCollatorForTnf, pad_spans
from .modeling_tnf import (
    TnfForMaskedLM,
    TnfForSequenceClassification,
    TnfForTokenClassification,
    TnfModel,
    TnfPreTrainedModel,
)
from .notes import NoteDictionary, note_inputs_embeds, window_means
from .rare_spans import RareWordFinder
from .vocabulary import RareVocabulary, tokenizer_fingerprint, tokenizer_words, word_boundary_marks

__all__ = [
    "DataCollatorForTnf", "NoteDictionary", "RareVocabulary", "RareWordFinder", "TnfConfig", "TnfForMaskedLM",
    "TnfForSequenceClassification", "TnfForTokenClassification", "TnfModel", "TnfPreTrainedModel",
    "note_inputs_embeds", "pad_spans", "tokenizer_fingerprint", "tokenizer_words", "window_means",
    "word_boundary_marks",
]
