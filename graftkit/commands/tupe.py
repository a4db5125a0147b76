"""`graftkit tupe convert CKPT OUT` (fairseq ``tupe`` checkpoint -> HF TupeForMaskedLM folder)."""

from __future__ import annotations

import argparse
from pathlib import Path

from graftkit.errors import check_input


def _convert(args: argparse.Namespace) -> int:
    check_input(args.checkpoint, "CKPT")  # before fairseq is imported (seconds)
    from plugins.tupe import convert_fairseq_tupe_to_hf

    out = convert_fairseq_tupe_to_hf(args.checkpoint, args.out)
    print(f"wrote {out} (load with hf_models.TupeForMaskedLM.from_pretrained, or "
          "AutoModelForMaskedLM.from_pretrained(..., trust_remote_code=True))")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("tupe", help="TUPE: fairseq checkpoint converter",
                              description="TUPE, untied positional encoding (Ke, He, Liu, ICLR 2021).")
    sub = p.add_subparsers(dest="tupe_command", metavar="COMMAND", required=True)
    c = sub.add_parser("convert", help="fairseq tupe checkpoint -> HF TupeForMaskedLM folder",
                       description="Convert a fairseq checkpoint trained with --arch tupe_base, tupe_r_base "
                                   "(or the tiny sizes) into a save_pretrained folder of "
                                   "hf_models.TupeForMaskedLM with identical outputs.")
    c.add_argument("checkpoint", type=Path, metavar="CKPT", help="fairseq checkpoint (.pt)")
    c.add_argument("out", type=Path, metavar="OUT", help="output folder (must not exist or be empty)")
    c.set_defaults(func=_convert)
