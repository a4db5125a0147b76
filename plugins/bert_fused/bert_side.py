"""The BERT side of the source: loading a local HF encoder and tokenizer, tokenizing, and the datasets.

The BERT side is the source sentence in BERT's own tokenization: de-BPE'd text → HF tokenizer with its
special tokens ([CLS] … [SEP] for BERT), truncated to BERT's maximum length (with a warning and a count).
It comes either from files written by ``graftkit bertnmt prepare`` (exact raw text) or on the fly from the
binarized source (decoded with the NMT dictionary; words outside it reach BERT as its unknown token).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from fairseq.data import BaseWrapperDataset, Dictionary, data_utils, indexed_dataset

from graftkit.errors import GraftkitError

logger = logging.getLogger(__name__)

INFO_FILE = "bert_side.json"


def bert_data_prefix(data_dir: str | os.PathLike, split: str, src_lang: str) -> str:
    """Prefix of the BERT-side binarized source of ``split``: ``<data>/<split>.bert.<src>.{bin,idx}``."""
    return os.path.join(str(data_dir), f"{split}.bert.{src_lang}")


def _check_local_dir(path: str | os.PathLike) -> Path:
    if not path:
        raise GraftkitError("no BERT model given: pass --bert-model PATH (a local folder saved with "
                            "save_pretrained)")
    folder = Path(path)
    if not folder.is_dir():
        raise GraftkitError(f"BERT model path not found: {folder} (--bert-model must be a local folder saved "
                            f"with save_pretrained; nothing is downloaded)")
    return folder


def load_bert_tokenizer(path: str | os.PathLike):
    """The HF tokenizer saved in ``path``, checked against the model's config there."""
    from transformers import AutoConfig, AutoTokenizer

    folder = _check_local_dir(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        raise GraftkitError(f"cannot load the BERT tokenizer/config from {folder}: {err}") from err
    if tokenizer.pad_token_id is None:
        raise GraftkitError(f"the tokenizer in {folder} has no padding token; BERT-side batches need one")
    vocab_size = getattr(config, "vocab_size", None)
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise GraftkitError(f"tokenizer/model mismatch in {folder}: the tokenizer has {len(tokenizer)} tokens "
                            f"but the model's embedding has only {vocab_size}")
    return tokenizer


def bert_max_length(path: str | os.PathLike, tokenizer, requested: int = 0) -> int:
    """BERT's maximum input length: the model's position limit, the tokenizer's, and ``requested`` if > 0."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(_check_local_dir(path), local_files_only=True)
    limits = [n for n in (getattr(config, "max_position_embeddings", None), tokenizer.model_max_length)
              if n is not None and n < 10**8]
    if requested < 0:
        raise GraftkitError(f"--bert-max-length must be >= 0 (0 = BERT's own limit), got {requested}")
    if requested:
        limits.append(requested)
    if not limits:
        raise GraftkitError("cannot tell BERT's maximum length: set --bert-max-length")
    return min(limits)


def load_bert_model(path: str | os.PathLike):
    """The HF ``AutoModel`` saved in ``path`` (any encoder: BERT, RoBERTa, ...), loaded offline."""
    from transformers import AutoModel

    folder = _check_local_dir(path)
    try:
        return AutoModel.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        raise GraftkitError(f"cannot load the BERT model from {folder}: {err}") from err


@dataclass
class BertTokenizing:
    """Text → BERT ids with truncation to ``max_length``; counts the truncated sentences."""

    tokenizer: object
    max_length: int
    truncated: int = field(default=0)

    def __call__(self, text: str) -> torch.Tensor:
        ids = self.tokenizer(text)["input_ids"]
        if len(ids) > self.max_length:
            self.truncated += 1
            if self.truncated in (1, 10, 100, 1000, 10000):
                logger.warning("source longer than BERT's max length %d: truncated (%d sentence(s) so far)",
                               self.max_length, self.truncated)
            ids = self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)


@dataclass
class PreparedSplit:
    """What ``prepare_bert_side`` wrote for one split: its source file, sentence and truncation counts."""

    source: Path
    sentences: int
    truncated: int


def _tokenize_source(tokenizing: BertTokenizing, source_file: Path, out_prefix: str, remove_bpe: str | None) -> int:
    builder = indexed_dataset.make_builder(indexed_dataset.data_file_path(out_prefix), impl="mmap",
                                           vocab_size=len(tokenizing.tokenizer))
    n = 0
    with source_file.open(encoding="utf-8") as lines:
        for line in lines:
            text = data_utils.post_process(line.strip(), remove_bpe) if remove_bpe else line.strip()
            builder.add_item(tokenizing(text))
            n += 1
    builder.finalize(indexed_dataset.index_file_path(out_prefix))
    return n


def prepare_bert_side(tokenizing: BertTokenizing, sources: dict[str, Path], data_dir: str | os.PathLike,
                      src_lang: str, remove_bpe: str | None = "subword_nmt") -> dict[str, PreparedSplit]:
    """Tokenize each split's ``sources[split]`` (de-BPE'd first) into ``<data_dir>/<split>.bert.<src>.{bin,idx}``.

    All or nothing: every split is written into a staging folder inside ``data_dir`` first and renamed into
    place only once all of them are complete and non-empty, so a missing, empty or unreadable source leaves the
    files of an earlier run untouched (fairseq-train cannot read an empty split anyway).
    """
    missing = [str(f) for f in sources.values() if not Path(f).is_file()]
    if missing:
        raise GraftkitError(f"source text not found: {', '.join(missing)}")
    empty = [str(f) for f in sources.values() if Path(f).stat().st_size == 0]
    if empty:
        raise GraftkitError(f"source text is empty: {', '.join(empty)} (nothing was written)")
    try:
        staging = Path(tempfile.mkdtemp(prefix=".bert_side.", dir=data_dir))
    except OSError as err:
        raise GraftkitError(f"cannot write to {data_dir}: {err.strerror}") from err
    try:
        prepared = {}
        for split, source in sources.items():
            before = tokenizing.truncated
            try:
                n = _tokenize_source(tokenizing, Path(source), bert_data_prefix(staging, split, src_lang),
                                     remove_bpe)
            except UnicodeDecodeError as err:
                raise GraftkitError(f"{source} is not UTF-8 text ({err.reason} at byte {err.start})") from err
            prepared[split] = PreparedSplit(Path(source), n, tokenizing.truncated - before)
        for split in sources:
            for path_of in (indexed_dataset.data_file_path, indexed_dataset.index_file_path):
                os.replace(path_of(bert_data_prefix(staging, split, src_lang)),
                           path_of(bert_data_prefix(data_dir, split, src_lang)))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return prepared


def write_info(data_dir: str | os.PathLike, tokenizer, bert_path: str, max_length: int) -> None:
    from graftkit.checkpoint import atomic_write

    info = {"bert_model": str(bert_path), "tokenizer_size": len(tokenizer), "pad_id": tokenizer.pad_token_id,
            "max_length": max_length}
    atomic_write(Path(data_dir) / INFO_FILE, lambda f: f.write((json.dumps(info, indent=2) + "\n").encode()))


def load_prepared(data_dir: str, split: str, src_lang: str, tokenizer, expected_len: int):
    """The BERT-side dataset of ``split`` written by ``graftkit bertnmt prepare``, checked."""
    prefix = bert_data_prefix(data_dir, split, src_lang)
    if not indexed_dataset.dataset_exists(prefix, impl="mmap"):
        raise GraftkitError(f"BERT-side data missing for split {split!r}: {prefix}.{{bin,idx}} not found; run "
                            f"`graftkit bertnmt prepare` for it, or pass --bert-on-the-fly")
    info_path = Path(data_dir) / INFO_FILE
    if info_path.is_file():
        size = json.loads(info_path.read_text()).get("tokenizer_size")
        if size is not None and size != len(tokenizer):
            raise GraftkitError(f"BERT-side data in {data_dir} was prepared with a tokenizer of {size} tokens, "
                                f"but --bert-model's tokenizer has {len(tokenizer)}: prepare it again")
    data = indexed_dataset.MMapIndexedDataset(prefix)
    if len(data) != expected_len:
        raise GraftkitError(f"BERT-side data for split {split!r} has {len(data)} sentences but the parallel "
                            f"data has {expected_len}: prepare it from the same source file")
    return data


def source_text(src_dict: Dictionary, tokens: torch.Tensor, remove_bpe: str | None, unk_string: str) -> str:
    """The source sentence back from NMT token ids (no padding), BPE removed; unknown words → ``unk_string``."""
    return src_dict.string(tokens, bpe_symbol=remove_bpe, unk_string=unk_string)


class BertSourceDataset(BaseWrapperDataset):
    """A language-pair dataset whose batches also carry ``net_input['bert_input']`` (B, T_bert), padded.

    ``prepared``: the BERT-side ids per example (from ``graftkit bertnmt prepare``); without it, each source
    is decoded with ``src_dict`` (BPE removed with ``remove_bpe``) and tokenized on the fly.
    """

    def __init__(self, dataset, tokenizing: BertTokenizing, src_dict: Dictionary, prepared=None,
                 remove_bpe: str | None = "subword_nmt") -> None:
        super().__init__(dataset)
        self.tokenizing = tokenizing
        self.src_dict = src_dict
        self.prepared = prepared
        self.remove_bpe = remove_bpe
        self.pad_idx = tokenizing.tokenizer.pad_token_id

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        if self.prepared is not None:
            item["bert_source"] = self.prepared[index].long()
        else:
            item["bert_source"] = self.tokenizing(source_text(self.src_dict, item["source"], self.remove_bpe,
                                                              self.tokenizing.tokenizer.unk_token))
        return item

    def collater(self, samples: list[dict]) -> dict:
        batch = self.dataset.collater(samples)
        if not batch:
            return batch
        by_id = {int(s["id"]): s["bert_source"] for s in samples}
        ordered = [by_id[int(i)] for i in batch["id"]]  # the host sorts the batch by source length
        batch["net_input"]["bert_input"] = data_utils.collate_tokens(ordered, self.pad_idx)
        return batch


def bert_hidden_size(path: str | os.PathLike) -> int:
    """The width of the BERT outputs (``hidden_size`` in the model's config)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(_check_local_dir(path), local_files_only=True)
    size = getattr(config, "hidden_size", None) or getattr(config, "d_model", None)
    if not size:
        raise GraftkitError(f"cannot tell the output width of the model in {path} (no hidden_size in its config)")
    return int(size)
