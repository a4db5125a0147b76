"""Convert an MC-BERT fairseq checkpoint into graftkit's HF McBert folder, with its tokenizer. Two layouts are
read: graftkit's own ``--task mc_bert`` model (any objective, position encoding and LayerNorm placement) and
the paper's fork (MC-BERT/MC-BERT, model ``mcbert``).

graftkit's own model wraps ``hf_models.McBertForPreTraining`` (``pretraining.*``): the conversion drops that
prefix, and the config is built from the checkpoint's settings by the function that built the trained model
(:func:`plugins.mc_bert.mc_bert_config_from_args`), so every composition the task trains converts.

In the reference's naming the main model (the one fine-tuned) is ``decoder.*`` (classes ``Gen*``) and the meta
controller is ``mc.*``: a narrower encoder (sizes divided by ``--mc-size-divider``) that reads the main
model's token embeddings through ``embed_linear`` and shares the main head's vocabulary bias. Every parameter
is mapped by name and shape (:data:`LAYER_MAP` and ``mcbert_state_dict``; the table on docs/mcbert.md),
the first one left unmapped or missing is refused by name.

Output: ``hf_models.McBertModel`` (the main encoder, for fine-tuning), or with ``with_controller`` the whole
``McBertForPreTraining`` (main encoder, its multi-choice head, the meta controller and the shared bias), set
to the reference code's sampling (k = ``--class-num``, candidates with replacement, the original not
excluded, λ = ``--loss-lamda``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from graftkit.errors import GraftkitError
from plugins.convert_fairseq import (
    LAYER_MAP,
    MASK,
    QKV_PROJECTIONS,
    ParameterMap,
    check_output_folder,
    checkpoint_tokenizer,
    hidden_act,
    layer_indices,
    load_converted,
    load_fairseq_settings,
    save_model_folder,
)

GRAFTKIT_PREFIX = "pretraining."  # graftkit's fairseq mc_bert model: its McBertForPreTraining
GRAFTKIT_MAIN_PREFIX = GRAFTKIT_PREFIX + "mc_bert."
MAIN_PREFIX = "decoder.sentence_encoder."
CONTROLLER_PREFIX = "mc.sentence_encoder."
NEITHER = "<neither>"  # appended by the reference's mcbert task after <mask>


def mcbert_config(weights: dict[str, torch.Tensor], cfg: dict[str, Any], with_controller: bool):
    """The :class:`hf_models.McBertConfig` of an MC-BERT/MC-BERT checkpoint (settings and table shapes)."""
    from hf_models import McBertConfig

    if MAIN_PREFIX + "embed_tokens.weight" not in weights or MAIN_PREFIX + "embed_positions.weight" not in weights:
        raise GraftkitError(f"not an MC-BERT/MC-BERT checkpoint (no {MAIN_PREFIX}embed_tokens and embed_positions):"
                            " train it with the reference's --arch mcbert_base (or mcbert_small, mcbert_large)")
    if cfg.get("encoder_normalize_before"):
        raise GraftkitError("cannot convert an MC-BERT checkpoint trained with --encoder-normalize-before: the "
                            "reference's Pre-LN encoder has no final LayerNorm, graftkit's Pre-LN encoder has one")
    if with_controller and CONTROLLER_PREFIX + "embed_linear.weight" not in weights:
        raise GraftkitError(f"the checkpoint has no meta controller ({CONTROLLER_PREFIX}embed_linear): a fine-tuned "
                            "checkpoint; convert the encoder alone (without --with-controller)")
    vocab_size, hidden = weights[MAIN_PREFIX + "embed_tokens.weight"].shape
    pad = int(cfg.get("pad", 1))
    divider = int(cfg.get("mc_size_divider") or 3)
    if with_controller and weights[CONTROLLER_PREFIX + "embed_linear.weight"].shape != (hidden // divider, hidden):
        raise GraftkitError(f"{CONTROLLER_PREFIX}embed_linear.weight has shape "
                            f"{tuple(weights[CONTROLLER_PREFIX + 'embed_linear.weight'].shape)}, mc_size_divider "
                            f"{divider} gives ({hidden // divider}, {hidden})")
    try:
        return McBertConfig(
            vocab_size=vocab_size, hidden_size=hidden,
            num_hidden_layers=len(layer_indices(weights, MAIN_PREFIX + "layers.")),
            num_attention_heads=int(cfg["encoder_attention_heads"]),
            intermediate_size=weights[MAIN_PREFIX + "layers.0.fc1.weight"].shape[0], hidden_act=hidden_act(cfg),
            hidden_dropout_prob=float(cfg.get("dropout", 0.1)),
            attention_probs_dropout_prob=float(cfg.get("attention_dropout", 0.1)),
            max_position_embeddings=weights[MAIN_PREFIX + "embed_positions.weight"].shape[0] - pad - 1,
            type_vocab_size=0, layer_norm_eps=1e-5,  # fairseq's LayerNorm: torch's default eps
            embedding_layer_norm=MAIN_PREFIX + "emb_layer_norm.weight" in weights, pad_token_id=pad,
            # the reference's mcbert task appends <mask> then <neither> to the dictionary
            mask_token_id=vocab_size - 2, neither_token_id=vocab_size - 1, objective="mc",
            num_candidates=int(cfg.get("class_num") or 10), mc_loss_weight=float(cfg.get("loss_lamda") or 50.0),
            candidates_with_replacement=True, candidates_exclude_original=False, mc_size_divider=divider,
            mask_prob=float(cfg.get("mask_prob") or 0.15))
    except KeyError as err:
        raise GraftkitError(f"the checkpoint's settings lack {err.args[0]}") from None
    except ValueError as err:
        raise GraftkitError(f"bad MC-BERT settings in the checkpoint: {err}") from err


def is_graftkit_checkpoint(weights: dict[str, torch.Tensor]) -> bool:
    return GRAFTKIT_MAIN_PREFIX + "embeddings.word_embeddings.weight" in weights


def graftkit_config(weights: dict[str, torch.Tensor], cfg: dict[str, Any], task_cfg: dict[str, Any]):
    """The :class:`hf_models.McBertConfig` of a checkpoint of graftkit's ``--task mc_bert`` (its settings)."""
    from plugins.mc_bert import mc_bert_config_from_args

    vocab_size = weights[GRAFTKIT_MAIN_PREFIX + "embeddings.word_embeddings.weight"].shape[0]
    # the task appends <mask> then <neither> to the dictionary, as the reference's
    return mc_bert_config_from_args(cfg, vocab_size, int(cfg.get("pad", 1)), vocab_size - 2, vocab_size - 1,
                                    float(task_cfg.get("mask_prob", cfg.get("mask_prob", 0.15))))


def graftkit_state_dict(weights: dict[str, torch.Tensor], with_controller: bool, what: str) -> ParameterMap:
    """graftkit's fairseq ``mc_bert`` weight names -> McBertForPreTraining names (``with_controller``) or the main
    encoder's McBertModel names (the head, meta controller and vocabulary bias left out)."""
    names = ParameterMap(weights, what)
    prefix = GRAFTKIT_PREFIX if with_controller else GRAFTKIT_MAIN_PREFIX
    for key in weights:
        if key.startswith(prefix):
            names.put(key[len(prefix):], key)
    names.drop(GRAFTKIT_PREFIX)  # without the controller: the pre-training parts
    return names


def _encoder(names: ParameterMap, source: str, target: str, layers: int, pad: int, embeddings: bool) -> None:
    """One reference TransformerSentenceEncoder (``source``) -> the core's Embeddings + Encoder (``target``)."""
    if embeddings:
        names.put(f"{target}embeddings.word_embeddings.weight", f"{source}embed_tokens.weight")
    # fairseq's learned positions start after the padding index: token t reads row pad + 1 + t
    names.put(f"{target}embeddings.position_embeddings.weight", f"{source}embed_positions.weight",
              lambda table: table[pad + 1:])
    for part in ("weight", "bias"):
        if names.has(f"{source}emb_layer_norm.{part}"):
            names.put(f"{target}embeddings.layer_norm.{part}", f"{source}emb_layer_norm.{part}")
    for i in range(layers):
        layer_source, layer_target = f"{source}layers.{i}.", f"{target}encoder.layers.{i}."
        for part in ("weight", "bias"):
            stacked = f"{layer_source}self_attn.in_proj_{part}"
            if names.has(stacked):  # older fairseq: q, k, v stacked in one projection, in that order
                for name, tensor in zip(("query", "key", "value"), names.take(stacked).chunk(3), strict=True):
                    names.out[f"{layer_target}attention.{name}.{part}"] = tensor
            for reference, core in LAYER_MAP.items():
                if not (names.has(stacked) and reference in QKV_PROJECTIONS):
                    names.put(f"{layer_target}{core}.{part}", f"{layer_source}{reference}.{part}")


def mcbert_state_dict(weights: dict[str, torch.Tensor], config, with_controller: bool, what: str) -> ParameterMap:
    """MC-BERT/MC-BERT weight names -> McBertModel (or McBertForPreTraining with ``with_controller``) names."""
    names = ParameterMap(weights, what)
    main = "mc_bert." if with_controller else ""
    _encoder(names, MAIN_PREFIX, main, config.num_hidden_layers, config.pad_token_id, embeddings=True)
    embeddings = names.out[f"{main}embeddings.word_embeddings.weight"]
    names.drop("classification_heads.")  # fine-tuning heads: fine-tune the converted encoder again
    if not with_controller:
        names.drop("decoder.lm_head.")  # the pre-training head ...
        names.drop("mc.")  # ... and the meta controller are left out of the encoder folder
        return names
    for part in ("dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias"):
        names.put(f"head.{part}", f"decoder.lm_head.{part}")
        names.put(f"meta_controller.lm_transform.{part}", f"mc.lm_head.{part}")
    bias = names.take("decoder.lm_head.bias.weight")  # an Embedding(V, 1): b[c] per candidate c
    names.out["vocabulary_bias"] = bias[:, 0]
    names.tied("decoder.lm_head.embed_tokens.weight", embeddings)
    _encoder(names, CONTROLLER_PREFIX, "meta_controller.", config.num_hidden_layers, config.pad_token_id,
             embeddings=False)
    names.tied(CONTROLLER_PREFIX + "embed_tokens.weight", embeddings)
    for part in ("weight", "bias"):
        names.put(f"meta_controller.embedding_projection.{part}", f"{CONTROLLER_PREFIX}embed_linear.{part}")
        names.tied(f"mc.lm_head.share_emb_pro.{part}", names.out[f"meta_controller.embedding_projection.{part}"])
    names.tied("mc.lm_head.weight", embeddings)
    names.tied("mc.lm_head.bias", bias)
    return names


def convert_mcbert_to_hf(checkpoint_path: str | os.PathLike, out_dir: str | os.PathLike,
                         with_controller: bool = False, dictionary: str | os.PathLike | None = None,
                         tokenizer: bool = True, force: bool = False) -> Path:
    """Write ``out_dir`` (a ``save_pretrained`` folder with the tokenizer unless ``tokenizer=False``): the main
    encoder as ``McBertModel``, or with ``with_controller`` the ``McBertForPreTraining`` with the meta controller;
    returns ``out_dir``. Outputs equal the checkpoint's on real tokens; weights keep the checkpoint's dtype.
    ``checkpoint_path``: graftkit's ``--task mc_bert`` (any objective, position encoding, LayerNorm placement)
    or the reference's ``mcbert``.

    ``dictionary``: the fairseq ``dict.txt`` (default: the checkpoint's training data's, or beside it); its ids
    plus ``<mask>`` and ``<neither>`` must count the model's token embeddings. Written beside ``out_dir`` and
    renamed into place; an existing non-empty ``out_dir`` is refused unless ``force``.
    """
    from hf_models import McBertForPreTraining, McBertModel

    check_output_folder(out_dir, force)
    weights, cfg, task_cfg = load_fairseq_settings(checkpoint_path)
    what = f"{checkpoint_path}"
    if is_graftkit_checkpoint(weights):
        config = graftkit_config(weights, cfg, task_cfg)
        names = graftkit_state_dict(weights, with_controller, what)
        word_embeddings = weights[GRAFTKIT_MAIN_PREFIX + "embeddings.word_embeddings.weight"]
    else:
        config = mcbert_config(weights, cfg, with_controller)
        names = mcbert_state_dict(weights, config, with_controller, what)
        word_embeddings = weights[MAIN_PREFIX + "embed_tokens.weight"]
    hf_tokenizer = (checkpoint_tokenizer(checkpoint_path, cfg, dictionary, config.vocab_size,
                                         config.max_position_embeddings, appended=(MASK, NEITHER))
                    if tokenizer else None)
    model = McBertForPreTraining(config) if with_controller else McBertModel(config, add_pooling_layer=False)
    state = names.result(model.state_dict())
    model = load_converted(model, state, word_embeddings.dtype)
    return save_model_folder(out_dir, model, hf_tokenizer, force)
