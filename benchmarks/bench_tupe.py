"""Forward+backward tokens/s and memory of graftkit's TupeModel (TUPE-A, TUPE-R) vs HF's BertModel (sdpa).

Same size and batch, SDPA attention for all, training mode (dropout on), sequence lengths 128 and 512. The
models are timed in interleaved rounds within one run and each model's median round is kept, so the ratio
stays fair on a busy machine. Memory: on CUDA the peak allocated during a step; on CPU (no allocator
statistics) the bytes autograd saves for the backward pass, the activation memory that grows with the
sequence. Goal: TUPE-A >= 0.90x and TUPE-R >= 0.85x of BERT's tokens/s.

Run: ``.venv/bin/python benchmarks/bench_tupe.py`` (a few minutes on 2 CPU cores), on a GPU
``--device cuda --dtype bfloat16``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import BertConfig, BertModel

from hf_models import TupeConfig, TupeModel

GOALS = {"TupeModel A (graftkit)": 0.90, "TupeModel R (graftkit)": 0.85}
BERT = "BertModel (HF, sdpa)"


def build_models(hidden: int, layers: int, heads: int, vocab: int, max_len: int) -> dict[str, torch.nn.Module]:
    size = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                intermediate_size=4 * hidden, max_position_embeddings=max_len, attn_implementation="sdpa")
    torch.manual_seed(0)
    return {
        BERT: BertModel(BertConfig(**size)),
        "TupeModel A (graftkit)": TupeModel(TupeConfig(**size, position_mode="absolute")),
        "TupeModel R (graftkit)": TupeModel(TupeConfig(**size, position_mode="relative")),
    }


def step(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> None:
    out = model(input_ids=ids, attention_mask=mask)
    (out.last_hidden_state.float().pow(2).mean() + out.pooler_output.float().mean()).backward()
    model.zero_grad(set_to_none=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_memory(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> int:
    """Bytes: CUDA peak allocated during one step above the resting level; on CPU the saved activations."""
    if ids.device.type == "cuda":
        synchronize(ids.device)
        torch.cuda.reset_peak_memory_stats(ids.device)
        resting = torch.cuda.memory_allocated(ids.device)
        step(model, ids, mask)
        synchronize(ids.device)
        return torch.cuda.max_memory_allocated(ids.device) - resting
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step(model, ids, mask)
    return sum(storages.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-lens", default="128,512", help="comma-separated sequence lengths")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=2, help="forward+backward steps per model per round")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    lengths = [int(n) for n in args.seq_lens.split(",")]
    vocab = 8000

    models = build_models(args.hidden, args.layers, args.heads, vocab, max(lengths))
    for model in models.values():
        model.to(device=device, dtype=dtype).train()
    print(f"hidden {args.hidden}, layers {args.layers}, heads {args.heads}, FFN {4 * args.hidden}, batch "
          f"{args.batch}, sdpa, {args.device} {args.dtype}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.rounds} interleaved rounds x {args.steps} steps")
    memory_kind = "peak step memory" if device.type == "cuda" else "saved activations"
    for length in lengths:
        gen = torch.Generator().manual_seed(length)
        ids = torch.randint(5, vocab, (args.batch, length), generator=gen).to(device)
        mask = torch.ones_like(ids)
        tokens = ids.numel()
        memory = {name: step_memory(model, ids, mask) for name, model in models.items()}  # also a warm-up
        times: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, model in models.items():
                synchronize(device)
                start = time.perf_counter()
                for _ in range(args.steps):
                    step(model, ids, mask)
                synchronize(device)
                times[name].append((time.perf_counter() - start) / args.steps)
        bert = statistics.median(times[BERT])
        print(f"\nseq {length} ({tokens} tokens per step)")
        print(f"{'model':<26} {'ms/step':>9} {'tokens/s':>10} {'speed vs BERT':>14} {memory_kind + ' MB':>22} "
              f"{'memory vs BERT':>15}  goal")
        for name, samples in times.items():
            median = statistics.median(samples)
            goal = f">= {GOALS[name]:.2f}x: {'met' if bert / median >= GOALS[name] else 'MISSED'}" \
                if name in GOALS else ""
            print(f"{name:<26} {1000 * median:>9.1f} {tokens / median:>10.0f} {bert / median:>13.3f}x "
                  f"{memory[name] / 2**20:>22.1f} {memory[name] / memory[BERT]:>14.3f}x  {goal}")


if __name__ == "__main__":
    main()
