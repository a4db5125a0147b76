"""`graftkit pretrain` (pre-train an encoder of the core on text files) and `graftkit hf-run` (run a
transformers example script, e.g. run_mlm.py, with graftkit's model types registered)."""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from graftkit.errors import check_input, seed_argument


def _pretrain(args: argparse.Namespace) -> int:
    from graftkit.pretrain import PretrainSettings, pretrain

    settings = PretrainSettings(
        train_files=args.train_files, out=args.out, steps=args.steps, size=args.size, objective=args.objective,
        position_embedding_type=args.position_embedding_type, layer_norm_position=args.layer_norm_position,
        notes=args.notes, tokenizer=args.tokenizer, resume=args.resume, vocab_size=args.vocab_size,
        max_length=args.max_length, batch_size=args.batch_size, learning_rate=args.learning_rate,
        eval_fraction=args.eval_fraction, eval_every=args.eval_every, rare_min_count=args.rare_min_count,
        rare_max_count=args.rare_max_count, seed=args.seed, progress=not args.no_progress)
    pretrain(settings)
    return 0


def _hf_run(args: argparse.Namespace) -> int:
    check_input(args.script, "SCRIPT")
    import hf_models  # noqa: F401  (registers graftkit's model types with the Auto classes and CONFIG_MAPPING)

    # as `python SCRIPT ARGS...` runs it: its argv, its folder first on the import path, run as __main__
    sys.argv = [str(args.script), *args.script_args]
    sys.path.insert(0, str(args.script.resolve().parent))
    runpy.run_path(str(args.script), run_name="__main__")
    return 0


def register(subparsers) -> None:
    from graftkit.pretrain import LAYER_NORM_POSITIONS, OBJECTIVES, POSITION_EMBEDDING_TYPES, SIZES

    p = subparsers.add_parser(
        "pretrain", help="pre-train an encoder (TUPE, Pre-LN, MC-BERT, ELECTRA, TNF, combined) on text files",
        description="Pre-train an encoder of graftkit's core from plain text files (one text per line) with the "
                    "HF Trainer: trains a WordPiece tokenizer unless --tokenizer is given, holds out a slice "
                    "for evaluation, saves checkpoints in OUT/checkpoints, and writes OUT as a folder the Auto "
                    "classes load with trust_remote_code=True (model, tokenizer, code, README.md model card); "
                    "for --objective rtd/mc and --notes the fine-tuning-ready encoder alone goes to "
                    "OUT/encoder. Runs unchanged under torchrun or accelerate launch.")
    p.add_argument("train_files", nargs="+", type=Path, metavar="TRAIN_FILE",
                   help="UTF-8 text, one text per line (a folder: its *.txt files)")
    p.add_argument("--out", type=Path, required=True, help="output folder (must not exist unless --resume)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    p.add_argument("--size", choices=list(SIZES), default="tiny",
                   help="tiny: 2 layers x 96; small: 6 x 384; base: 12 x 768 (BERT-base) (default tiny)")
    p.add_argument("--objective", choices=OBJECTIVES, default="mlm",
                   help="mlm: BERT's masked LM; rtd: ELECTRA's replaced token detection; mc: MC-BERT's "
                        "multi-choice cloze (default mlm)")
    p.add_argument("--position-embedding-type", choices=POSITION_EMBEDDING_TYPES, default="absolute",
                   help="absolute: BERT's learned vectors; tupe_absolute / tupe_relative: TUPE-A / TUPE-R "
                        "(default absolute)")
    p.add_argument("--layer-norm-position", choices=LAYER_NORM_POSITIONS, default="post",
                   help="post: BERT's Post-LN; pre: Pre-LN (Xiong et al.) (default post)")
    p.add_argument("--notes", action="store_true", help="TNF: take notes on rare words (masked-LM objective)")
    p.add_argument("--tokenizer", type=Path, default=None,
                   help="folder of a fast tokenizer to use (default: train a WordPiece tokenizer on the text)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from its last checkpoint")
    p.add_argument("--vocab-size", type=int, default=8000, help="size of the trained tokenizer (default 8000)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per line, longer lines cut (default 128)")
    p.add_argument("--batch-size", type=int, default=32, help="lines per step and process (default 32)")
    p.add_argument("--learning-rate", type=float, default=5e-4, help="peak learning rate (default 5e-4)")
    p.add_argument("--eval-fraction", type=float, default=0.05, help="share of lines held out (default 0.05)")
    p.add_argument("--eval-every", type=int, default=None,
                   help="steps between evaluations and checkpoints (default: a tenth of --steps)")
    p.add_argument("--rare-min-count", type=int, default=100, help="TNF: rarest count with a note (default 100)")
    p.add_argument("--rare-max-count", type=int, default=500,
                   help="TNF: most frequent count with a note (default 500)")
    p.add_argument("--seed", type=seed_argument, default=0, help="random seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_pretrain)

    r = subparsers.add_parser(
        "hf-run", help="run a transformers example script (run_mlm.py ...) with graftkit's model types",
        description="Import hf_models (registering preln_bert, tupe, tnf and mc_bert with the Auto classes and "
                    "CONFIG_MAPPING), then run SCRIPT unchanged with ARGS, as `python SCRIPT ARGS` would: e.g. "
                    "graftkit hf-run run_mlm.py --model_type tupe --config_overrides position_mode=relative ...")
    r.add_argument("script", type=Path, metavar="SCRIPT", help="a Python script, e.g. transformers' run_mlm.py")
    r.add_argument("script_args", nargs=argparse.REMAINDER, metavar="ARGS", help="the script's own arguments")
    r.set_defaults(func=_hf_run)
