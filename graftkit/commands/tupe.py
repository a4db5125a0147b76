"""`graftkit tupe convert CKPT OUT` (fairseq TUPE checkpoint, graftkit's arch or guolinke/TUPE's -> HF
TupeForMaskedLM folder with its tokenizer)."""

from __future__ import annotations

import argparse
from pathlib import Path

from graftkit.errors import check_input


def _convert(args: argparse.Namespace) -> int:
    check_input(args.checkpoint, "CKPT")  # before fairseq is imported (seconds)
    from plugins.convert_tupe import convert_fairseq_tupe_to_hf

    out = convert_fairseq_tupe_to_hf(args.checkpoint, args.out, dictionary=args.dict,
                                     tokenizer=not args.no_tokenizer, force=args.force)
    print(f"wrote {out} (load with hf_models.TupeForMaskedLM.from_pretrained, or "
          "AutoModelForMaskedLM.from_pretrained(..., trust_remote_code=True)"
          f"{'' if args.no_tokenizer else '; its tokenizer with AutoTokenizer.from_pretrained'})")
    return 0


def add_converter_arguments(parser: argparse.ArgumentParser) -> None:
    """CKPT OUT --dict / --no-tokenizer / --force, as every fairseq -> HF converter takes them."""
    parser.add_argument("checkpoint", type=Path, metavar="CKPT", help="fairseq checkpoint (.pt)")
    parser.add_argument("out", type=Path, metavar="OUT",
                        help="output folder (must not exist or be empty, unless --force)")
    tokenizer = parser.add_mutually_exclusive_group()
    tokenizer.add_argument("--dict", type=Path, metavar="DICT",
                           help="fairseq dictionary (dict.txt) for the tokenizer written beside the weights "
                                "(default: dict.txt of the checkpoint's training data, or beside CKPT)")
    tokenizer.add_argument("--no-tokenizer", action="store_true",
                           help="write the weights only (e.g. a GPT-2 BPE dictionary: tokenize as in training)")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists and is not empty")


def register(subparsers) -> None:
    p = subparsers.add_parser("tupe", help="TUPE: fairseq checkpoint converter",
                              description="TUPE, untied positional encoding (Ke, He, Liu, ICLR 2021).")
    sub = p.add_subparsers(dest="tupe_command", metavar="COMMAND", required=True)
    c = sub.add_parser("convert", help="fairseq TUPE checkpoint -> HF TupeForMaskedLM folder",
                       description="Convert a fairseq checkpoint trained with graftkit's --arch tupe_base, "
                                   "tupe_r_base (or the tiny sizes), or with guolinke/TUPE's model bert "
                                   "(TUPE-A, or TUPE-R with --rel-pos), into a save_pretrained folder of "
                                   "hf_models.TupeForMaskedLM with identical outputs, and a tokenizer with the "
                                   "fairseq dictionary's ids, so AutoTokenizer and pipeline('fill-mask') work.")
    add_converter_arguments(c)
    c.set_defaults(func=_convert)
