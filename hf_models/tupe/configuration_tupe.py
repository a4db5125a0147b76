"""Configuration of TUPE (Ke, He, Liu, "Rethinking Positional Encoding in Language Pre-training", ICLR 2021)."""

from huggingface_hub.dataclasses import strict

from ..core.config import EncoderConfig
from .positional import POSITION_MODES, check_bucket_settings


@strict
class TupeConfig(EncoderConfig):
    r"""A BERT whose positions enter only as an untied attention term, shared by all layers.

    The fields of the core's :class:`~hf_models.core.config.EncoderConfig` (those of
    :class:`transformers.BertConfig`, no position vector is added to the input; ``layer_norm_position``
    `"post"` as the paper, `"pre"` selectable; the same validation), plus:

    position_mode (`str`, defaults to `"absolute"`):
        `"absolute"`: TUPE-A, the untied absolute term (LN(p_i) U^Q)(LN(p_j) U^K)ᵀ / sqrt(2d);
        `"relative"`: TUPE-R, that term plus T5-style relative buckets b[bucket(j - i)] per head.
    untie_cls (`bool`, defaults to `True`):
        [CLS] untying: the [CLS] row and column of the positional term are learned constants per head
        (θ1, θ2); `False` keeps the plain term (the paper's ablation).
    relative_attention_num_buckets (`int`, defaults to 32), relative_attention_max_distance (`int`, 128):
        T5's bidirectional bucketing for `"relative"` (even, >= 4; max distance > buckets // 4).
    max_position_embeddings (`int`, defaults to 512): the longest input; the position table has one more row.
    tie_word_embeddings (`bool`, defaults to `True`): the masked-LM decoder is the word embedding matrix.

    Raises ValueError naming the field when a value is unusable.

    ```python
    >>> from hf_models import TupeConfig, TupeForMaskedLM
    >>> model = TupeForMaskedLM(TupeConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
    ...                                    num_attention_heads=4, intermediate_size=256, position_mode="relative"))
    ```"""

    model_type = "tupe"

    position_mode: str = "absolute"
    untie_cls: bool = True
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.position_mode not in POSITION_MODES:
            raise ValueError(f"position_mode must be one of {POSITION_MODES}, got {self.position_mode!r}")
        if self.position_mode == "relative":
            check_bucket_settings(self.relative_attention_num_buckets, self.relative_attention_max_distance)


__all__ = ["TupeConfig"]
