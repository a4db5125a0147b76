"""Generation speed of BERT-fused NMT vs the plain fairseq transformer of the same size (beam 5, CPU).

Both models are built in this process from the same binarized toy data (SYNTHETIC toy language pair) and
timed interleaved, several rounds, so machine load hits both alike; the ratio is tokens/s(BERT-fused) /
tokens/s(transformer). The goal in the issue is >= 0.7x: BERT runs once per sentence, not once per step.
Run: .venv/bin/python benchmarks/bench_bertfused.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def dims(width: int, layers: int) -> list[str]:
    """Same-size NMT models: ``layers`` + ``layers``, model width ``width``, FFN 4x, width/16 heads."""
    heads = str(max(1, width // 16))
    return ["--encoder-layers", str(layers), "--decoder-layers", str(layers), "--encoder-embed-dim", str(width),
            "--decoder-embed-dim", str(width), "--encoder-ffn-embed-dim", str(4 * width),
            "--decoder-ffn-embed-dim", str(4 * width), "--encoder-attention-heads", heads,
            "--decoder-attention-heads", heads]


def build(data: Path, bert: Path | None, size: list[str]):
    """A (task, model) pair in eval mode: ``bert_fused`` when ``bert`` is given, else fairseq's transformer."""
    from fairseq import options, tasks

    if bert is None:
        argv = [str(data), "--task", "translation", "--arch", "transformer"]
    else:
        argv = [str(data), "--task", "translation_bert_fused", "--arch", "bert_fused", "--bert-model", str(bert),
                "--bert-on-the-fly"]
    args = options.parse_args_and_arch(options.get_training_parser(), argv + size + ["--cpu"])
    task = tasks.setup_task(args)
    task.load_dataset("test")
    return task, task.build_model(args).eval()


def batches(task, n_sentences: int, batch_size: int) -> list[dict]:
    dataset = task.dataset("test")
    samples = [dataset[i] for i in range(n_sentences)]
    return [dataset.collater(samples[i:i + batch_size]) for i in range(0, n_sentences, batch_size)]


def tokens_per_second(task, model, sample_batches: list[dict], beam: int) -> float:
    from fairseq.sequence_generator import SequenceGenerator

    generator = SequenceGenerator([model], task.target_dictionary, beam_size=beam, max_len_a=1.2, max_len_b=5)
    n_tokens, start = 0, time.perf_counter()
    with torch.inference_mode():
        for sample in sample_batches:
            for hypos in generator.generate([model], sample):
                n_tokens += len(hypos[0]["tokens"])
    return n_tokens / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    parser.add_argument("--sentences", type=int, default=64, help="test sentences per round (default 64)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--width", type=int, default=64, help="NMT and BERT width (default 64)")
    parser.add_argument("--layers", type=int, default=3, help="NMT encoder/decoder and BERT layers (default 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: steadier timings for these tiny models)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from graftkit.commands.bertfused import load_plugins

    load_plugins()
    from graftkit.data.parallel import ToyLanguagePair
    from plugins.bert_fused.toy import binarize, save_tiny_bert, write_toy_pair

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pair = ToyLanguagePair(0)
        bert = save_tiny_bert(root / "bert", pair.monolingual_source(2000, seed=7), hidden=args.width,
                              layers=args.layers, heads=max(1, args.width // 16))
        write_toy_pair(root / "raw", pair, {"train": 500, "valid": 20, "test": args.sentences})
        data = binarize(root / "raw", root / "bin")
        size = dims(args.width, args.layers)
        systems = {"transformer": build(data, None, size), "bert_fused": build(data, bert, size)}
        inputs = {name: batches(task, args.sentences, args.batch_size) for name, (task, _) in systems.items()}
        for name, (task, model) in systems.items():  # warm-up
            tokens_per_second(task, model, inputs[name][:1], args.beam)
        speeds: dict[str, list[float]] = {name: [] for name in systems}
        ratios = []
        for _ in range(args.rounds):
            for name, (task, model) in systems.items():
                speeds[name].append(tokens_per_second(task, model, inputs[name], args.beam))
            ratios.append(speeds["bert_fused"][-1] / speeds["transformer"][-1])
    params = {name: sum(p.numel() for p in model.parameters()) for name, (_, model) in systems.items()}
    print(f"\ngeneration, beam {args.beam}, {args.sentences} sentences x {args.rounds} rounds, "
          f"batch {args.batch_size}, width {args.width}, {args.layers}+{args.layers} layers (BERT: {args.layers}), "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'model':<12} {'params':>9} {'tokens/s (median)':>18} {'min':>8} {'max':>8}")
    for name, values in speeds.items():
        print(f"{name:<12} {params[name]:>9,} {statistics.median(values):>18.1f} {min(values):>8.1f} "
              f"{max(values):>8.1f}")
    ratio = statistics.median(ratios)
    print(f"\nratio bert_fused / transformer: {ratio:.2f}x (per round: {', '.join(f'{r:.2f}' for r in ratios)}); "
          f"goal >= 0.7x: {'met' if ratio >= 0.7 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
