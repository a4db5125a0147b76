"""Configuration of TUPE (Ke, He, Liu, "Rethinking Positional Encoding in Language Pre-training", ICLR 2021)."""

from huggingface_hub.dataclasses import strict

from ..core.config import EncoderConfig

#: ``position_mode`` (TupeConfig's field before positions became a core setting) -> ``position_embedding_type``
POSITION_MODE_TYPES = {"absolute": "tupe_absolute", "relative": "tupe_relative"}


@strict
class TupeConfig(EncoderConfig):
    r"""A BERT whose positions enter only as an untied attention term, shared by all layers.

    The fields of the core's :class:`~hf_models.core.config.EncoderConfig` (those of
    :class:`transformers.BertConfig`, ``layer_norm_position`` `"post"` as the paper, `"pre"` selectable, TUPE's
    ``untie_cls`` and relative buckets, the same validation), with:

    position_embedding_type (`str`, defaults to `"tupe_absolute"`):
        `"tupe_absolute"`: TUPE-A, the untied absolute term (LN(p_i) U^Q)(LN(p_j) U^K)ᵀ / sqrt(2d), no position
        vector added to the input; `"tupe_relative"`: TUPE-R, that term plus T5-style relative buckets
        b[bucket(j - i)] per head. (`"absolute"`, BERT's input vectors, is not a TUPE: use another model type.)
    position_mode (`str`, optional):
        the same choice under its earlier name, `"absolute"` (TUPE-A) or `"relative"` (TUPE-R), so folders
        saved before ``position_embedding_type`` load unchanged; kept equal to it (both are saved).
    untie_cls (`bool`, defaults to `True`):
        [CLS] untying: the [CLS] row and column of the positional term are learned constants per head
        (θ1, θ2); `False` keeps the plain term (the paper's ablation).
    relative_attention_num_buckets (`int`, defaults to 32), relative_attention_max_distance (`int`, 128):
        T5's bidirectional bucketing for `"tupe_relative"` (even, >= 4; max distance > buckets // 4).
    max_position_embeddings (`int`, defaults to 512): the longest input; the position table has one more row.
    tie_word_embeddings (`bool`, defaults to `True`): the masked-LM decoder is the word embedding matrix.

    Raises ValueError naming the field when a value is unusable.

    ```python
    >>> from hf_models import TupeConfig, TupeForMaskedLM
    >>> model = TupeForMaskedLM(TupeConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2,
    ...                                    num_attention_heads=4, intermediate_size=256,
    ...                                    position_embedding_type="tupe_relative"))
    ```"""

    model_type = "tupe"

    position_embedding_type: str | None = None
    position_mode: str | None = None
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        if self.position_mode is not None and self.position_mode not in POSITION_MODE_TYPES:
            raise ValueError(f"position_mode must be one of {tuple(POSITION_MODE_TYPES)}, got {self.position_mode!r}")
        from_mode = POSITION_MODE_TYPES.get(self.position_mode)
        if self.position_embedding_type is None:
            self.position_embedding_type = from_mode or "tupe_absolute"
        if self.position_embedding_type == "absolute":
            raise ValueError("position_embedding_type='absolute' (BERT's position vectors in the input) is not "
                             "TUPE: a tupe config takes 'tupe_absolute' or 'tupe_relative' (a preln_bert config "
                             "has BERT's positions)")
        if from_mode is not None and from_mode != self.position_embedding_type:
            raise ValueError(f"position_mode={self.position_mode!r} (= {from_mode!r}) contradicts "
                             f"position_embedding_type={self.position_embedding_type!r}: give one of them")
        super().__post_init__(**kwargs)  # validates position_embedding_type and TUPE's fields
        self.position_mode = {v: k for k, v in POSITION_MODE_TYPES.items()}[self.position_embedding_type]

    def reconcile_overrides(self, named: set[str]) -> None:
        """``--config_overrides`` keep the position setting one setting: where they name one of
        ``position_embedding_type`` and ``position_mode``, the other follows it (derived again on the check)."""
        for name, other in (("position_embedding_type", "position_mode"), ("position_mode", "position_embedding_type")):
            if name in named and other not in named:
                setattr(self, other, None)


__all__ = ["TupeConfig"]
