"""Forward+backward tokens/s of graftkit's PreLNBertModel vs HF's BertModel and RobertaPreLayerNormModel.

Same size, same batch, SDPA attention for all three, training mode (dropout on). The three are timed in
interleaved rounds within one run and each model's median round is kept, so the ratio stays fair on a busy
machine. Run: ``.venv/bin/python benchmarks/bench_preln.py`` (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import BertConfig, BertModel, RobertaPreLayerNormConfig, RobertaPreLayerNormModel

from hf_models import PreLNBertConfig, PreLNBertModel


def build_models(hidden: int, layers: int, heads: int, vocab: int, max_len: int) -> dict[str, torch.nn.Module]:
    size = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                intermediate_size=4 * hidden, attn_implementation="sdpa")
    torch.manual_seed(0)
    return {
        "PreLNBertModel (graftkit)": PreLNBertModel(PreLNBertConfig(**size, max_position_embeddings=max_len)),
        "BertModel (HF, Post-LN)": BertModel(BertConfig(**size, max_position_embeddings=max_len)),
        "RobertaPreLayerNormModel (HF)": RobertaPreLayerNormModel(
            RobertaPreLayerNormConfig(**size, max_position_embeddings=max_len + 2)),
    }


def step(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> None:
    out = model(input_ids=ids, attention_mask=mask)
    (out.last_hidden_state.float().pow(2).mean() + out.pooler_output.float().mean()).backward()
    model.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=3, help="forward+backward steps per model per round")
    parser.add_argument("--padded", action="store_true", help="pad the second half of the batch to half length")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's; 1 is steadier on a shared machine)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    vocab = 8000
    models = build_models(args.hidden, args.layers, args.heads, vocab, args.seq_len)
    for model in models.values():
        model.train()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (args.batch, args.seq_len), generator=gen)
    mask = torch.ones_like(ids)
    if args.padded:
        mask[args.batch // 2:, args.seq_len // 2:] = 0
        ids[mask == 0] = 1  # RoBERTa's pad id; BERT's is 0, the mask makes it irrelevant
    tokens = int(mask.sum())

    for model in models.values():  # warm-up
        step(model, ids, mask)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step(model, ids, mask)
            times[name].append((time.perf_counter() - start) / args.steps)

    ours = statistics.median(times["PreLNBertModel (graftkit)"])
    print(f"hidden {args.hidden}, layers {args.layers}, heads {args.heads}, FFN {4 * args.hidden}, "
          f"batch {args.batch} x {args.seq_len} ({tokens} real tokens), sdpa, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.rounds} interleaved rounds x {args.steps} steps")
    print(f"{'model':<32} {'ms/step':>9} {'tokens/s':>10} {'graftkit speed / this':>22}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<32} {1000 * median:>9.1f} {tokens / median:>10.0f} {median / ours:>21.3f}x")


if __name__ == "__main__":
    main()
