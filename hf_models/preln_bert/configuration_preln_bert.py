"""Configuration of the Pre-LN BERT (Xiong et al., On Layer Normalization in the Transformer Architecture)."""

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig

from ..core.config import validate_embedding_config, validate_encoder_config


@strict
class PreLNBertConfig(PreTrainedConfig):
    r"""A BERT whose layers normalise before each sub-layer, with a final LayerNorm after the last layer.

    Fields as :class:`transformers.BertConfig`, plus:

    layer_norm_position (`str`, defaults to `"pre"`):
        `"pre"`: x' = x + Attn(LN(x)), y = x' + FFN(LN(x')), final LN after the last layer (the paper's
        Pre-LN); `"post"`: x' = LN(x + Attn(x)), y = LN(x' + FFN(x')) (BERT's Post-LN), for comparisons.
    embedding_layer_norm (`bool`, defaults to `True`):
        LayerNorm on the summed input embeddings (BERT and HF RobertaPreLayerNorm have it; fairseq's
        `roberta_prenorm` does not).
    type_vocab_size (`int`, defaults to 2): 0 for no token-type embeddings.

    Raises ValueError naming the field when a value is unusable (e.g. hidden_size not divisible by
    num_attention_heads, an unknown layer_norm_position, an infinite layer_norm_eps). A negative
    pad_token_id (``-1``, found in Hub configs) loads with a warning and means no padding token (None).

    ```python
    >>> from hf_models import PreLNBertConfig, PreLNBertForMaskedLM
    >>> model = PreLNBertForMaskedLM(PreLNBertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
    ...                                              num_attention_heads=4, intermediate_size=256))
    ```"""

    model_type = "preln_bert"

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
    layer_norm_position: str = "pre"
    embedding_layer_norm: bool = True
    pad_token_id: int | None = 0
    classifier_dropout: float | int | None = None
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        validate_encoder_config(self)
        validate_embedding_config(self)
        super().__post_init__(**kwargs)


__all__ = ["PreLNBertConfig"]
