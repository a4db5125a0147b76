"""TNF: Taking Notes on the Fly (Wu et al., ICLR 2021) for HF masked-LM pre-training.

``notes``: the note dictionary math (shared with the fairseq task ``plugins/tnf.py``); ``vocabulary``: the
rare-word vocabulary; :class:`TnfForMaskedLM` (model_type ``"tnf"``) and :class:`DataCollatorForTnf`.
"""

from .configuration_tnf import TnfConfig
from .data_collator_tnf import DataCollatorForTnf, pad_spans
from .modeling_tnf import TnfForMaskedLM, TnfPreTrainedModel
from .notes import NoteDictionary, note_inputs_embeds, window_means
from .vocabulary import RareVocabulary, tokenizer_fingerprint, tokenizer_words

__all__ = [
    "DataCollatorForTnf", "NoteDictionary", "RareVocabulary", "TnfConfig", "TnfForMaskedLM",
    "TnfPreTrainedModel", "note_inputs_embeds", "pad_spans", "tokenizer_fingerprint", "tokenizer_words",
    "window_means",
]
