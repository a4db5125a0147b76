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
    ParameterMap,
    check_output_folder,
    checkpoint_tokenizer,
    fairseq_dictionary_tokenizer,  # noqa: F401  (its tests read it here)
    hidden_act,
    layer_indices,
    load_converted,
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


def roberta_state_dict(weights: dict[str, torch.Tensor], config, what: str, base: str = "bert") -> ParameterMap:
    """fairseq RoBERTa weight names -> the names of a core masked-LM whose encoder is ``base``
    (PreLNBertForMaskedLM, TnfForMaskedLM); fairseq's version marker and classification heads are dropped."""
    names = ParameterMap(weights, what)
    pad = config.pad_token_id
    names.put(f"{base}.embeddings.word_embeddings.weight", _ENCODER + "embed_tokens.weight")
    # fairseq's learned positions start after the padding index: token t reads row pad + 1 + t
    names.put(f"{base}.embeddings.position_embeddings.weight", _ENCODER + "embed_positions.weight",
              lambda table: table[pad + 1:])
    for part in ("dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias"):
        names.put(f"lm_head.{part}", f"encoder.lm_head.{part}")
    names.put("lm_head.decoder.weight", "encoder.lm_head.weight")
    names.put("lm_head.decoder.bias", "encoder.lm_head.bias")
    for part in ("weight", "bias"):
        if config.embedding_layer_norm:
            names.put(f"{base}.embeddings.layer_norm.{part}", f"{_ENCODER}layernorm_embedding.{part}")
        if config.layer_norm_position == "pre":
            names.put(f"{base}.encoder.final_layer_norm.{part}", f"{_ENCODER}layer_norm.{part}")
        for i in range(config.num_hidden_layers):
            for fairseq_name, hf_name in LAYER_MAP.items():
                names.put(f"{base}.encoder.layers.{i}.{hf_name}.{part}", f"{_ENCODER}layers.{i}.{fairseq_name}.{part}")
    names.drop(_ENCODER + "version")
    names.drop("classification_heads.")  # fine-tuning heads: the masked-LM folder has no place for them
    return names


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
    state = roberta_state_dict(weights, config, f"{checkpoint_path}").result(model.state_dict())
    model = load_converted(model, state, weights[_ENCODER + "embed_tokens.weight"].dtype)
    return save_model_folder(out_dir, model, hf_tokenizer, force)
