"""What every fairseq -> graftkit converter shares: reading the checkpoint, mapping its parameters by name and
shape (refusing the first one left unmapped or missing), the tokenizer from the fairseq dictionary, and the
atomic, non-clobbering write of the output folder.

Used by ``plugins.convert_preln`` (fairseq RoBERTa -> PreLNBert), ``plugins.tupe`` (graftkit's ``tupe`` arch
and guolinke/TUPE's ``bert`` -> TupeForMaskedLM), ``plugins.convert_mcbert`` (graftkit's ``mc_bert`` and
MC-BERT/MC-BERT -> McBert) and ``plugins.convert_tnf`` (graftkit's ``masked_lm_tnf`` -> TnfForMaskedLM).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from graftkit.checkpoint import load_checkpoint
from graftkit.errors import GraftkitError

SPECIAL_SYMBOLS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq Dictionary's first four ids
MASK = "<mask>"  # appended by fairseq's masked_lm task after the dictionary file's symbols
# fairseq activation_fn -> the HF core's hidden_act
ACTIVATIONS = {"gelu": "gelu", "gelu_accurate": "gelu_new", "relu": "relu", "tanh": "tanh", "swish": "silu"}
#: a fairseq transformer layer's modules -> the HF core's EncoderLayer modules (q/k/v as separate projections;
#: a converter that meets a stacked ``in_proj`` splits it itself)
LAYER_MAP = {
    "self_attn.q_proj": "attention.query",
    "self_attn.k_proj": "attention.key",
    "self_attn.v_proj": "attention.value",
    "self_attn.out_proj": "attention.output",
    "self_attn_layer_norm": "attention_layer_norm",
    "fc1": "feed_forward.intermediate",
    "fc2": "feed_forward.output",
    "final_layer_norm": "feed_forward_layer_norm",
}
QKV_PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")


def load_fairseq_checkpoint(checkpoint_path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(weights, model settings) of a fairseq checkpoint; the settings from ``cfg.model`` (fairseq >= 0.10) or
    ``args`` (older forks, as the reference implementations')."""
    weights, model, _ = load_fairseq_settings(checkpoint_path)
    return weights, model


def load_fairseq_settings(checkpoint_path: str | os.PathLike,
                          ) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(weights, model settings, task settings) of a fairseq checkpoint: ``cfg.model`` and ``cfg.task``
    (fairseq >= 0.10), or ``args`` for both (older forks, which keep every setting in one Namespace)."""
    path = Path(checkpoint_path)
    # fairseq stores its settings as an argparse.Namespace: allow exactly that class, nothing else
    state = load_checkpoint(path, kind="fairseq checkpoint", allowed_classes=[argparse.Namespace])
    if not isinstance(state, dict) or "model" not in state:
        raise GraftkitError(f"{path} is not a fairseq checkpoint (no 'model' entry)")
    cfg = state.get("cfg") or {}
    model, task = cfg.get("model") or state.get("args"), cfg.get("task") or state.get("args")
    if model is None:
        raise GraftkitError(f"{path} has no model settings ('cfg.model' or 'args')")

    def as_dict(settings: Any) -> dict[str, Any]:
        return dict(vars(settings) if isinstance(settings, argparse.Namespace) else settings or {})

    return state["model"], as_dict(model), as_dict(task)


def layer_indices(weights: dict[str, torch.Tensor], prefix: str) -> list[int]:
    """The N of every ``{prefix}N.`` parameter, checked to be 0..count-1 (at least one)."""
    layers = sorted({int(key[len(prefix):].split(".")[0]) for key in weights if key.startswith(prefix)})
    if layers != list(range(len(layers))) or not layers:
        raise GraftkitError(f"the checkpoint's layers under {prefix} are not 0..N-1: {layers}")
    return layers


class ParameterMap:
    """Builds a target state dict from a checkpoint's parameters, by name, keeping account of what it read.

    :meth:`take` reads a parameter (missing: an error naming it), :meth:`tied` checks a second copy of a
    shared parameter, :meth:`drop` marks parameters the target has no place for (documented per converter);
    :meth:`result` refuses the first checkpoint parameter nothing read, and any shape the target disagrees with.
    """

    def __init__(self, weights: dict[str, torch.Tensor], what: str) -> None:
        self.weights = weights
        self.what = what
        self.read: set[str] = set()
        self.out: dict[str, torch.Tensor] = {}

    def has(self, name: str) -> bool:
        return name in self.weights

    def take(self, name: str) -> torch.Tensor:
        if name not in self.weights:
            raise GraftkitError(f"{self.what}: parameter {name} is missing from the checkpoint")
        self.read.add(name)
        return self.weights[name]

    def put(self, target: str, source: str, transform: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        value = self.take(source)
        self.out[target] = value if transform is None else transform(value)

    def tied(self, name: str, same_as: torch.Tensor) -> None:
        """``name`` is another name of a shared parameter: it must hold the same values."""
        value = self.take(name)
        if value.shape != same_as.shape or not torch.equal(value, same_as.to(value.dtype)):
            raise GraftkitError(f"{self.what}: parameter {name} should be a tied copy of a parameter already "
                                "converted, but its values differ")

    def drop(self, prefix: str) -> None:
        self.read.update(key for key in self.weights if key.startswith(prefix))

    def result(self, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The converted state dict, once every checkpoint parameter was read and every target name and shape
        matches ``expected`` (the target model's ``state_dict()``)."""
        unmapped = [key for key in self.weights if key not in self.read]
        if unmapped:
            first = unmapped[0]
            raise GraftkitError(f"{self.what}: checkpoint parameter {first} {tuple(self.weights[first].shape)}"
                                f" has no counterpart in the converted model ({len(unmapped)} unmapped): a setting "
                                "this converter does not support")
        for name, value in self.out.items():
            if name not in expected:
                raise GraftkitError(f"{self.what}: converted parameter {name} does not exist in the target model")
            if tuple(value.shape) != tuple(expected[name].shape):
                raise GraftkitError(f"{self.what}: {name} has shape {tuple(value.shape)} in the checkpoint, the "
                                    f"settings give {tuple(expected[name].shape)}")
        missing = [name for name in expected if name not in self.out]
        if missing:
            raise GraftkitError(f"{self.what}: the target model's {missing[0]} has no parameter in the checkpoint")
        return self.out


def hidden_act(cfg: dict[str, Any], default: str = "gelu") -> str:
    """The HF activation of a fairseq ``activation_fn`` setting (an error naming the unsupported one)."""
    name = cfg.get("activation_fn") or default
    if name not in ACTIVATIONS:
        raise GraftkitError(f"activation_fn {name!r} has no equivalent in graftkit's encoder "
                            f"(supported: {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]


def load_converted(model: torch.nn.Module, state: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.nn.Module:
    """``model`` in the checkpoint's ``dtype`` holding ``state`` (names and shapes already checked)."""
    model.to(dtype).load_state_dict(state, strict=True)
    return model.eval()


def read_fairseq_dictionary_counts(path: Path) -> list[tuple[str, int]]:
    """(symbol, count) of each line of a fairseq ``dict.txt`` (``<symbol> <count> [#fairseq:overwrite]``), in
    file order: the counts fairseq-preprocess wrote over the training split."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeError) as err:
        raise GraftkitError(f"cannot read fairseq dictionary {path}: {err}") from err
    entries = []
    for number, line in enumerate(lines, 1):
        fields = line.rstrip().rsplit(" ", 2 if line.rstrip().endswith(" #fairseq:overwrite") else 1)
        if len(fields) < 2 or not fields[1].isdigit():
            raise GraftkitError(f"{path}:{number} is not a fairseq dictionary line ('<symbol> <count>'): {line!r}")
        entries.append((fields[0], int(fields[1])))
    return entries


def read_fairseq_dictionary(path: Path) -> list[str]:
    """The symbols of a fairseq ``dict.txt``, in file order."""
    return [symbol for symbol, _ in read_fairseq_dictionary_counts(path)]


def fairseq_dictionary_tokenizer(dictionary: str | os.PathLike, vocab_size: int, model_max_length: int,
                                 appended: Iterable[str] = (MASK,)):
    """A ``transformers`` fast tokenizer with the ids of a fairseq masked-LM model's dictionary.

    It tokenizes as ``fairseq-preprocess`` did: split on whitespace, each word looked up in the dictionary
    (``<unk>`` otherwise), ``<s>`` before and ``</s>`` after (RoBERTa's ``<s> A </s></s> B </s>`` for pairs);
    ids are fairseq's (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, the file's symbols, then the symbols
    the task ``appended``: ``<mask>`` for masked_lm, ``<mask>`` and ``<neither>`` for MC-BERT's task).
    Text must be preprocessed (BPE, normalization) as the training data was. ``vocab_size`` (the model's
    embedding rows) must equal that count.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    path = Path(dictionary)
    appended = tuple(appended)
    symbols = [*SPECIAL_SYMBOLS, *read_fairseq_dictionary(path), *appended]
    if len(symbols) != vocab_size:
        raise GraftkitError(f"fairseq dictionary {path} gives {len(symbols)} ids (4 special symbols, "
                            f"{len(symbols) - 4 - len(appended)} from the file, {', '.join(appended)}), but the "
                            f"model has {vocab_size} token embeddings: not the dictionary this model was trained "
                            "with")
    words = [s for s in symbols[len(SPECIAL_SYMBOLS):len(symbols) - len(appended)] if not s.startswith("madeupword")]
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
    extra = [s for s in appended if s != MASK]
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        cls_token="<s>", sep_token="</s>", mask_token=MASK, model_max_length=model_max_length,
        model_input_names=["input_ids", "attention_mask"],
        **({"additional_special_tokens": extra} if extra else {}))


def dictionary_of(checkpoint_path: Path, cfg: dict[str, Any]) -> Path:
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


def checkpoint_dictionary(checkpoint_path: str | os.PathLike, cfg: dict[str, Any],
                          dictionary: str | os.PathLike | None) -> Path:
    """``dictionary`` (a file), or by default :func:`dictionary_of` the checkpoint."""
    path = Path(dictionary) if dictionary is not None else dictionary_of(Path(checkpoint_path), cfg)
    if path.is_dir():
        raise GraftkitError(f"--dict {path} is a folder: give the dict.txt file")
    return path


def checkpoint_tokenizer(checkpoint_path: str | os.PathLike, cfg: dict[str, Any],
                         dictionary: str | os.PathLike | None, vocab_size: int, model_max_length: int,
                         appended: Iterable[str] = (MASK,)):
    """The tokenizer of ``dictionary`` (default: :func:`dictionary_of` the checkpoint)."""
    return fairseq_dictionary_tokenizer(checkpoint_dictionary(checkpoint_path, cfg, dictionary), vocab_size,
                                        model_max_length, appended)


def check_output_folder(out: str | os.PathLike, force: bool = False) -> Path:
    """Refuse ``out`` when it is a file, or a non-empty folder unless ``force`` (checked before any work)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GraftkitError(f"output {out} is an existing file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise GraftkitError(f"output folder {out} exists and is not empty (give --force to replace it)")
    return out


def write_folder_atomically(out: str | os.PathLike, write: Callable[[Path], None], force: bool = False) -> Path:
    """Call ``write(folder)`` on a new folder beside ``out`` and rename it into place: an interrupted conversion
    leaves nothing half-written. A non-empty ``out`` is refused, or with ``force`` replaced once the new
    folder is complete."""
    out = check_output_folder(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    old = None
    try:
        write(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / out.name).exists() and not out.exists():
            os.replace(old / out.name, out)  # put the previous folder back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out


def save_model_folder(out: str | os.PathLike, model, tokenizer=None, force: bool = False) -> Path:
    """``model.save_pretrained`` (and the tokenizer's) into ``out``, atomically (:func:`write_folder_atomically`)."""

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)

    return write_folder_atomically(out, write, force)
