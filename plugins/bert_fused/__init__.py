"""BERT-fused NMT (Zhu et al., ICLR 2020) as a fairseq plugin.

Registers the task ``translation_bert_fused``, the model ``bert_fused`` and the archs ``bert_fused``,
``bert_fused_iwslt_de_en`` and ``bert_fused_wmt_en_de``. Use with ``--user-dir plugins``.
"""

from plugins.bert_fused.model import BertFusedModel, warm_start_from_nmt
from plugins.bert_fused.modules import BertFusedAttention, drop_net_weights
from plugins.bert_fused.task import BertFusedTranslationTask

__all__ = ["BertFusedAttention", "BertFusedModel", "BertFusedTranslationTask", "drop_net_weights",
           "warm_start_from_nmt"]
