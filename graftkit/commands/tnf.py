"""`graftkit tnf build-vocab`: the rare-word vocabulary of TNF, counted over a corpus with the run's tokenizer;
`graftkit tnf convert CKPT OUT`: a fairseq masked_lm_tnf checkpoint -> HF TnfForMaskedLM folder (notes included)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from graftkit.commands.tupe import add_converter_arguments
from graftkit.errors import GraftkitError, check_input


def _build_vocab(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from graftkit.checkpoint import check_writable
    from hf_models.tnf.vocabulary import FILE_NAME, RareVocabulary, check_rare_range

    check_rare_range(args.min_count, args.max_count)
    for path in args.corpus:
        check_input(path, "corpus file")
    check_input(args.tokenizer, "--tokenizer", folder=True)
    if not (args.tokenizer / "tokenizer.json").is_file() and not (args.tokenizer / "tokenizer_config.json").is_file():
        raise GraftkitError(f"no tokenizer in {args.tokenizer} (a save_pretrained folder of a fast tokenizer)")
    out = args.out or args.tokenizer / FILE_NAME
    check_writable(out, what="--out")  # a folder is refused here, before --force is offered for a file
    if out.exists() and not args.force:
        raise GraftkitError(f"{out} exists: pass --force to replace it")
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)

    def lines():
        for path in args.corpus:
            try:
                with path.open(encoding="utf-8") as f:
                    yield from (line for line in f if line.strip())
            except UnicodeDecodeError as err:
                raise GraftkitError(f"corpus {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None

    corpus = {"files": [str(p) for p in args.corpus]}
    vocab = RareVocabulary.build(tokenizer, lines(), args.min_count, args.max_count, corpus=corpus)
    if not vocab:
        raise _no_rare_words(RareVocabulary.build(tokenizer, lines(), 1, sys.maxsize, corpus=corpus), args)
    vocab.save(out)
    print(f"wrote {out}: {len(vocab)} rare words (count in [{args.min_count}, {args.max_count}]) of "
          f"{vocab.corpus['distinct_words']} distinct words, {vocab.corpus['words']} words in "
          f"{vocab.corpus['texts']} lines")
    return 0


def _convert(args: argparse.Namespace) -> int:
    check_input(args.checkpoint, "CKPT")  # before fairseq is imported (seconds)
    if args.dict is not None:
        check_input(args.dict, "--dict")
    from plugins.convert_tnf import convert_fairseq_tnf_to_hf

    out = convert_fairseq_tnf_to_hf(args.checkpoint, args.out, dictionary=args.dict,
                                    tokenizer=not args.no_tokenizer, force=args.force)
    print(f"wrote {out} (load with hf_models.TnfForMaskedLM.from_pretrained, or "
          "AutoModelForMaskedLM.from_pretrained(..., trust_remote_code=True)"
          f"{'' if args.no_tokenizer else '; its tokenizer with AutoTokenizer.from_pretrained'})")
    return 0


def _no_rare_words(every_word, args: argparse.Namespace) -> GraftkitError:
    """The error for a range no word's count falls in, with the counts the corpus has (``every_word``: the
    vocabulary of all its words) and a range to try: the paper's max/min ratio of 5, ending at the largest
    count (100 to 500 suits a corpus of Wikipedia's size)."""
    counts = every_word.counts  # descending
    top = counts[0]
    return GraftkitError(
        f"no word of the corpus occurs {args.min_count} to {args.max_count} times (--min-count, --max-count): "
        f"its {len(counts)} distinct words occur {counts[-1]} to {top} times ({every_word.corpus['words']} words "
        f"in {every_word.corpus['texts']} lines); try --min-count {max(1, top // 5)} --max-count {top}, or a "
        "larger corpus")


def register(subparsers) -> None:
    p = subparsers.add_parser("tnf", help="Taking Notes on the Fly: rare-word vocabulary",
                              description="TNF (Wu et al., ICLR 2021).")
    sub = p.add_subparsers(dest="tnf_command", metavar="COMMAND", required=True)
    b = sub.add_parser("build-vocab", help="rare words of a corpus (count in a range), saved beside the tokenizer",
                       description="Count the tokenizer's words (its normalizer and pre-tokenizer) over the "
                                   "corpus lines and keep those with min-count <= count <= max-count. Writes "
                                   "versioned JSON with the tokenizer's fingerprint (default: "
                                   "TOKENIZER/tnf_rare_words.json).")
    b.add_argument("--tokenizer", type=Path, required=True, help="folder of a fast tokenizer (save_pretrained)")
    b.add_argument("--corpus", type=Path, nargs="+", required=True, help="text files, one text per line")
    b.add_argument("--min-count", type=int, default=100, help="rarest count kept (default 100, the paper's)")
    b.add_argument("--max-count", type=int, default=500, help="most frequent count kept (default 500, the paper's)")
    b.add_argument("--out", type=Path, default=None, help="output JSON (default: TOKENIZER/tnf_rare_words.json)")
    b.add_argument("--force", action="store_true", help="replace an existing output file")
    b.set_defaults(func=_build_vocab)

    c = sub.add_parser("convert", help="fairseq masked_lm_tnf checkpoint -> HF TnfForMaskedLM folder",
                       description="Convert a checkpoint of graftkit's fairseq task masked_lm_tnf (on --arch "
                                   "roberta*, Post-LN or Pre-LN, or the TUPE encoder, --arch tupe_*) into a "
                                   "save_pretrained folder of hf_models.TnfForMaskedLM: the backbone with identical "
                                   "outputs, the note dictionary and the --tnf-* settings, and with the tokenizer "
                                   "(the fairseq dictionary's ids) the task's rare words, so training goes on with "
                                   "any collator.")
    add_converter_arguments(c)
    c.set_defaults(func=_convert)
