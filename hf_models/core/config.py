"""The config of the shared encoder core: :class:`EncoderConfig`, the base of every model config on the core,
and the validation of the fields the core reads (the functions accept any object with these attributes)."""

from __future__ import annotations

import copy
import json
import math
import sys
import types
import typing
import warnings
from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig

from .activations import ACTIVATIONS

LAYER_NORM_POSITIONS = ("post", "pre")
#: where positions enter: BERT's learned vectors added to the input, or TUPE's untied attention term (TUPE-A),
#: plus its relative buckets (TUPE-R); BertConfig's field name, TUPE's values
POSITION_EMBEDDING_TYPES = ("absolute", "tupe_absolute", "tupe_relative")


def validate_encoder_config(config: Any) -> None:
    """Raise a ValueError naming the field when an encoder setting is unusable.

    Read fields: hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, hidden_act,
    hidden_dropout_prob, attention_probs_dropout_prob, layer_norm_eps, layer_norm_position, and
    initializer_range when the config has one (the models' weight init reads it).
    """
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(f"hidden_size ({config.hidden_size}) must be divisible by num_attention_heads "
                         f"({config.num_attention_heads})")
    if config.layer_norm_position not in LAYER_NORM_POSITIONS:
        raise ValueError(f"layer_norm_position must be one of {LAYER_NORM_POSITIONS}, "
                         f"got {config.layer_norm_position!r}")
    if config.hidden_act not in ACTIVATIONS:
        raise ValueError(f"hidden_act must be one of {tuple(ACTIVATIONS)}, got {config.hidden_act!r}")
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        value = getattr(config, name)
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    if not 0 < config.layer_norm_eps < math.inf:  # also false for NaN
        raise ValueError(f"layer_norm_eps must be positive and finite, got {config.layer_norm_eps!r}")
    validate_position_encoding(config)
    initializer_range = getattr(config, "initializer_range", 0.0)
    if not 0 <= initializer_range < math.inf:
        raise ValueError(f"initializer_range (the init's standard deviation) must be >= 0 and finite, "
                         f"got {initializer_range!r}")


def uses_tupe(config: Any) -> bool:
    """True when the config's positions enter as TUPE's attention term (no position vector in the input)."""
    return getattr(config, "position_embedding_type", "absolute") != "absolute"


def validate_position_encoding(config: Any) -> None:
    """Raise a ValueError naming the field when ``position_embedding_type`` or, for TUPE, its fields are
    unusable (TUPE's own checks, :func:`hf_models.tupe.positional.check_bucket_settings`). A config without the
    field (an object of the core's fields only) has BERT's absolute positions."""
    position_embedding_type = getattr(config, "position_embedding_type", "absolute")
    if position_embedding_type not in POSITION_EMBEDDING_TYPES:
        raise ValueError(f"position_embedding_type must be one of {POSITION_EMBEDDING_TYPES}, "
                         f"got {position_embedding_type!r}")
    if not uses_tupe(config):
        # TUPE's settings on BERT's input positions would be silently unused: refuse them
        for name, default in (("untie_cls", True), ("relative_attention_num_buckets", 32),
                              ("relative_attention_max_distance", 128)):
            if getattr(config, name, default) != default:
                raise ValueError(f"{name}={getattr(config, name)!r} is a setting of TUPE's positional term: it "
                                 f"needs position_embedding_type 'tupe_absolute' or 'tupe_relative', got "
                                 f"{position_embedding_type!r}")
        return
    if not isinstance(config.untie_cls, bool):
        raise ValueError(f"untie_cls must be True or False, got {config.untie_cls!r}")
    if position_embedding_type == "tupe_relative":
        # imported here: the tupe package imports this module (its config extends EncoderConfig)
        from ..tupe.positional import check_bucket_settings

        check_bucket_settings(config.relative_attention_num_buckets, config.relative_attention_max_distance)


def padding_index(config: Any) -> int | None:
    """The word-embedding row of the padding token: ``pad_token_id``, or None when unset or negative."""
    pad_token_id = getattr(config, "pad_token_id", None)
    return pad_token_id if pad_token_id is not None and pad_token_id >= 0 else None


def accept_negative_pad_token_id(config: Any) -> None:
    """Set a negative ``pad_token_id`` (``-1`` in some Hub configs) to None, with a warning.

    transformers loads such configs with a warning; here they mean "no padding token", so the word
    embeddings get no padding row (torch would read ``padding_idx=-1`` as the last row).
    """
    if config.pad_token_id is not None and config.pad_token_id < 0:
        warnings.warn(f"pad_token_id={config.pad_token_id} is outside the vocabulary: treated as no padding "
                      "token (pad_token_id=None)", stacklevel=3)
        config.pad_token_id = None


def validate_embedding_config(config: Any, token_id_fields: tuple[str, ...] = ("pad_token_id",)) -> None:
    """Raise a ValueError naming the field when an :class:`~hf_models.core.embeddings.Embeddings` setting is
    unusable: vocab_size and max_position_embeddings >= 1, type_vocab_size >= 0, and each of
    ``token_id_fields`` None or inside the vocabulary. A negative ``pad_token_id`` (Hub configs) is first
    accepted as no padding token (:func:`accept_negative_pad_token_id`)."""
    accept_negative_pad_token_id(config)
    for name in ("vocab_size", "max_position_embeddings"):
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if config.type_vocab_size < 0:
        raise ValueError(f"type_vocab_size must be >= 0, got {config.type_vocab_size!r}")
    for name in token_id_fields:
        value = getattr(config, name)
        if value is not None and not 0 <= value < config.vocab_size:
            raise ValueError(f"{name} must be None or in [0, vocab_size={config.vocab_size}), got {value!r}")


_TRUE, _FALSE = ("true", "1", "y", "yes"), ("false", "0", "n", "no")  # as transformers' override parser


def declared_type(config_class: type, name: str) -> Any:
    """The type annotation of field ``name`` (resolved where written as text), or None for no declared field."""
    for klass in config_class.__mro__:
        annotation = vars(klass).get("__annotations__", {}).get(name)
        if isinstance(annotation, str):  # postponed annotations: resolved as typing.get_type_hints does
            try:
                return eval(annotation, vars(sys.modules[klass.__module__]))  # noqa: S307
            except NameError:
                return None
        if annotation is not None:
            return annotation
    return None


def split_overrides(update_str: str) -> list[str]:
    """``key=value,...`` split at the commas outside brackets and quotes, so a JSON value keeps its own."""
    pairs, depth, quoted, start = [], 0, False, 0
    for i, char in enumerate(update_str):
        if quoted:
            quoted = char != '"' or update_str[i - 1] == "\\"
        elif char == '"':
            quoted = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            pairs.append(update_str[start:i])
            start = i + 1
    return [*pairs, update_str[start:]]


def parse_field_value(config: Any, name: str, text: str) -> Any:
    """The value of config field ``name`` written as ``text`` (``--config_overrides``), read by the field's
    declared type: ``int | None`` takes "4" or "None"; a dict or list field takes JSON (``id2label={"0": "neg",
    "1": "pos"}``, ``rare_word_token_ids=[[7, 8], [9]]``). transformers' own parser reads the type from the
    current value, so it refuses every field whose value is None (e.g. ``mask_token_id``, ``classifier_dropout``)
    and every dict. ValueError naming the field when ``text`` is none of the declared types."""
    declared = declared_type(type(config), name)
    union = typing.get_origin(declared) in (typing.Union, types.UnionType)
    options = typing.get_args(declared) if union else (declared,)
    if type(None) in options and text.strip().lower() == "none":
        return None
    for option in options:
        container = typing.get_origin(option)
        if container in (dict, list):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(value, container):
                key_type = typing.get_args(option)[0] if container is dict else None
                if key_type is int and all(key.lstrip("-").isdigit() for key in value):  # JSON keys are text
                    value = {int(key): item for key, item in value.items()}
                return value
        elif container is typing.Literal:
            if text in typing.get_args(option):
                return text
        elif option is bool:
            if text.strip().lower() in _TRUE + _FALSE:
                return text.strip().lower() in _TRUE
        elif option in (int, float):
            try:
                return option(text)
            except ValueError:
                continue
        elif option is str:
            return text
    raise ValueError(f"{name} takes {declared}, got {text!r}")


@strict
class EncoderConfig(PreTrainedConfig):
    r"""The fields of the shared encoder core, with BERT's defaults: a model's config extends it with its
    ``model_type``, its own fields and any default of its own (Pre-LN BERT: ``layer_norm_position="pre"``).

    Fields as :class:`transformers.BertConfig`, plus:

    layer_norm_position (`str`, defaults to `"post"`):
        `"post"`: x' = LN(x + Attn(x)), y = LN(x' + FFN(x')) (BERT's Post-LN); `"pre"`: x' = x + Attn(LN(x)),
        y = x' + FFN(LN(x')) and a final LN after the last layer (Xiong et al.'s Pre-LN).
    embedding_layer_norm (`bool`, defaults to `True`):
        LayerNorm on the summed input embeddings (BERT and HF RobertaPreLayerNorm have it; fairseq's
        `roberta_prenorm` does not).
    type_vocab_size (`int`, defaults to 2): 0 for no token-type embeddings.
    position_embedding_type (`str`, defaults to `"absolute"`):
        where positions enter. `"absolute"`: BERT's learned vectors added to the input; `"tupe_absolute"`:
        TUPE-A (Ke et al., ICLR 2021), no vector in the input, an untied positional attention term shared by
        every layer and each attention term scaled by 1/sqrt(2d); `"tupe_relative"`: TUPE-R, TUPE-A plus
        T5-style relative buckets. The term is :class:`hf_models.tupe.TupePositionalBias` (see docs/compose.md
        for what combines).
    untie_cls (`bool`, defaults to `True`):
        TUPE's [CLS] untying (the [CLS] row and column of the positional term are learned constants per head);
        read with a `"tupe_*"` position_embedding_type only.
    relative_attention_num_buckets (`int`, defaults to 32), relative_attention_max_distance (`int`, 128):
        T5's bidirectional bucketing of `"tupe_relative"` (even, >= 4; max distance > buckets // 4).

    Validated on construction (:func:`validate_encoder_config`, :func:`validate_embedding_config` over
    ``token_id_fields``): a ValueError names the field when a value is unusable (e.g. hidden_size not divisible
    by num_attention_heads, an unknown layer_norm_position, an infinite layer_norm_eps). A negative
    pad_token_id (``-1``, found in Hub configs) loads with a warning and means no padding token (None).
    """

    #: token-id fields that must be None or inside the vocabulary (a model adds its special tokens)
    token_id_fields: ClassVar[tuple[str, ...]] = ("pad_token_id",)

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
    pad_token_id: int | None = 0
    classifier_dropout: float | int | None = None
    position_embedding_type: str = "absolute"
    untie_cls: bool = True
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128

    def __post_init__(self, **kwargs):
        validate_encoder_config(self)
        validate_embedding_config(self, self.token_id_fields)
        super().__post_init__(**kwargs)

    def update_from_string(self, update_str: str) -> None:
        """``key=value,...`` as ``run_mlm.py --config_overrides`` passes it: every field, each value read by the
        field's declared type (:func:`parse_field_value`; a field without a declared type by transformers'
        parser), then the whole config built again as on construction, so every check runs (ValueError naming
        the field); on an error the config is left unchanged."""
        updated = copy.deepcopy(self)
        named = set()
        for pair in split_overrides(update_str):
            name, separator, text = pair.partition("=")
            name = name.strip()
            if not separator:
                raise ValueError(f"config override {pair!r} is not key=value")
            if declared_type(type(self), name) in (None, Any):
                PreTrainedConfig.update_from_string(updated, f"{name}={text}")  # transformers' parser
            else:
                setattr(updated, name, parse_field_value(self, name, text))
            named.add(name)
        updated.reconcile_overrides(named)
        # the named fields given again: to_dict may leave out a field at its default (MC-BERT's note fields)
        checked = type(self).from_dict({**updated.to_dict(), **{name: getattr(updated, name) for name in named}})
        self.__dict__.update(checked.__dict__)

    def reconcile_overrides(self, named: set[str]) -> None:
        """After ``update_from_string`` set the fields ``named``, before the checks: a config whose fields
        depend on one another makes them agree here (nothing to do for the core's fields)."""

    @classmethod
    def register_for_auto_class(cls, auto_class: str | type = "AutoConfig") -> None:
        """HF's registration, plus this ``model_type`` in ``AutoConfig`` when nothing holds it yet.

        transformers calls this when it loads the class as remote code (``trust_remote_code=True``). A later
        Auto call on the same folder without that flag (``AutoTokenizer.from_pretrained(folder)``, which reads
        the model config first) then finds the type as local code: no interactive prompt, and no fallback to
        a bare config that warns "model of type `tupe` to instantiate a model of type ``". Where graftkit is
        imported its own classes hold the types already and are kept.
        """
        super().register_for_auto_class(auto_class)
        from transformers import AutoConfig
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        if cls.model_type and cls.model_type not in CONFIG_MAPPING:
            AutoConfig.register(cls.model_type, cls)
