"""`graftkit preln gradnorm ...` (FFN gradient at initialization, Post-LN vs Pre-LN) and
`graftkit preln convert CKPT OUT` (fairseq RoBERTa checkpoint -> HF PreLNBert folder)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from graftkit.errors import GraftkitError, check_input, seed_argument


def _depths(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"depths must be comma-separated integers, got {text!r}") from None


def _gradnorm(args: argparse.Namespace) -> int:
    from graftkit import preln_gradnorm as gn
    from graftkit.checkpoint import check_writable

    if len(set(args.depths)) < 2 or min(args.depths) < 1:
        raise GraftkitError(f"--depths: give two or more distinct positive depths, got {args.depths}")
    check_writable(args.out, folder=True, what="--out")
    settings = gn.GradNormSettings(d_model=args.d_model, heads=args.heads, seq_len=args.seq_len,
                                   batch=args.batch, loss=args.loss)
    result = gn.measure(args.depths, args.seeds, settings, progress=not args.json, first_seed=args.seed)
    table, figure = gn.write(result, args.out)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
        return 0
    print(f"{'depth':>5} {'post-LN last layer':>19} {'pre-LN last layer':>18}")
    for row in result.summary_rows():
        print(f"{row['depth']:>5} {row['post_last_layer']:>19.4f} {row['pre_last_layer']:>18.4f}")
    print(f"fitted exponent α (norm ∝ L^α): post-LN {result.exponents['post']:+.3f}, "
          f"pre-LN {result.exponents['pre']:+.3f} (theory: 0 and -0.5)")
    print(f"table: {table}\nplot: {figure}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from graftkit.checkpoint import check_writable
    from plugins.convert_preln import convert_fairseq_roberta_to_preln_bert

    check_input(args.checkpoint, "CKPT")
    if args.dict is not None:
        check_input(args.dict, "--dict")
    check_writable(args.out, folder=True, what="OUT")
    out = convert_fairseq_roberta_to_preln_bert(args.checkpoint, args.out, dictionary=args.dict,
                                                tokenizer=not args.no_tokenizer)
    print(f"wrote {out} (load with hf_models.PreLNBertForMaskedLM.from_pretrained, or "
          "AutoModelForMaskedLM.from_pretrained(..., trust_remote_code=True)"
          f"{'' if args.no_tokenizer else '; its tokenizer with AutoTokenizer.from_pretrained'})")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("preln", help="Pre-LN Transformer: gradient analysis, fairseq checkpoint converter",
                              description="Pre-LN Transformer (Xiong et al., ICML 2020).")
    sub = p.add_subparsers(dest="preln_command", metavar="COMMAND", required=True)

    g = sub.add_parser("gradnorm", help="‖∂L/∂W2‖ of each FFN at initialization, Post-LN vs Pre-LN",
                       description="Measure the Frobenius norm of the loss gradient w.r.t. each layer's FFN "
                                   "output weight W2 at initialization, for Post-LN and Pre-LN encoders of "
                                   "several depths; fit the exponent of the last layer's norm vs depth. Writes "
                                   "OUT/gradnorm.json and OUT/gradnorm.png.")
    g.add_argument("--depths", type=_depths, default=[2, 4, 6, 8, 12], help="comma-separated (default 2,4,6,8,12)")
    g.add_argument("--d-model", type=int, default=64, help="hidden size d (default 64)")
    g.add_argument("--heads", type=int, default=4, help="attention heads (default 4)")
    g.add_argument("--seeds", type=int, default=5, help="initializations averaged per depth (default 5)")
    g.add_argument("--seed", type=seed_argument, default=0,
                   help="first seed; the initializations use SEED to SEED + SEEDS - 1 (default 0)")
    g.add_argument("--seq-len", type=int, default=32, help="tokens per sequence (default 32)")
    g.add_argument("--batch", type=int, default=8, help="sequences per batch (default 8)")
    g.add_argument("--loss", choices=("linear", "softmax"), default="linear",
                   help="linear: random linear read-out, the theory's setting (default); softmax: "
                        "cross-entropy of a random read-out against random labels")
    g.add_argument("--json", action="store_true", help="print the table as JSON on stdout")
    g.add_argument("--out", type=Path, default=Path("preln_gradnorm"),
                   help="folder for gradnorm.json and gradnorm.png (default: preln_gradnorm)")
    g.set_defaults(func=_gradnorm)

    c = sub.add_parser("convert", help="fairseq RoBERTa checkpoint -> HF PreLNBertForMaskedLM folder",
                       description="Convert a fairseq RoBERTa checkpoint (e.g. --arch roberta_preln_base, or "
                                   "any roberta arch with --encoder-normalize-before) into a save_pretrained "
                                   "folder of hf_models.PreLNBertForMaskedLM with identical outputs, and a "
                                   "tokenizer with the fairseq dictionary's ids (whitespace-split words, as "
                                   "fairseq-preprocess), so AutoTokenizer and pipeline('fill-mask') work.")
    c.add_argument("checkpoint", type=Path, metavar="CKPT", help="fairseq checkpoint (.pt)")
    c.add_argument("out", type=Path, metavar="OUT", help="output folder (must not exist or be empty)")
    tokenizer = c.add_mutually_exclusive_group()
    tokenizer.add_argument("--dict", type=Path, metavar="DICT",
                           help="fairseq dictionary (dict.txt) for the tokenizer written beside the weights "
                                "(default: dict.txt of the checkpoint's training data, or beside CKPT)")
    tokenizer.add_argument("--no-tokenizer", action="store_true",
                           help="write the weights only (e.g. a GPT-2 BPE dictionary: tokenize as in training)")
    c.set_defaults(func=_convert)

