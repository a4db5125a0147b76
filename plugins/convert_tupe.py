"""Convert a fairseq TUPE checkpoint into graftkit's HF ``TupeForMaskedLM`` folder, with its tokenizer.

Two layouts are read:

- graftkit's own fairseq arch ``tupe`` (``--arch tupe_base``, ``tupe_r_base``, the tiny sizes): the encoder is
  ``hf_models.TupeModel`` already, so the conversion renames ``encoder.sentence_encoder.tupe.*`` to ``tupe.*``.
- guolinke/TUPE (the paper's fairseq fork, model ``bert``, archs ``bert_base`` / ``bert_large``, TUPE-R with
  ``--rel-pos``): every parameter is mapped by name and shape (:data:`REFERENCE_NAME_MAP`; the table on
  docs/tupe.md), the first one left unmapped or missing is refused by name.

The tokenizer is the checkpoint's fairseq dictionary (``dict.txt`` + ``<mask>``, as fairseq's masked_lm task):
whitespace-split words, fairseq's ids; with it the folder loads in ``pipeline("fill-mask")``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from graftkit.errors import GraftkitError
from plugins.convert_fairseq import (
    LAYER_MAP,
    QKV_PROJECTIONS,
    ParameterMap,
    check_output_folder,
    checkpoint_tokenizer,
    hidden_act,
    layer_indices,
    load_converted,
    load_fairseq_checkpoint,
    save_model_folder,
)

GRAFTKIT_PREFIX = "encoder.sentence_encoder.tupe."
REFERENCE_PREFIX = "decoder.sentence_encoder."
# guolinke/TUPE TransformerSentenceEncoder fixes these (its bert model has no flags for them)
REFERENCE_MAX_RELATIVE_DISTANCE = 128
# reference module (under decoder.sentence_encoder.) -> TupeForMaskedLM module; layers.N. and the
# attention's stacked in_proj are handled in reference_state_dict
REFERENCE_NAME_MAP = {
    "embed_tokens": "tupe.embeddings.word_embeddings",
    "emb_layer_norm": "tupe.embeddings.layer_norm",
    "pos": "tupe.positional_bias.embeddings",
    "pos_ln": "tupe.positional_bias.layer_norm",
    "pos_q_linear": "tupe.positional_bias.query",
    "pos_k_linear": "tupe.positional_bias.key",
    "relative_attention_bias": "tupe.positional_bias.relative_bias",
    "emb_out_layer_norm": "tupe.encoder.final_layer_norm",
}
REFERENCE_LAYER_MAP = {name: core for name, core in LAYER_MAP.items() if name not in QKV_PROJECTIONS}
REFERENCE_HEAD_MAP = {"decoder.lm_head.dense": "lm_head.dense", "decoder.lm_head.layer_norm": "lm_head.layer_norm"}
_BERT_ARCH_SIZES = {"bert": (12, 12), "bert_base": (12, 12), "bert_large": (24, 16)}  # layers, heads


def is_reference_checkpoint(weights: dict[str, torch.Tensor]) -> bool:
    return REFERENCE_PREFIX + "pos.weight" in weights


def _reference_heads(cfg: dict[str, Any]) -> int:
    heads = cfg.get("encoder_attention_heads") or _BERT_ARCH_SIZES.get(cfg.get("arch", "bert"), (0, 0))[1]
    if not heads:
        raise GraftkitError(f"the checkpoint's settings give no encoder_attention_heads (arch {cfg.get('arch')!r})")
    return int(heads)


def reference_config(weights: dict[str, torch.Tensor], cfg: dict[str, Any]):
    """The :class:`hf_models.TupeConfig` of a guolinke/TUPE ``bert`` checkpoint (settings and table shapes)."""
    from hf_models import TupeConfig

    vocab_size, hidden = weights[REFERENCE_PREFIX + "embed_tokens.weight"].shape
    relative = weights.get(REFERENCE_PREFIX + "relative_attention_bias.weight")
    layers = layer_indices(weights, REFERENCE_PREFIX + "layers.")
    try:
        return TupeConfig(
            vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=len(layers),
            num_attention_heads=_reference_heads(cfg),
            intermediate_size=weights[REFERENCE_PREFIX + "layers.0.fc1.weight"].shape[0],
            hidden_act=hidden_act(cfg), hidden_dropout_prob=float(cfg.get("dropout", 0.1)),
            attention_probs_dropout_prob=float(cfg.get("attention_dropout", 0.1)),
            max_position_embeddings=weights[REFERENCE_PREFIX + "pos.weight"].shape[0] - 1, type_vocab_size=0,
            layer_norm_eps=1e-5,  # fairseq's LayerNorm: torch's default eps, in every LayerNorm of the reference
            layer_norm_position="pre" if cfg.get("encoder_normalize_before") else "post",
            embedding_layer_norm=REFERENCE_PREFIX + "emb_layer_norm.weight" in weights,
            position_mode="relative" if relative is not None else "absolute", untie_cls=True,
            relative_attention_num_buckets=relative.shape[0] - 1 if relative is not None else 32,
            relative_attention_max_distance=REFERENCE_MAX_RELATIVE_DISTANCE,
            pad_token_id=int(cfg.get("pad", 1)), tie_word_embeddings=True)
    except ValueError as err:
        raise GraftkitError(f"bad TUPE settings in the checkpoint: {err}") from err


def _check_reference_buckets(table: torch.Tensor, config) -> None:
    """The reference stores its bucket table (``rp_bucket``, a frozen parameter in later versions): it must be
    the bucketing the converted model computes, [CLS] row and column included."""
    from hf_models.tupe import relative_position_bucket

    positions = torch.arange(table.shape[0])
    expected = relative_position_bucket(positions[None, :] - positions[:, None],
                                        config.relative_attention_num_buckets,
                                        config.relative_attention_max_distance)
    expected[:, 0] = config.relative_attention_num_buckets
    expected[0, :] = config.relative_attention_num_buckets // 2
    if table.shape != expected.shape or not torch.equal(table.long(), expected):
        raise GraftkitError("the checkpoint's relative bucket table (rp_bucket) is not T5's bucketing with "
                            f"{config.relative_attention_num_buckets} buckets up to distance "
                            f"{config.relative_attention_max_distance}: other relative settings are not supported")


def reference_state_dict(weights: dict[str, torch.Tensor], config, what: str) -> ParameterMap:
    """guolinke/TUPE ``bert`` weight names -> TupeForMaskedLM weight names (see the module's tables)."""
    names = ParameterMap(weights, what)
    for source, target in REFERENCE_NAME_MAP.items():
        for part in ("weight", "bias"):
            if names.has(f"{REFERENCE_PREFIX}{source}.{part}"):
                names.put(f"{target}.{part}", f"{REFERENCE_PREFIX}{source}.{part}")
    hidden = config.hidden_size
    if names.has(REFERENCE_PREFIX + "pos_proj.weight"):  # the later layout: one Linear(d, 2d), q rows first
        for part in ("weight", "bias"):
            both = names.take(f"{REFERENCE_PREFIX}pos_proj.{part}")
            names.out[f"tupe.positional_bias.query.{part}"] = both[:hidden]
            names.out[f"tupe.positional_bias.key.{part}"] = both[hidden:]
    if names.has(REFERENCE_PREFIX + "rp_bucket"):
        _check_reference_buckets(names.take(REFERENCE_PREFIX + "rp_bucket"), config)
    for i in range(config.num_hidden_layers):
        source, target = f"{REFERENCE_PREFIX}layers.{i}.", f"tupe.encoder.layers.{i}."
        for part in ("weight", "bias"):
            # q, k, v stacked in that order (the reference's chunk(3))
            query, key, value = names.take(f"{source}self_attn.in_proj_{part}").chunk(3)
            for name, tensor in (("query", query), ("key", key), ("value", value)):
                names.out[f"{target}attention.{name}.{part}"] = tensor
            for layer_source, layer_target in REFERENCE_LAYER_MAP.items():
                names.put(f"{target}{layer_target}.{part}", f"{source}{layer_source}.{part}")
    for source, target in REFERENCE_HEAD_MAP.items():
        for part in ("weight", "bias"):
            names.put(f"{target}.{part}", f"{source}.{part}")
    names.put("lm_head.decoder.bias", "decoder.lm_head.bias")
    embeddings = names.out["tupe.embeddings.word_embeddings.weight"]
    names.out["lm_head.decoder.weight"] = embeddings
    names.tied("decoder.lm_head.weight", embeddings)
    names.drop("classification_heads.")  # fine-tuning heads: the masked-LM folder has no place for them
    return names


def graftkit_state_dict(weights: dict[str, torch.Tensor], what: str, base: str = "tupe") -> ParameterMap:
    """graftkit's fairseq ``tupe`` weight names -> the names of a core masked-LM whose encoder is ``base``
    (TupeForMaskedLM; TnfForMaskedLM's is ``bert``); classification heads dropped."""
    names = ParameterMap(weights, what)
    for key in weights:
        if key.startswith(GRAFTKIT_PREFIX):
            names.put(f"{base}.{key[len(GRAFTKIT_PREFIX):]}", key)
    for part in ("dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias"):
        names.put(f"lm_head.{part}", f"encoder.lm_head.{part}")
    names.put("lm_head.decoder.weight", "encoder.lm_head.weight")
    names.put("lm_head.decoder.bias", "encoder.lm_head.bias")
    names.drop("classification_heads.")
    return names


def convert_fairseq_tupe_to_hf(checkpoint_path: str | os.PathLike, out_dir: str | os.PathLike,
                               dictionary: str | os.PathLike | None = None, tokenizer: bool = True,
                               force: bool = False) -> Path:
    """Write ``out_dir`` (a ``save_pretrained`` folder, with the tokenizer unless ``tokenizer=False``) holding
    the ``TupeForMaskedLM`` equivalent of a fairseq TUPE checkpoint, graftkit's arch or guolinke/TUPE's;
    returns ``out_dir``.

    ``dictionary``: the fairseq ``dict.txt`` (default: the one of the checkpoint's training data, or beside
    the checkpoint). Written beside ``out_dir`` and renamed into place; an existing non-empty ``out_dir`` is
    refused unless ``force``. Token ids are the fairseq dictionary's (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2,
    ``<unk>`` 3), the weights keep the checkpoint's dtype.
    """
    from hf_models import TupeForMaskedLM

    check_output_folder(out_dir, force)
    weights, cfg = load_fairseq_checkpoint(checkpoint_path)
    what = f"{checkpoint_path}"
    if is_reference_checkpoint(weights):
        config = reference_config(weights, cfg)
        names = reference_state_dict(weights, config, what)
        word_embeddings = weights[REFERENCE_PREFIX + "embed_tokens.weight"]
    elif GRAFTKIT_PREFIX + "embeddings.word_embeddings.weight" in weights:
        from plugins.tupe import tupe_config_from_args

        word_embeddings = weights[GRAFTKIT_PREFIX + "embeddings.word_embeddings.weight"]
        config = tupe_config_from_args(cfg, word_embeddings.shape[0], int(cfg.get("pad", 1)))
        names = graftkit_state_dict(weights, what)
    else:
        raise GraftkitError(f"{checkpoint_path} is not a fairseq TUPE checkpoint (neither {GRAFTKIT_PREFIX}"
                            f"embeddings, graftkit's --arch tupe_base / tupe_r_base, nor {REFERENCE_PREFIX}pos, "
                            "guolinke/TUPE's bert)")
    hf_tokenizer = (checkpoint_tokenizer(checkpoint_path, cfg, dictionary, config.vocab_size,
                                         config.max_position_embeddings) if tokenizer else None)
    model = TupeForMaskedLM(config)
    state = names.result(model.state_dict())
    model = load_converted(model, state, word_embeddings.dtype)
    return save_model_folder(out_dir, model, hf_tokenizer, force)
