"""Configuration of TUPE (Ke, He, Liu, "Rethinking Positional Encoding in Language Pre-training", ICLR 2021)."""

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig

from ..core.config import validate_embedding_config, validate_encoder_config
from .positional import POSITION_MODES, check_bucket_settings


@strict
class TupeConfig(PreTrainedConfig):
    r"""A BERT whose positions enter only as an untied attention term, shared by all layers.

    Fields as :class:`transformers.BertConfig` (no position vector is added to the input), plus:

    position_mode (`str`, defaults to `"absolute"`):
        `"absolute"`: TUPE-A, the untied absolute term (LN(p_i) U^Q)(LN(p_j) U^K)ᵀ / sqrt(2d);
        `"relative"`: TUPE-R, that term plus T5-style relative buckets b[bucket(j - i)] per head.
    untie_cls (`bool`, defaults to `True`):
        [CLS] untying: the [CLS] row and column of the positional term are learned constants per head
        (θ1, θ2); `False` keeps the plain term (the paper's ablation).
    relative_attention_num_buckets (`int`, defaults to 32), relative_attention_max_distance (`int`, 128):
        T5's bidirectional bucketing for `"relative"` (even, >= 4; max distance > buckets // 4).
    max_position_embeddings (`int`, defaults to 512): the longest input; the position table has one more row.
    layer_norm_position (`str`, defaults to `"post"`): `"post"` as the paper, `"pre"` selectable.
    embedding_layer_norm (`bool`, defaults to `True`): LayerNorm on the token (+ type) embedding.
    type_vocab_size (`int`, defaults to 2): 0 for no token-type embeddings.

    Raises ValueError naming the field when a value is unusable.

    ```python
    >>> from hf_models import TupeConfig, TupeForMaskedLM
    >>> model = TupeForMaskedLM(TupeConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
    ...                                    num_attention_heads=4, intermediate_size=256, position_mode="relative"))
    ```"""

    model_type = "tupe"

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    layer_norm_position: str = "post"
    embedding_layer_norm: bool = True
    position_mode: str = "absolute"
    untie_cls: bool = True
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    pad_token_id: int | None = 0
    classifier_dropout: float | int | None = None
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        validate_encoder_config(self)
        validate_embedding_config(self)
        if self.position_mode not in POSITION_MODES:
            raise ValueError(f"position_mode must be one of {POSITION_MODES}, got {self.position_mode!r}")
        if self.position_mode == "relative":
            check_bucket_settings(self.relative_attention_num_buckets, self.relative_attention_max_distance)
        super().__post_init__(**kwargs)


__all__ = ["TupeConfig"]
