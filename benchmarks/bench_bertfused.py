"""Generation speed of BERT-fused NMT vs the plain fairseq transformer of the same size (beam 5, CPU).

For each size, both models are built in this process from the same binarized toy data (SYNTHETIC toy
language pair, ~7-token sentences) and timed interleaved, several rounds, so machine load hits both alike; the
ratio is tokens/s(BERT-fused) / tokens/s(transformer). The models are untrained, so where they would stop is
arbitrary: every hypothesis of a batch is held to exactly the length of the batch's longest reference translation
(fairseq's min_len = max_len; ``--length N``: N tokens instead), so both models decode the same number of steps, as
many as a trained model would. Sizes: ``iwslt`` is the paper's NMT model
(``transformer_iwslt_de_en`` vs ``bert_fused_iwslt_de_en``) with a 6-layer, 512-wide BERT; ``base-bert`` the same
NMT model with a BERT-base-sized encoder (12 x 768, the paper's); ``toy`` the width-64 models of the demo.
The goal in the issue is >= 0.7x: BERT runs once per sentence, not once per step.
Run: .venv/bin/python benchmarks/bench_bertfused.py [--sizes toy iwslt base-bert] [--device cuda --dtype float16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

# size → the BERT's (hidden, layers); its heads are hidden / 64, its FFN 4 x hidden
BERT_SIZES: dict[str, tuple[int, int]] = {"toy": (64, 3), "iwslt": (512, 6), "base-bert": (768, 12)}


def nmt_flags(size: str) -> tuple[str, list[str]]:
    """(arch suffix, extra flags) of one size: the iwslt arch as registered, or width-64 3+3 layers."""
    if size != "toy":
        return "_iwslt_de_en", []
    dims = {"layers": "3", "embed-dim": "64", "ffn-embed-dim": "256", "attention-heads": "4"}
    return "", [flag for side in ("encoder", "decoder") for key, value in dims.items()
                for flag in (f"--{side}-{key}", value)]


def build(data: Path, bert: Path | None, size: str, device: torch.device, dtype: torch.dtype):
    """A (task, model) pair in eval mode on ``device`` in ``dtype``: ``bert_fused*`` when ``bert`` is given,
    else fairseq's transformer."""
    from fairseq import options, tasks

    suffix, flags = nmt_flags(size)
    if bert is None:
        argv = [str(data), "--task", "translation", "--arch", "transformer" + suffix]
    else:
        argv = [str(data), "--task", "translation_bert_fused", "--arch", "bert_fused" + suffix,
                "--bert-model", str(bert), "--bert-on-the-fly"]
    cpu = ["--cpu"] if device.type == "cpu" else []
    args = options.parse_args_and_arch(options.get_training_parser(), argv + flags + cpu)
    task = tasks.setup_task(args)
    task.load_dataset("test")
    return task, task.build_model(args).eval().to(device=device, dtype=dtype)


def batches(task, n_sentences: int, batch_size: int, device: torch.device) -> list[dict]:
    from fairseq import utils

    dataset = task.dataset("test")
    samples = [dataset[i] for i in range(n_sentences)]
    return [utils.move_to_cuda(batch, device) if device.type == "cuda" else batch
            for batch in (dataset.collater(samples[i:i + batch_size]) for i in range(0, n_sentences, batch_size))]


def tokens_per_second(task, model, sample_batches: list[dict], beam: int, length: int | None) -> float:
    from fairseq.sequence_generator import SequenceGenerator

    device = next(model.parameters()).device
    # built before the clock starts: a generator takes ~2 ms to build, 4% of a toy round
    generators = [SequenceGenerator([model], task.target_dictionary, beam_size=beam, max_len_a=0, max_len_b=steps,
                                    min_len=steps)
                  for steps in (length or sample["target"].size(1) - 1  # the longest reference, without its EOS
                                for sample in sample_batches)]
    n_tokens, start = 0, time.perf_counter()
    with torch.inference_mode():
        for sample, generator in zip(sample_batches, generators, strict=True):
            for hypos in generator.generate([model], sample):
                n_tokens += len(hypos[0]["tokens"])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n_tokens / (time.perf_counter() - start)


def compare(root: Path, data: Path, pair, size: str, args) -> dict[str, float]:
    """Time both models of one size, interleaved; return their median tokens/s, parameters and the ratio."""
    from plugins.bert_fused.toy import save_tiny_bert

    hidden, layers = BERT_SIZES[size]
    bert = save_tiny_bert(root / f"bert-{size}", pair.monolingual_source(2000, seed=7), hidden=hidden,
                          layers=layers, heads=max(1, hidden // 64))
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    systems = {"transformer": build(data, None, size, device, dtype),
               "bert_fused": build(data, bert, size, device, dtype)}
    inputs = {name: batches(task, args.sentences, args.batch_size, device) for name, (task, _) in systems.items()}
    for name, (task, model) in systems.items():  # warm-up
        tokens_per_second(task, model, inputs[name][:1], args.beam, args.length)
    encoder = systems["bert_fused"][1].encoder
    encode_bert, bert_seconds = encoder.encode_bert, [0.0]

    def timed_encode_bert(bert_input):
        start = time.perf_counter()
        memory = encode_bert(bert_input)
        bert_seconds[0] += time.perf_counter() - start
        return memory

    encoder.encode_bert = timed_encode_bert  # BERT's own forward: the part no attention change can shrink
    speeds: dict[str, list[float]] = {name: [] for name in systems}
    ratios, fused_seconds = [], 0.0
    for _ in range(args.rounds):
        for name, (task, model) in systems.items():
            start = time.perf_counter()
            speeds[name].append(tokens_per_second(task, model, inputs[name], args.beam, args.length))
            fused_seconds += (time.perf_counter() - start) if name == "bert_fused" else 0.0
        ratios.append(speeds["bert_fused"][-1] / speeds["transformer"][-1])
    row = {f"{name} tokens/s": statistics.median(values) for name, values in speeds.items()}
    row.update({f"{name} params": sum(p.numel() for p in model.parameters()) for name, (_, model) in systems.items()})
    row["bert"] = f"{layers} x {hidden}"
    row["ratio"] = statistics.median(ratios)
    row["spread"] = f"{min(ratios):.2f}-{max(ratios):.2f}"
    row["bert share"] = bert_seconds[0] / fused_seconds
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=sorted(BERT_SIZES), default=["toy", "iwslt", "base-bert"])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds per size (default 3)")
    parser.add_argument("--sentences", type=int, default=64, help="test sentences per round (default 64)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--length", type=int, metavar="N",
                        help="tokens generated per hypothesis, the same for both models (default: the length of "
                             "each batch's longest reference translation)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: steadier timings when the cores are shared)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                        help="both models' weights in this dtype (default float32)")
    args = parser.parse_args(argv)
    if args.length is not None and args.length < 1:
        parser.error(f"--length must be at least 1, got {args.length}")
    torch.set_num_threads(args.threads)

    from graftkit.commands.bertfused import load_plugins

    load_plugins()
    from graftkit.data.parallel import ToyLanguagePair
    from plugins.bert_fused.toy import binarize, write_toy_pair

    torch.manual_seed(0)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pair = ToyLanguagePair(0)
        write_toy_pair(root / "raw", pair, {"train": 500, "valid": 20, "test": args.sentences})
        data = binarize(root / "raw", root / "bin")
        for size in args.sizes:
            rows[size] = compare(root, data, pair, size, args)
    length = f"{args.length} tokens" if args.length else "the longest reference's length"
    print(f"\ngeneration on {args.device} in {args.dtype}, beam {args.beam}, hypotheses held to {length}, "
          f"{args.sentences} sentences x {args.rounds} rounds, batch {args.batch_size}, torch threads "
          f"{torch.get_num_threads()}; toy = width 64, 3+3 layers; iwslt = transformer_iwslt_de_en (512, 6+6 layers)")
    print(f"{'size':<10} {'BERT':>8} {'params NMT':>11} {'params fused':>13} {'tok/s NMT':>10} {'tok/s fused':>12} "
          f"{'ratio':>6} {'rounds':>10} {'BERT fwd':>9}")
    for size, row in rows.items():
        print(f"{size:<10} {row['bert']:>8} {row['transformer params']:>11,} {row['bert_fused params']:>13,} "
              f"{row['transformer tokens/s']:>10.1f} {row['bert_fused tokens/s']:>12.1f} {row['ratio']:>5.2f}x "
              f"{row['spread']:>10} {row['bert share']:>9.0%}")
    print("BERT fwd: share of BERT-fused generation time spent in BERT's own forward (once per sentence)")
    print("\ngoal >= 0.7x: " + ", ".join(f"{size} {'met' if row['ratio'] >= 0.7 else 'NOT met'}"
                                         for size, row in rows.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
