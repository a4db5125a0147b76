"""`graftkit mcbert convert CKPT OUT` (a fairseq MC-BERT checkpoint, graftkit's --task mc_bert or the reference's
MC-BERT/MC-BERT -> HF McBert folder with its tokenizer)."""

from __future__ import annotations

import argparse

from graftkit.commands.tupe import add_converter_arguments
from graftkit.errors import check_input


def _convert(args: argparse.Namespace) -> int:
    check_input(args.checkpoint, "CKPT")  # before torch and the converter are imported
    if args.dict is not None:
        check_input(args.dict, "--dict")
    from plugins.convert_mcbert import convert_mcbert_to_hf

    out = convert_mcbert_to_hf(args.checkpoint, args.out, with_controller=args.with_controller,
                               dictionary=args.dict, tokenizer=not args.no_tokenizer, force=args.force)
    model = "McBertForPreTraining" if args.with_controller else "McBertModel"
    print(f"wrote {out} (load with hf_models.{model}.from_pretrained, or "
          f"{'AutoModelForPreTraining' if args.with_controller else 'AutoModel'}.from_pretrained(..., "
          "trust_remote_code=True)"
          f"{'' if args.no_tokenizer else '; its tokenizer with AutoTokenizer.from_pretrained'})")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("mcbert", help="MC-BERT: fairseq checkpoint converter",
                              description="MC-BERT, pre-training with a meta controller (Xu et al., 2020).")
    sub = p.add_subparsers(dest="mcbert_command", metavar="COMMAND", required=True)
    c = sub.add_parser("convert", help="fairseq MC-BERT checkpoint -> HF McBert folder",
                       description="Convert a checkpoint of graftkit's fairseq --task mc_bert (any --objective, "
                                   "--position-embedding-type and LN placement; the config follows them) or of "
                                   "the reference implementation (MC-BERT/MC-BERT, model mcbert) into a "
                                   "save_pretrained folder of hf_models.McBertModel (the main "
                                   "encoder, to fine-tune), or with --with-controller McBertForPreTraining "
                                   "(encoder, multi-choice head and meta controller), with identical outputs and a "
                                   "tokenizer with the fairseq dictionary's ids (+ <mask>, <neither>).")
    add_converter_arguments(c)
    c.add_argument("--with-controller", action="store_true",
                   help="keep the pre-training parts: McBertForPreTraining instead of the encoder alone")
    c.set_defaults(func=_convert)
