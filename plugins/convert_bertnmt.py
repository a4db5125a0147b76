"""Convert a bert-nmt checkpoint (the paper's fairseq 0.7 fork, model ``transformers2``) into a graftkit
``bert_fused`` fairseq checkpoint that ``fairseq-generate --user-dir "$(graftkit fairseq-user-dir)"`` decodes.

The reference keeps BERT in ``bert_encoder.*`` (its ``bert/modeling.py``, the names of HF's ``BertModel``), and each
encoder / decoder layer has its own ``bert_attn`` beside ``self_attn`` / ``encoder_attn``; its attentions have
fairseq 0.7's layout: q, k, v stacked in ``in_proj_weight`` when their input widths agree, else
``q_proj_weight`` / ``k_proj_weight`` / ``v_proj_weight``, and the three biases always stacked in ``in_proj_bias``.
Every parameter is mapped by name and shape (the table on docs/bertfused.md); the first one left unmapped or
missing is refused by name. The branch mix is carried over as settings: without ``--encoder-bert-dropout`` the
reference weights the branches by ``--encoder-ratio`` / ``--bert-ratio`` (its defaults 1, 1), with it drop-net
p_net = 2 · ``--encoder-bert-dropout-ratio`` and (½, ½).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from graftkit.checkpoint import check_writable, save_checkpoint
from graftkit.errors import GraftkitError
from plugins.convert_fairseq import ParameterMap, layer_indices, load_fairseq_checkpoint

REFERENCE_BERT = "bert_encoder."
TARGET_BERT = "encoder.bert."  # plugins.bert_fused.model.BERT_PREFIX
#: the reference's attention modules per layer -> graftkit's (``bert_attn`` is a child of the host attention)
ENCODER_ATTENTIONS = {"self_attn": "self_attn", "bert_attn": "self_attn.bert_attn"}
DECODER_ATTENTIONS = {"self_attn": "self_attn", "encoder_attn": "encoder_attn",
                      "bert_attn": "encoder_attn.bert_attn"}
ENCODER_LAYER_PARTS = ("self_attn_layer_norm", "fc1", "fc2", "final_layer_norm")
DECODER_LAYER_PARTS = ("self_attn_layer_norm", "encoder_attn_layer_norm", "fc1", "fc2", "final_layer_norm")
#: stack-level modules with the same names on both sides, where present
SHARED_MODULES = ("encoder.embed_tokens", "encoder.embed_positions", "encoder.layer_norm", "decoder.embed_tokens",
                  "decoder.embed_positions", "decoder.layer_norm", "decoder.project_in_dim", "decoder.project_out_dim")


def _check_reference_settings(weights: dict[str, torch.Tensor], cfg: dict[str, Any], what: str) -> None:
    """Refuse, by name, the reference's variants that graftkit's ``bert_fused`` does not have."""
    if not any(key.startswith(REFERENCE_BERT) for key in weights):
        raise GraftkitError(f"{what} has no {REFERENCE_BERT}* parameters: not a bert-nmt checkpoint")
    if not any(key.startswith("encoder.layers.0.bert_attn.") for key in weights):
        raise GraftkitError(f"{what} has no encoder.layers.0.bert_attn: a plain transformer of the bert-nmt code "
                            f"(arch {cfg.get('arch')}), not its BERT-fused model (transformers2)")
    stacked = str(cfg.get("arch", "")).startswith("transformerstack")
    if stacked or any(".bert_attn_layer_norm." in key for key in weights):
        raise GraftkitError(f"{what} is the reference's stacked decoder (model transformerstack: BERT attention "
                            "after the encoder attention, with its own LayerNorm), which bert_fused does not have")
    if cfg.get("decoder_no_bert") or not any(key.startswith("decoder.layers.0.bert_attn.") for key in weights):
        raise GraftkitError(f"{what} was trained with --decoder-no-bert (no BERT attention in the decoder), which "
                            "bert_fused does not have")
    gates = cfg.get("bert_gates")
    if gates is not None and any(int(gate) != 1 for gate in gates):
        raise GraftkitError(f"{what} was trained with --bert-gates {' '.join(map(str, gates))} (layers without "
                            "the BERT branch), which bert_fused does not have")
    if cfg.get("adaptive_softmax_cutoff"):
        raise GraftkitError(f"{what} uses an adaptive softmax (--adaptive-softmax-cutoff), which this converter "
                            "does not support")


def _flag(argv: list[str], cfg: dict[str, Any], name: str) -> None:
    if cfg.get(name):
        argv.append("--" + name.replace("_", "-"))


def bert_fused_argv(weights: dict[str, torch.Tensor], cfg: dict[str, Any], bert_model: str | os.PathLike) -> list[str]:
    """fairseq-train arguments of the graftkit ``bert_fused`` model equal to the reference checkpoint's."""
    try:
        heads = (int(cfg["encoder_attention_heads"]), int(cfg["decoder_attention_heads"]))
    except KeyError as err:
        raise GraftkitError(f"the checkpoint's settings lack {err.args[0]}") from None

    def size(name: str, dim: int) -> int:
        if name not in weights:
            raise GraftkitError(f"parameter {name} is missing from the checkpoint")
        return weights[name].shape[dim]
    if cfg.get("encoder_bert_dropout"):  # drop-net: its ratio is p_net / 2, the kept mix (½, ½)
        drop_net, ratios = 2 * float(cfg.get("encoder_bert_dropout_ratio", 0.25)), (0.5, 0.5)
    else:  # no drop-net: the branches weighted by the ratios, in training too
        drop_net, ratios = 0.0, (float(cfg.get("encoder_ratio", 1.0)), float(cfg.get("bert_ratio", 1.0)))
    encoder_dim, decoder_dim = size("encoder.embed_tokens.weight", 1), size("decoder.embed_tokens.weight", 1)
    argv = [str(cfg.get("data") or "."), "--task", "translation_bert_fused", "--bert-model", str(bert_model),
            "--arch", "bert_fused",
            "--encoder-layers", str(len(layer_indices(weights, "encoder.layers."))),
            "--decoder-layers", str(len(layer_indices(weights, "decoder.layers."))),
            "--encoder-embed-dim", str(encoder_dim), "--decoder-embed-dim", str(decoder_dim),
            "--encoder-ffn-embed-dim", str(size("encoder.layers.0.fc1.weight", 0)),
            "--decoder-ffn-embed-dim", str(size("decoder.layers.0.fc1.weight", 0)),
            "--encoder-attention-heads", str(heads[0]), "--decoder-attention-heads", str(heads[1]),
            "--decoder-output-dim", str(cfg.get("decoder_output_dim") or decoder_dim),
            "--activation-fn", str(cfg.get("activation_fn") or "relu"),
            "--dropout", str(cfg.get("dropout", 0.1)), "--attention-dropout", str(cfg.get("attention_dropout", 0.0)),
            "--activation-dropout", str(cfg.get("activation_dropout") or cfg.get("relu_dropout") or 0.0),
            "--max-source-positions", str(cfg.get("max_source_positions", 1024)),
            "--max-target-positions", str(cfg.get("max_target_positions", 1024)),
            "--drop-net", str(drop_net), "--encoder-ratio", str(ratios[0]), "--bert-ratio", str(ratios[1]),
            "--bert-output-layer", str(int(cfg.get("bert_output_layer", -1)))]
    for side in ("source", "target"):
        if cfg.get(f"{side}_lang"):
            argv += [f"--{side}-lang", str(cfg[f"{side}_lang"])]
    for name in ("encoder_normalize_before", "decoder_normalize_before", "encoder_learned_pos", "decoder_learned_pos",
                 "share_decoder_input_output_embed", "share_all_embeddings", "no_token_positional_embeddings",
                 "no_decoder_final_norm", "mask_cls_sep", "finetune_bert"):
        _flag(argv, cfg, name)
    return argv


def _attention(names: ParameterMap, source: str, target: str) -> None:
    """One fairseq 0.7 MultiheadAttention (``source``) -> fairseq 0.12's q/k/v/out projections (``target``)."""
    projections = ("q_proj", "k_proj", "v_proj")
    if names.has(f"{source}.in_proj_weight"):  # q, k, v of one width: stacked, in that order
        for projection, tensor in zip(projections, names.take(f"{source}.in_proj_weight").chunk(3), strict=True):
            names.out[f"{target}.{projection}.weight"] = tensor
    else:
        for projection in projections:
            names.put(f"{target}.{projection}.weight", f"{source}.{projection}_weight")
    for projection, tensor in zip(projections, names.take(f"{source}.in_proj_bias").chunk(3), strict=True):
        names.out[f"{target}.{projection}.bias"] = tensor
    for part in ("weight", "bias"):
        names.put(f"{target}.out_proj.{part}", f"{source}.out_proj.{part}")


def _same_names(names: ParameterMap, module: str) -> None:
    for key in [key for key in names.weights if key.startswith(module + ".") and key not in names.read]:
        names.put(key, key)


def bertnmt_state_dict(weights: dict[str, torch.Tensor], shared_output: bool, what: str) -> ParameterMap:
    """bert-nmt ``transformers2`` weight names -> graftkit ``bert_fused`` names."""
    names = ParameterMap(weights, what)
    for side, attentions, parts in (("encoder", ENCODER_ATTENTIONS, ENCODER_LAYER_PARTS),
                                    ("decoder", DECODER_ATTENTIONS, DECODER_LAYER_PARTS)):
        for i in layer_indices(weights, f"{side}.layers."):
            layer = f"{side}.layers.{i}."
            for reference, ours in attentions.items():
                _attention(names, layer + reference, layer + ours)
            for part in parts:
                for tensor in ("weight", "bias"):
                    names.put(f"{layer}{part}.{tensor}", f"{layer}{part}.{tensor}")
        names.put(f"{side}.version", f"{side}.version")
    # a sinusoidal position table is computed, not stored: its placeholder buffer has no values
    names.drop("encoder.embed_positions._float_tensor")
    names.drop("decoder.embed_positions._float_tensor")
    for module in SHARED_MODULES:
        _same_names(names, module)
    if shared_output:  # fairseq 0.12 names the tied output projection too
        names.out["decoder.output_projection.weight"] = names.out["decoder.embed_tokens.weight"]
    else:
        names.put("decoder.output_projection.weight", "decoder.embed_out")
    for key in [key for key in weights if key.startswith(REFERENCE_BERT)]:
        names.put(TARGET_BERT + key[len(REFERENCE_BERT):], key)
    return names


def _check_bert_folder(bert_model: Path) -> None:
    """The reference's BERT is a BERT (its ``bert/modeling.py``): its weights only fit a BERT config."""
    config = bert_model / "config.json"
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError) as err:
        raise GraftkitError(f"--bert-model {bert_model}: cannot read {config}: {err}") from None
    if model_type != "bert":
        raise GraftkitError(f"--bert-model {bert_model} holds a {model_type!r} model; the reference's BERT is a "
                            "BERT: give the HF folder of the BERT it was trained with (its --bert-model-name)")


def _placeholder_dictionary(size: int):
    """A fairseq Dictionary of ``size`` ids (fairseq's specials first): only the model's shapes are built from
    it; fairseq-generate later reads the real dictionaries from its data folder."""
    from fairseq.data import Dictionary

    dictionary = Dictionary()
    while len(dictionary) < size:
        dictionary.add_symbol(f"madeupword{len(dictionary):06d}")
    return dictionary


def convert_bertnmt(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike, bert_model: str | os.PathLike,
                    force: bool = False) -> Path:
    """Write ``out_path``: a graftkit ``bert_fused`` fairseq checkpoint with the reference checkpoint's weights
    (their dtype kept) and settings; returns ``out_path``.

    ``bert_model``: the local HF folder of the BERT the reference was trained with (config and tokenizer; its
    weights are replaced by the checkpoint's ``bert_encoder.*``). ``out_path`` is written atomically; an
    existing file is refused unless ``force``.
    """
    from graftkit.commands.bertfused import load_plugins

    out_path, bert_model = Path(out_path), Path(bert_model)
    if out_path.exists() and not force:
        raise GraftkitError(f"output {out_path} exists (give --force to replace it)")
    check_writable(out_path, what="output checkpoint")
    _check_bert_folder(bert_model)
    load_plugins()
    from fairseq import options

    from plugins.bert_fused.model import BertFusedModel
    from plugins.bert_fused.task import BertFusedTranslationConfig, BertFusedTranslationTask

    weights, cfg = load_fairseq_checkpoint(checkpoint_path)
    what = str(checkpoint_path)
    _check_reference_settings(weights, cfg, what)
    argv = bert_fused_argv(weights, cfg, bert_model)
    try:
        args = options.parse_args_and_arch(options.get_training_parser(), argv)
    except SystemExit:  # argparse has printed which value it refused
        raise GraftkitError(f"{what}: its settings give bert_fused arguments that fairseq refuses: "
                            f"{' '.join(argv)}") from None
    task = BertFusedTranslationTask(BertFusedTranslationConfig(bert_model=str(bert_model)),
                                    _placeholder_dictionary(weights["encoder.embed_tokens.weight"].shape[0]),
                                    _placeholder_dictionary(weights["decoder.embed_tokens.weight"].shape[0]))
    model = BertFusedModel.build_model(args, task)
    names = bertnmt_state_dict(weights, bool(args.share_decoder_input_output_embed), what)
    state = names.result(model.state_dict())
    model.load_state_dict(state, strict=True)  # the checkpoint fairseq-generate will build, loaded once here
    save_checkpoint({"args": args, "model": state, "extra_state": {"train_iterator": None},
                     "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion",
                                            "optimizer_name": "converted", "lr_scheduler_state": {"best": None},
                                            "num_updates": 0}],
                     "last_optimizer_state": None}, out_path)
    return out_path

