"""Convert a fairseq RoBERTa checkpoint (``--arch roberta_preln_base``, or any ``roberta`` arch trained with
``--encoder-normalize-before``) into graftkit's HF Pre-LN BERT (``hf_models.PreLNBertForMaskedLM``).

The two models compute the same function, so the conversion is a renaming, except for positions: fairseq's
learned positions start after the padding index (token t uses row ``pad + 1 + t``), HF's at row 0. A
Post-LN checkpoint (no ``--encoder-normalize-before``) converts too, to ``layer_norm_position="post"``.
Token ids are the fairseq dictionary's (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from graftkit.errors import GraftkitError
from plugins.convert_fairseq import (
    LAYER_MAP,
    check_output_folder,
    checkpoint_tokenizer,
    fairseq_dictionary_tokenizer,  # noqa: F401  (its tests read it here)
    hidden_act,
    layer_indices,
    save_model_folder,
)
from plugins.convert_fairseq import (
    dictionary_of as _dictionary_of,  # noqa: F401  (its tests read it here)
)
from plugins.convert_fairseq import (
    load_fairseq_checkpoint as _load,
)

_ENCODER = "encoder.sentence_encoder."


def preln_config_from_fairseq(weights: dict[str, torch.Tensor], cfg: dict[str, Any]):
    """The :class:`hf_models.PreLNBertConfig` equivalent to a fairseq RoBERTa's settings and weights."""
    from hf_models import PreLNBertConfig

    if _ENCODER + "embed_tokens.weight" not in weights:
        raise GraftkitError("not a fairseq RoBERTa checkpoint (no encoder.sentence_encoder.embed_tokens): "
                            "train it with --task masked_lm --arch roberta_preln_base (or another roberta arch)")
    unsupported = {
        "encoder_learned_pos": (False, "sinusoidal positions"),
        "no_scale_embedding": (False, "embeddings scaled by sqrt(d)"),
        "no_token_positional_embeddings": (True, "no positional embeddings"),
        "adaptive_input": (True, "adaptive input"),
    }
    for key, (bad, what) in unsupported.items():
        if bool(cfg.get(key, not bad)) == bad:
            raise GraftkitError(f"cannot convert a checkpoint with {key}={bad} ({what}): PreLNBert has learned "
                                "absolute positions and unscaled embeddings")
    vocab_size, hidden = weights[_ENCODER + "embed_tokens.weight"].shape
    pad = int(cfg.get("pad", 1))
    positions = weights[_ENCODER + "embed_positions.weight"].shape[0] - pad - 1
    layers = layer_indices(weights, _ENCODER + "layers.")
    return PreLNBertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=len(layers),
        num_attention_heads=int(cfg["encoder_attention_heads"]),
        intermediate_size=weights[_ENCODER + "layers.0.fc1.weight"].shape[0],
        hidden_act=hidden_act(cfg),
        hidden_dropout_prob=float(cfg.get("dropout", 0.1)),
        attention_probs_dropout_prob=float(cfg.get("attention_dropout", 0.1)),
        max_position_embeddings=positions, type_vocab_size=0,
        layer_norm_eps=1e-5,  # fairseq's LayerNorm is torch's, eps 1e-5
        layer_norm_position="pre" if cfg.get("encoder_normalize_before") else "post",
        embedding_layer_norm=_ENCODER + "layernorm_embedding.weight" in weights,
        pad_token_id=pad, tie_word_embeddings=not cfg.get("untie_weights_roberta", False),
    )


def _hf_state_dict(weights: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """fairseq RoBERTa weight names -> PreLNBertForMaskedLM weight names."""
    pad = config.pad_token_id
    out = {
        "bert.embeddings.word_embeddings.weight": weights[_ENCODER + "embed_tokens.weight"],
        "bert.embeddings.position_embeddings.weight": weights[_ENCODER + "embed_positions.weight"][pad + 1:],
        "lm_head.dense.weight": weights["encoder.lm_head.dense.weight"],
        "lm_head.dense.bias": weights["encoder.lm_head.dense.bias"],
        "lm_head.layer_norm.weight": weights["encoder.lm_head.layer_norm.weight"],
        "lm_head.layer_norm.bias": weights["encoder.lm_head.layer_norm.bias"],
        "lm_head.decoder.weight": weights["encoder.lm_head.weight"],
        "lm_head.decoder.bias": weights["encoder.lm_head.bias"],
    }
    for part in ("weight", "bias"):
        if config.embedding_layer_norm:
            out[f"bert.embeddings.layer_norm.{part}"] = weights[f"{_ENCODER}layernorm_embedding.{part}"]
        if config.layer_norm_position == "pre":
            out[f"bert.encoder.final_layer_norm.{part}"] = weights[f"{_ENCODER}layer_norm.{part}"]
        for i in range(config.num_hidden_layers):
            for fairseq_name, hf_name in LAYER_MAP.items():
                out[f"bert.encoder.layers.{i}.{hf_name}.{part}"] = weights[
                    f"{_ENCODER}layers.{i}.{fairseq_name}.{part}"]
    return out


def convert_fairseq_roberta_to_preln_bert(checkpoint_path: str | os.PathLike, out_dir: str | os.PathLike,
                                          dictionary: str | os.PathLike | None = None,
                                          tokenizer: bool = True, force: bool = False) -> Path:
    """Write ``out_dir`` (``save_pretrained`` folder: config.json, model.safetensors, remote code, and the
    tokenizer from the fairseq dictionary) holding the ``PreLNBertForMaskedLM`` equivalent of the fairseq
    RoBERTa checkpoint; returns ``out_dir``.

    ``dictionary``: the fairseq ``dict.txt`` (default: the one in the checkpoint's training data folder, or
    beside the checkpoint); ``tokenizer=False`` writes the weights only. With the tokenizer the folder works
    with ``AutoTokenizer.from_pretrained`` and ``pipeline("fill-mask", model=out_dir)``.
    The folder is written beside ``out_dir`` and renamed into place, so an interrupted conversion leaves
    nothing half-written; an existing non-empty ``out_dir`` is refused unless ``force``.
    """
    from hf_models import PreLNBertForMaskedLM

    check_output_folder(out_dir, force)
    weights, cfg = _load(checkpoint_path)
    config = preln_config_from_fairseq(weights, cfg)
    hf_tokenizer = (checkpoint_tokenizer(checkpoint_path, cfg, dictionary, config.vocab_size,
                                         config.max_position_embeddings) if tokenizer else None)
    model = PreLNBertForMaskedLM(config)
    try:
        missing, unexpected = model.load_state_dict(_hf_state_dict(weights, config), strict=False)
    except (KeyError, RuntimeError) as err:
        raise GraftkitError(f"checkpoint {checkpoint_path} does not match its own settings: {err}") from err
    if missing or unexpected:
        raise GraftkitError(f"weights not converted: missing {missing}, unexpected {unexpected}")
    return save_model_folder(out_dir, model, hf_tokenizer, force)
