"""TUPE (``model_type="tupe"``): Ke, He, Liu, "Rethinking Positional Encoding in Language Pre-training",
ICLR 2021. TUPE-A (``position_mode="absolute"``) and TUPE-R (``"relative"``)."""

from .configuration_tupe import TupeConfig
from .modeling_tupe import (
    TupeForMaskedLM,
    TupeForSequenceClassification,
    TupeForTokenClassification,
    TupeModel,
    TupePreTrainedModel,
)
from .positional import TupePositionalBias, relative_position_bucket

__all__ = [
    "TupeConfig",
    "TupeForMaskedLM",
    "TupeForSequenceClassification",
    "TupeForTokenClassification",
    "TupeModel",
    "TupePositionalBias",
    "TupePreTrainedModel",
    "relative_position_bucket",
]
