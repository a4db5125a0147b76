"""Convert a fairseq RoBERTa checkpoint (``--arch roberta_preln_base``, or any ``roberta`` arch trained with
``--encoder-normalize-before``) into graftkit's HF Pre-LN BERT (``hf_models.PreLNBertForMaskedLM``).

The two models compute the same function, so the conversion is a renaming, except for positions: fairseq's
learned positions start after the padding index (token t uses row ``pad + 1 + t``), HF's at row 0. A
Post-LN checkpoint (no ``--encoder-normalize-before``) converts too, to ``layer_norm_position="post"``.
Token ids are the fairseq dictionary's (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from graftkit.checkpoint import load_checkpoint
from graftkit.errors import GraftkitError

_ENCODER = "encoder.sentence_encoder."
_ACTIVATIONS = {"gelu": "gelu", "gelu_accurate": "gelu_new", "relu": "relu", "tanh": "tanh", "swish": "silu"}
# fairseq layer module -> the HF core's EncoderLayer module
_LAYER_NAMES = {
    "self_attn.q_proj": "attention.query",
    "self_attn.k_proj": "attention.key",
    "self_attn.v_proj": "attention.value",
    "self_attn.out_proj": "attention.output",
    "self_attn_layer_norm": "attention_layer_norm",
    "fc1": "feed_forward.intermediate",
    "fc2": "feed_forward.output",
    "final_layer_norm": "feed_forward_layer_norm",
}


def _load(checkpoint_path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    path = Path(checkpoint_path)
    # fairseq stores its settings as an argparse.Namespace: allow exactly that class, nothing else
    state = load_checkpoint(path, kind="fairseq checkpoint", allowed_classes=[argparse.Namespace])
    if not isinstance(state, dict) or "model" not in state:
        raise GraftkitError(f"{path} is not a fairseq checkpoint (no 'model' entry)")
    cfg = (state.get("cfg") or {}).get("model") or state.get("args")
    if cfg is None:
        raise GraftkitError(f"{path} has no model settings ('cfg.model' or 'args')")
    return state["model"], dict(vars(cfg) if isinstance(cfg, argparse.Namespace) else cfg)


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
    if cfg.get("activation_fn", "gelu") not in _ACTIVATIONS:
        raise GraftkitError(f"activation_fn {cfg['activation_fn']!r} has no PreLNBert equivalent "
                            f"(supported: {', '.join(_ACTIVATIONS)})")
    vocab_size, hidden = weights[_ENCODER + "embed_tokens.weight"].shape
    pad = int(cfg.get("pad", 1))
    positions = weights[_ENCODER + "embed_positions.weight"].shape[0] - pad - 1
    layers = sorted({int(k[len(_ENCODER + "layers."):].split(".")[0]) for k in weights
                     if k.startswith(_ENCODER + "layers.")})
    if layers != list(range(len(layers))) or not layers:
        raise GraftkitError(f"encoder layers in the checkpoint are not 0..N-1: {layers}")
    return PreLNBertConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=len(layers),
        num_attention_heads=int(cfg["encoder_attention_heads"]),
        intermediate_size=weights[_ENCODER + "layers.0.fc1.weight"].shape[0],
        hidden_act=_ACTIVATIONS[cfg.get("activation_fn", "gelu")],
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
            for fairseq_name, hf_name in _LAYER_NAMES.items():
                out[f"bert.encoder.layers.{i}.{hf_name}.{part}"] = weights[
                    f"{_ENCODER}layers.{i}.{fairseq_name}.{part}"]
    return out


_SPECIAL_SYMBOLS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq Dictionary's first four ids
_MASK = "<mask>"  # appended by fairseq's masked_lm task after the dictionary file's symbols


def _read_fairseq_dictionary(path: Path) -> list[str]:
    """The symbols of a fairseq ``dict.txt`` (lines ``<symbol> <count> [#fairseq:overwrite]``), in file order."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeError) as err:
        raise GraftkitError(f"cannot read fairseq dictionary {path}: {err}") from err
    symbols = []
    for number, line in enumerate(lines, 1):
        fields = line.rstrip().rsplit(" ", 2 if line.rstrip().endswith(" #fairseq:overwrite") else 1)
        if len(fields) < 2 or not fields[1].isdigit():
            raise GraftkitError(f"{path}:{number} is not a fairseq dictionary line ('<symbol> <count>'): {line!r}")
        symbols.append(fields[0])
    return symbols


def fairseq_dictionary_tokenizer(dictionary: str | os.PathLike, vocab_size: int, model_max_length: int):
    """A ``transformers`` fast tokenizer with the ids of a fairseq masked-LM model's dictionary.

    It tokenizes as ``fairseq-preprocess`` did: split on whitespace, each word looked up in the dictionary
    (``<unk>`` otherwise), ``<s>`` before and ``</s>`` after (RoBERTa's ``<s> A </s></s> B </s>`` for pairs);
    ids are fairseq's (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, the file's symbols, ``<mask>`` last).
    Text must be preprocessed (BPE, normalization) as the training data was. ``vocab_size`` (the model's
    embedding rows) must equal the dictionary's size plus ``<mask>``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    path = Path(dictionary)
    symbols = [*_SPECIAL_SYMBOLS, *_read_fairseq_dictionary(path), _MASK]
    if len(symbols) != vocab_size:
        raise GraftkitError(f"fairseq dictionary {path} gives {len(symbols)} ids (4 special symbols, "
                            f"{len(symbols) - 5} from the file, <mask>), but the model has {vocab_size} token "
                            "embeddings: not the dictionary this model was trained with")
    words = [s for s in symbols[len(_SPECIAL_SYMBOLS):-1] if not s.startswith("madeupword")]
    if words and all(s.isdigit() for s in words):
        raise GraftkitError(f"fairseq dictionary {path} holds GPT-2 BPE ids (as fairseq's RoBERTa): a tokenizer "
                            "for it needs the GPT-2 BPE files, which the converter does not take; convert "
                            "with --no-tokenizer and tokenize with the BPE the model was trained with")
    # a symbol listed twice (#fairseq:overwrite) maps to its last id, as in fairseq's Dictionary
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # fairseq's tokenize_line: split on \s+
    bos, eos = vocab["<s>"], vocab["</s>"]
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        cls_token="<s>", sep_token="</s>", mask_token=_MASK, model_max_length=model_max_length,
        model_input_names=["input_ids", "attention_mask"])


def _dictionary_of(checkpoint_path: Path, cfg: dict[str, Any]) -> Path:
    """``dict.txt`` of the data the checkpoint was trained on (its ``data`` setting), else beside it."""
    data = str(cfg.get("data") or "")
    candidates = [Path(data.split(os.pathsep)[0]) / "dict.txt"] if data else []
    candidates.append(checkpoint_path.parent / "dict.txt")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise GraftkitError(f"no fairseq dictionary found for the tokenizer (looked for "
                        f"{' and '.join(map(str, candidates))}): give it with --dict DICT, or convert without a "
                        "tokenizer with --no-tokenizer")


def convert_fairseq_roberta_to_preln_bert(checkpoint_path: str | os.PathLike, out_dir: str | os.PathLike,
                                          dictionary: str | os.PathLike | None = None,
                                          tokenizer: bool = True) -> Path:
    """Write ``out_dir`` (``save_pretrained`` folder: config.json, model.safetensors, remote code, and the
    tokenizer from the fairseq dictionary) holding the ``PreLNBertForMaskedLM`` equivalent of the fairseq
    RoBERTa checkpoint; returns ``out_dir``.

    ``dictionary``: the fairseq ``dict.txt`` (default: the one in the checkpoint's training data folder, or
    beside the checkpoint); ``tokenizer=False`` writes the weights only. With the tokenizer the folder works
    with ``AutoTokenizer.from_pretrained`` and ``pipeline("fill-mask", model=out_dir)``.
    The folder is written beside ``out_dir`` and renamed into place, so an interrupted conversion leaves
    nothing half-written; an existing non-empty ``out_dir`` is refused.
    """
    from hf_models import PreLNBertForMaskedLM

    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GraftkitError(f"output folder {out} exists and is not empty")
    weights, cfg = _load(checkpoint_path)
    config = preln_config_from_fairseq(weights, cfg)
    hf_tokenizer = None
    if tokenizer:
        dictionary = Path(dictionary) if dictionary is not None else _dictionary_of(Path(checkpoint_path), cfg)
        hf_tokenizer = fairseq_dictionary_tokenizer(dictionary, config.vocab_size,
                                                    config.max_position_embeddings)
    model = PreLNBertForMaskedLM(config)
    try:
        missing, unexpected = model.load_state_dict(_hf_state_dict(weights, config), strict=False)
    except (KeyError, RuntimeError) as err:
        raise GraftkitError(f"checkpoint {checkpoint_path} does not match its own settings: {err}") from err
    if missing or unexpected:
        raise GraftkitError(f"weights not converted: missing {missing}, unexpected {unexpected}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        if hf_tokenizer is not None:
            hf_tokenizer.save_pretrained(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
