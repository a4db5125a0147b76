"""Convert a checkpoint of graftkit's fairseq task ``masked_lm_tnf`` into ``hf_models.TnfForMaskedLM`` with its
notes, and its tokenizer.

The backbone is read as its own converter reads it: fairseq's RoBERTa (``--arch roberta*``, Post-LN or Pre-LN;
:mod:`plugins.convert_preln`) or graftkit's TUPE encoder (``--arch tupe_*``; :mod:`plugins.convert_tupe`),
renamed under TnfForMaskedLM's ``bert``. The note dictionary (``tnf_notes.*``) becomes the model's ``notes``,
and the task's note settings (``--tnf-*``) its config fields (:class:`hf_models.tnf.notes.NoteFields`).

With the tokenizer, the task's rare words (the dictionary's symbols whose count lies in [``--tnf-min-count``,
``--tnf-max-count``], :func:`plugins.tnf.rare_symbols`) are stored in the config (``rare_word_token_ids``,
``word_boundary_marks``), so the HF model finds them in ``input_ids`` as the task did and goes on taking notes
with any collator. Without it (``tokenizer=False``) the folder holds the notes but no rare vocabulary: training
it then needs ``rare_spans`` in every batch (``DataCollatorForTnf``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from graftkit.errors import GraftkitError
from plugins.convert_fairseq import (
    MASK,
    SPECIAL_SYMBOLS,
    ParameterMap,
    check_output_folder,
    checkpoint_dictionary,
    fairseq_dictionary_tokenizer,
    load_converted,
    load_fairseq_settings,
    read_fairseq_dictionary_counts,
    save_model_folder,
)

NOTES_PREFIX = "tnf_notes."  # the task's NoteDictionary, a submodule of the fairseq model
TUPE_EMBEDDINGS = "encoder.sentence_encoder.tupe.embeddings.word_embeddings.weight"
ROBERTA_EMBEDDINGS = "encoder.sentence_encoder.embed_tokens.weight"


def backbone_config_and_weights(weights: dict[str, torch.Tensor], cfg: dict[str, Any],
                               what: str) -> tuple[Any, ParameterMap]:
    """(the backbone's HF config, its weights renamed for TnfForMaskedLM) of a ``masked_lm_tnf`` model."""
    if TUPE_EMBEDDINGS in weights:
        from plugins.convert_tupe import graftkit_state_dict
        from plugins.tupe import tupe_config_from_args

        config = tupe_config_from_args(cfg, weights[TUPE_EMBEDDINGS].shape[0], int(cfg.get("pad", 1)))
        return config, graftkit_state_dict(weights, what, base="bert")
    if ROBERTA_EMBEDDINGS in weights:
        from plugins.convert_preln import preln_config_from_fairseq, roberta_state_dict

        config = preln_config_from_fairseq(weights, cfg)
        return config, roberta_state_dict(weights, config, what)
    raise GraftkitError(f"{what}: the masked_lm_tnf model is neither fairseq's RoBERTa (--arch roberta*) nor "
                        f"graftkit's TUPE encoder (--arch tupe_*): arch {cfg.get('arch')!r} has no converter")


def tnf_config(backbone, note_settings: dict[str, Any]):
    """The :class:`hf_models.TnfConfig` of a backbone config (every encoder field of the core: positions, LN
    placement, sizes) with TNF's ``note_settings`` (:data:`hf_models.tnf.notes.NOTE_FIELDS`)."""
    from transformers import PreTrainedConfig

    from hf_models import TnfConfig
    from hf_models.core.config import EncoderConfig

    generic = {field.name for field in dataclasses.fields(PreTrainedConfig)}
    encoder_fields = [field.name for field in dataclasses.fields(EncoderConfig) if field.name not in generic]
    fields = {name: getattr(backbone, name) for name in [*encoder_fields, "tie_word_embeddings"]}
    try:
        return TnfConfig(**fields, **note_settings)
    except ValueError as err:
        raise GraftkitError(f"bad TNF settings in the checkpoint: {err}") from err


def rare_vocabulary_fields(dictionary: Path, task_cfg: dict[str, Any], tokenizer, num_rare_words: int,
                           ) -> dict[str, Any]:
    """``num_rare_words``, ``rare_word_token_ids`` and ``word_boundary_marks``: the task's rare words (its rule
    over ``dictionary``'s counts, in the note dictionary's row order) as ``tokenizer`` gives their ids."""
    from hf_models.tnf.vocabulary import RareVocabulary, tokenizer_fingerprint
    from plugins.tnf import MaskedLMTnfConfig, rare_symbols

    entries = read_fairseq_dictionary_counts(dictionary)
    symbols = [*SPECIAL_SYMBOLS, *(symbol for symbol, _ in entries), MASK]  # the task appends <mask>
    counts = [0] * len(SPECIAL_SYMBOLS) + [count for _, count in entries] + [0]
    # a setting the checkpoint lacks takes the task's default
    min_count = int(task_cfg.get("tnf_min_count", MaskedLMTnfConfig.tnf_min_count))
    max_count = int(task_cfg.get("tnf_max_count", MaskedLMTnfConfig.tnf_max_count))
    rare = rare_symbols(counts, min_count, max_count, [*range(len(SPECIAL_SYMBOLS)), len(symbols) - 1])
    words = [symbols[index] for index in rare.nonzero().flatten().tolist()]
    if len(words) != num_rare_words:
        raise GraftkitError(f"fairseq dictionary {dictionary} gives {len(words)} rare words (count in "
                            f"[{min_count}, {max_count}]), the checkpoint's note dictionary has {num_rare_words}: "
                            "not the dictionary this model was trained with")
    vocabulary = RareVocabulary(words, [counts[symbols.index(word)] for word in words], min_count, max_count,
                                tokenizer_fingerprint(tokenizer), {"fairseq_dictionary": str(dictionary)})
    return vocabulary.config_fields(tokenizer)


def convert_fairseq_tnf_to_hf(checkpoint_path: str | os.PathLike, out_dir: str | os.PathLike,
                              dictionary: str | os.PathLike | None = None, tokenizer: bool = True,
                              force: bool = False) -> Path:
    """Write ``out_dir`` (a ``save_pretrained`` folder, with the tokenizer and the rare vocabulary unless
    ``tokenizer=False``) holding the ``TnfForMaskedLM`` equivalent of a ``masked_lm_tnf`` checkpoint on
    RoBERTa or the TUPE encoder, its notes and note settings included; returns ``out_dir``.

    ``dictionary``: the fairseq ``dict.txt`` (default: the one of the checkpoint's training data, or beside the
    checkpoint). Written beside ``out_dir`` and renamed into place; an existing non-empty ``out_dir`` is refused
    unless ``force``. Token ids are the fairseq dictionary's; the weights keep the checkpoint's dtype. In eval
    mode the model's outputs are the checkpoint's; in training mode it mixes and takes notes as the task did.
    """
    from hf_models import TnfForMaskedLM
    from hf_models.tnf.notes import NoteFields

    check_output_folder(out_dir, force)
    weights, cfg, task_cfg = load_fairseq_settings(checkpoint_path)
    what = f"{checkpoint_path}"
    if NOTES_PREFIX + "notes" not in weights:
        raise GraftkitError(f"{what} has no note dictionary ({NOTES_PREFIX}notes): not a checkpoint of the "
                            "masked_lm_tnf task (convert a plain masked_lm one with `graftkit preln convert` or "
                            "`graftkit tupe convert`)")
    backbone, names = backbone_config_and_weights(weights, cfg, what)
    names.put("notes.notes", NOTES_PREFIX + "notes")
    names.put("notes.has_note", NOTES_PREFIX + "has_note")
    num_rare_words = weights[NOTES_PREFIX + "notes"].shape[0]
    try:
        note_settings = NoteFields.from_fairseq(task_cfg).config_fields()
    except ValueError as err:
        raise GraftkitError(f"bad TNF settings in the checkpoint: {err}") from err
    hf_tokenizer = None
    if tokenizer:
        path = checkpoint_dictionary(checkpoint_path, cfg, dictionary)
        hf_tokenizer = fairseq_dictionary_tokenizer(path, backbone.vocab_size, backbone.max_position_embeddings)
        note_settings |= rare_vocabulary_fields(path, task_cfg, hf_tokenizer, num_rare_words)
    config = tnf_config(backbone, {"num_rare_words": num_rare_words, **note_settings})
    model = TnfForMaskedLM(config)
    state = names.result(model.state_dict())
    model = load_converted(model, state, weights[NOTES_PREFIX + "notes"].dtype)
    return save_model_folder(out_dir, model, hf_tokenizer, force)
