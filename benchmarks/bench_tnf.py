"""Training-step time and memory of TNF (notes mixed in and taken) vs the plain BERT backbone, one model.

Both arms are the same :class:`hf_models.tnf.TnfForMaskedLM` in training mode (dropout on) on the same batch
and masks: TNF gets ``rare_spans``, BERT does not (then the model is exactly its backbone). A step is forward,
note update (TNF), backward and an AdamW step. The arms alternate in interleaved rounds within one run and
each arm's median round is kept, so the ratio stays fair on a busy machine.

Memory: on CUDA the peak allocated during a step; on CPU the bytes autograd saves for the backward pass plus
the note dictionary (which the plain backbone does not hold).
Run: ``.venv/bin/python benchmarks/bench_tnf.py`` (about a minute on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from hf_models.tnf import TnfConfig, TnfForMaskedLM


def rare_spans(batch: int, seq_len: int, per_sequence: int, rare_words: int, gen: torch.Generator) -> torch.Tensor:
    """``per_sequence`` non-overlapping spans of 1 to 3 tokens per row (after [CLS]), random rare words."""
    slot = max(4, (seq_len - 2) // max(1, per_sequence))
    spans = torch.full((batch, per_sequence, 3), -1, dtype=torch.long)
    for j in range(per_sequence):
        start = 1 + j * slot + torch.randint(0, max(1, slot - 3), (batch,), generator=gen)
        end = start + torch.randint(0, 3, (batch,), generator=gen)
        ok = end < seq_len - 1
        spans[ok, j, 0] = torch.randint(0, rare_words, (int(ok.sum()),), generator=gen)
        spans[ok, j, 1], spans[ok, j, 2] = start[ok], end[ok]
    return spans


def step(model, optimizer, batch: dict, spans: torch.Tensor | None) -> int:
    """One training step; returns the bytes autograd saved for backward."""
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), warnings.catch_warnings():
        # the BERT arm trains as the plain backbone on purpose: the model's one-time warning is not news here
        warnings.filterwarnings("ignore", message="TNF is training as its plain backbone")
        loss = model(**batch, rare_spans=spans).loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--rare-words", type=int, default=20000, help="rows of the note dictionary")
    parser.add_argument("--spans", type=int, default=4, help="rare-word occurrences per sequence")
    parser.add_argument("--half-window", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=3, help="training steps per arm per round")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = TnfForMaskedLM(TnfConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=4 * args.hidden, max_position_embeddings=args.seq_len,
        num_rare_words=args.rare_words, note_half_window=args.half_window)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, args.vocab, (args.batch, args.seq_len), generator=gen)
    labels = torch.where(torch.rand(ids.shape, generator=gen) < 0.15, ids, -100)
    spans = rare_spans(args.batch, args.seq_len, args.spans, args.rare_words, gen).to(device)
    batch = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
             "labels": labels.to(device)}
    arms = {"BERT (backbone)": None, "TNF": spans}

    saved = {name: step(model, optimizer, batch, s) for name, s in arms.items()}  # warm-up (notes exist now)
    times: dict[str, list[float]] = {name: [] for name in arms}
    peaks: dict[str, int] = {}
    for _ in range(args.rounds):
        for name, arm_spans in arms.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for _ in range(args.steps):
                step(model, optimizer, batch, arm_spans)
            if device.type == "cuda":
                torch.cuda.synchronize()
                peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated())
            times[name].append((time.perf_counter() - start) / args.steps)

    notes_bytes = model.notes.notes.numel() * model.notes.notes.element_size() + model.notes.has_note.numel()
    memory = (peaks if device.type == "cuda"
              else {"BERT (backbone)": saved["BERT (backbone)"], "TNF": saved["TNF"] + notes_bytes})
    what = "peak allocated" if device.type == "cuda" else "saved for backward (+ notes for TNF)"
    real_spans = int((spans[..., 0] >= 0).sum())
    print(f"hidden {args.hidden}, layers {args.layers}, heads {args.heads}, batch {args.batch} x {args.seq_len}, "
          f"{real_spans} rare spans, {args.rare_words} rare words, k {args.half_window}, {device.type}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} interleaved rounds x "
          f"{args.steps} steps")
    print(f"{'arm':<18} {'ms/step':>9} {'MiB ' + what:>40}")
    for name in arms:
        print(f"{name:<18} {1000 * statistics.median(times[name]):>9.1f} {memory[name] / 2**20:>40.1f}")
    ratio = statistics.median(times["TNF"]) / statistics.median(times["BERT (backbone)"])
    print(f"time ratio TNF / BERT: {ratio:.3f}x (goal <= 1.05x); memory ratio: "
          f"{memory['TNF'] / memory['BERT (backbone)']:.3f}x")


if __name__ == "__main__":
    main()
