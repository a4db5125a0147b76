"""Configuration of the Pre-LN BERT (Xiong et al., On Layer Normalization in the Transformer Architecture)."""

from huggingface_hub.dataclasses import strict

from ..core.config import EncoderConfig


@strict
class PreLNBertConfig(EncoderConfig):
    r"""A BERT whose layers normalise before each sub-layer, with a final LayerNorm after the last layer.

    The fields of the core's :class:`~hf_models.core.config.EncoderConfig` (those of
    :class:`transformers.BertConfig`, ``embedding_layer_norm``, ``type_vocab_size`` 0 for none, the same
    validation), with:

    layer_norm_position (`str`, defaults to `"pre"`):
        `"pre"`: x' = x + Attn(LN(x)), y = x' + FFN(LN(x')), final LN after the last layer (the paper's
        Pre-LN); `"post"`: x' = LN(x + Attn(x)), y = LN(x' + FFN(x')) (BERT's Post-LN), for comparisons.
    tie_word_embeddings (`bool`, defaults to `True`): the masked-LM decoder is the word embedding matrix.

    ```python
    >>> from hf_models import PreLNBertConfig, PreLNBertForMaskedLM
    >>> model = PreLNBertForMaskedLM(PreLNBertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
    ...                                              num_attention_heads=4, intermediate_size=256))
    ```"""

    model_type = "preln_bert"

    layer_norm_position: str = "pre"
    tie_word_embeddings: bool = True


__all__ = ["PreLNBertConfig"]
