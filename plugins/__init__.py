"""graftkit's fairseq plugins: pass this folder as ``--user-dir`` (or import ``plugins``).

Importing the package registers graftkit's fairseq models, architectures, tasks and criterions; the
registered names are distinct from fairseq's own. ``fairseq_compat`` is imported first: it fixes the host
(checkpoint loading under torch >= 2.6, dropped batches in the ve-fairseq fork) before anything uses it.
"""

from plugins import fairseq_compat  # noqa: F401
from plugins import bert_fused  # noqa: E402,F401  (BERT-fused NMT)
from plugins import preln  # noqa: E402,F401  (Pre-LN architectures)
from plugins import tupe  # noqa: E402,F401  (TUPE-A / TUPE-R masked-LM models)
from plugins import tnf  # noqa: E402,F401  (TNF: the masked_lm_tnf task)
from plugins import mc_bert  # noqa: E402,F401  (MC-BERT pre-training)
