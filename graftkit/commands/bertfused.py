"""``graftkit bertnmt prepare``: write the BERT-side source of BERT-fused NMT next to fairseq's binarized data.
(``graftkit bertnmt convert`` imports a checkpoint of the reference code, bert-nmt: ``plugins.convert_bertnmt``.)

The BERT side is the raw source (BPE removed) in BERT's own tokenization ([CLS] … [SEP]), truncated to
BERT's maximum length; it is stored as ``<destdir>/<split>.bert.<src>.{bin,idx}``, which the fairseq task
``translation_bert_fused`` reads (or use ``--bert-on-the-fly`` there and skip this step).
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from graftkit.errors import GraftkitError, check_input, check_int


def load_plugins() -> None:
    """Import graftkit's fairseq plugins, as ``--user-dir "$(graftkit fairseq-user-dir)"`` does (from any folder).

    ``plugins`` is imported directly, before anything else of fairseq: its ``fairseq_compat`` imports fairseq
    itself and undoes the fork's root-logging change, which it cannot do once fairseq was imported first.
    A later ``--user-dir`` pointing at the same folder finds the module already imported.
    """
    importlib.import_module("plugins")


def register(subparsers) -> None:
    p = subparsers.add_parser("bertnmt", help="BERT-fused NMT (fairseq plugin): data preparation, reference "
                                             "checkpoint converter",
                              description="BERT-fused NMT (Zhu et al., ICLR 2020) as a fairseq plugin; train with "
                                          "fairseq-train --user-dir \"$(graftkit fairseq-user-dir)\" "
                                          "--task translation_bert_fused --arch bert_fused.")
    sub = p.add_subparsers(dest="bertnmt_command", metavar="COMMAND", required=True)
    q = sub.add_parser("prepare", help="binarize the BERT-side source for each split",
                       description=__doc__.splitlines()[0])
    q.add_argument("--bert-model", required=True, metavar="PATH",
                   help="local folder of the HF encoder and its tokenizer (save_pretrained)")
    q.add_argument("--source-lang", required=True, metavar="SRC", help="source language suffix (as in fairseq)")
    q.add_argument("--trainpref", metavar="FP", help="raw train prefix (reads FP.SRC)")
    q.add_argument("--validpref", metavar="FP", help="raw valid prefixes, comma separated (valid, valid1, ...)")
    q.add_argument("--testpref", metavar="FP", help="raw test prefixes, comma separated (test, test1, ...)")
    q.add_argument("--destdir", required=True, type=Path, metavar="DIR",
                   help="fairseq-preprocess's output folder")
    q.add_argument("--remove-bpe", default="subword_nmt", metavar="BPE",
                   help="BPE to undo first (fairseq post-process names; 'none' to keep; default subword_nmt)")
    q.add_argument("--max-length", type=int, default=0, metavar="N",
                   help="truncate to N BERT tokens (default 0: BERT's own limit)")
    q.set_defaults(func=_prepare)
    c = sub.add_parser("convert", help="bert-nmt (reference code) checkpoint -> graftkit bert_fused checkpoint",
                       description="Convert a checkpoint of the reference implementation (bert-nmt, model "
                                   "transformers2) into a graftkit --arch bert_fused checkpoint with the same "
                                   "weights and settings, for fairseq-generate / fairseq-interactive --user-dir "
                                   "\"$(graftkit fairseq-user-dir)\" --task translation_bert_fused.")
    c.add_argument("checkpoint", type=Path, metavar="CKPT", help="the reference's fairseq checkpoint (.pt)")
    c.add_argument("out", type=Path, metavar="OUT", help="output checkpoint (.pt; must not exist, unless --force)")
    c.add_argument("--bert-model", required=True, metavar="PATH",
                   help="local HF folder (model config + tokenizer) of the BERT the reference was trained with "
                        "(its --bert-model-name); its weights are replaced by the checkpoint's")
    c.add_argument("--force", action="store_true", help="replace an existing OUT")
    c.set_defaults(func=_convert)


def _convert(args: argparse.Namespace) -> int:
    check_input(args.checkpoint, "CKPT")  # before fairseq and the converter are imported (seconds)
    check_input(args.bert_model, "--bert-model", folder=True)
    from plugins.convert_bertnmt import convert_bertnmt

    out = convert_bertnmt(args.checkpoint, args.out, args.bert_model, force=args.force)
    print(f"wrote {out} (decode with fairseq-generate DATA --user-dir \"$(graftkit fairseq-user-dir)\" "
          f"--task translation_bert_fused --bert-model {args.bert_model} --path {out})")
    return 0


def _splits(args: argparse.Namespace) -> list[tuple[str, Path]]:
    splits = []
    if args.trainpref:
        splits.append(("train", Path(args.trainpref)))
    for name, prefixes in (("valid", args.validpref), ("test", args.testpref)):
        for i, prefix in enumerate(prefixes.split(",") if prefixes else []):
            splits.append((name if i == 0 else f"{name}{i}", Path(prefix)))
    if not splits:
        raise GraftkitError("nothing to prepare: give --trainpref, --validpref and/or --testpref")
    return splits


def _prepare(args: argparse.Namespace) -> int:
    check_input(args.bert_model, "--bert-model", folder=True)  # before fairseq is imported (seconds)
    load_plugins()
    from plugins.bert_fused.bert_side import (
        BertTokenizing,
        bert_max_length,
        load_bert_tokenizer,
        prepare_bert_side,
        write_info,
    )

    check_int("--max-length", args.max_length, minimum=0)
    if not args.destdir.is_dir():
        raise GraftkitError(f"--destdir not found: {args.destdir} (run fairseq-preprocess first)")
    tokenizer = load_bert_tokenizer(args.bert_model)
    tokenizing = BertTokenizing(tokenizer, bert_max_length(args.bert_model, tokenizer, args.max_length))
    remove_bpe = None if args.remove_bpe in ("", "none") else args.remove_bpe
    sources = {split: prefix.with_name(f"{prefix.name}.{args.source_lang}") for split, prefix in _splits(args)}
    prepared = prepare_bert_side(tokenizing, sources, args.destdir, args.source_lang, remove_bpe)
    for split, done in prepared.items():
        print(f"{split}: {done.sentences} sentences from {done.source}"
              + (f"; WARNING: {done.truncated} longer than {tokenizing.max_length} BERT tokens were truncated"
                 if done.truncated else ""))
    write_info(args.destdir, tokenizer, str(Path(args.bert_model).resolve()), tokenizing.max_length)
    return 0
