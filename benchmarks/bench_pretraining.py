"""One pre-training step of each method and composition (docs/compose.md) against BERT's MLM step, same size.

Every arm is a model on graftkit's core configured by its settings only (``position_embedding_type``,
``layer_norm_position``, the objective, TNF's notes), at the same hidden size, depth, heads, batch and sequence
length, trained from the same batch: BERT's MLM (Post-LN, learned absolute positions) is the reference; TUPE-A,
TUPE-R and Pre-LN change only their setting; TNF is the MLM with notes mixed in and taken (``rare_spans``);
ELECTRA (MC-BERT's ``rtd`` objective) and MC-BERT (``mc``) add the meta controller (1/``--divider`` width).
A step is forward, backward and an AdamW step. The arms alternate in interleaved rounds within one run, each
round starting at the next arm; in a round an arm takes one untimed step (after another arm's step its memory
is cold, which a training loop never sees) and then ``--steps`` timed steps. The goals are judged on the
ratios paired within each round, so the ratios stay fair on a busy machine.

Memory: on CUDA the peak allocated during a step; on CPU the bytes autograd saves for the backward pass (plus
the note dictionary for TNF), the part of a step's peak that grows with the model and the batch.
Goals (each method as alone, issue 25): TUPE >= 0.9x BERT's tokens/s, TNF <= 1.05x its backbone's time,
MC-BERT <= 1.15x ELECTRA's time, and a composition's time ratio to BERT no more than the product of its parts'.
Run: ``.venv/bin/python benchmarks/bench_pretraining.py --threads 1 --rounds 10`` (about 10 minutes on 2 CPU cores;
``--hidden 240 --layers 4 --heads 6 --divider 3 --vocab 8000`` for a smaller model in a few minutes).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
from bench_tnf import rare_spans

from graftkit.experiments.protocol import bootstrap_interval
from hf_models import (
    McBertConfig,
    McBertForPreTraining,
    PreLNBertConfig,
    PreLNBertForMaskedLM,
    TnfConfig,
    TnfForMaskedLM,
)

#: arm -> (model kind, settings): "mlm" PreLNBertForMaskedLM, "tnf" TnfForMaskedLM with notes, "mc_bert"
ARMS: dict[str, tuple[str, dict]] = {
    "BERT MLM": ("mlm", dict(layer_norm_position="post")),
    "TUPE-A": ("mlm", dict(layer_norm_position="post", position_embedding_type="tupe_absolute")),
    "TUPE-R": ("mlm", dict(layer_norm_position="post", position_embedding_type="tupe_relative")),
    "Pre-LN": ("mlm", dict(layer_norm_position="pre")),
    "TNF": ("tnf", dict()),
    "ELECTRA": ("mc_bert", dict(objective="rtd")),
    "MC-BERT": ("mc_bert", dict(objective="mc")),
    "TUPE-A + TNF": ("tnf", dict(position_embedding_type="tupe_absolute")),
    "TUPE-R + Pre-LN + ELECTRA": ("mc_bert", dict(objective="rtd", layer_norm_position="pre",
                                                  position_embedding_type="tupe_relative")),
    "TUPE-R + Pre-LN + MC-BERT": ("mc_bert", dict(objective="mc", layer_norm_position="pre",
                                                  position_embedding_type="tupe_relative")),
}
#: composition -> its parts (each part's time ratio to BERT multiplies into the composition's bound)
COMPOSITIONS = {"TUPE-A + TNF": ("TUPE-A", "TNF"), "TUPE-R + Pre-LN + MC-BERT": ("TUPE-R", "Pre-LN", "MC-BERT")}
#: the goals, each "time of arm / time of its baseline <= bound"
TIME_GOALS = [("TNF", "BERT MLM", 1.05), ("TUPE-A + TNF", "TUPE-A", 1.05), ("MC-BERT", "ELECTRA", 1.15),
              ("TUPE-R + Pre-LN + MC-BERT", "TUPE-R + Pre-LN + ELECTRA", 1.15)]
MASK, NEITHER = 4, 5


def build(kind: str, settings: dict, size: dict, rare_words: int, half_window: int,
          divider: int) -> torch.nn.Module:
    if kind == "mlm":
        return PreLNBertForMaskedLM(PreLNBertConfig(**size, **settings))
    if kind == "tnf":
        return TnfForMaskedLM(TnfConfig(**size, **settings, num_rare_words=rare_words, note_half_window=half_window))
    return McBertForPreTraining(McBertConfig(**size, **settings, mask_token_id=MASK, neither_token_id=NEITHER,
                                             mc_size_divider=divider))


def step_function(kind: str, model: torch.nn.Module, batch: dict, spans: torch.Tensor) -> Callable[[], int]:
    """One training step of the arm (forward, backward, AdamW); it returns the bytes autograd saved."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator(batch["input_ids"].device).manual_seed(0)
    if kind == "mc_bert":  # masks and samples itself, at mask_prob 0.15 as the MLM labels
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "generator": generator}
    else:
        inputs = dict(batch, rare_spans=spans) if kind == "tnf" else dict(batch)

    def step() -> int:
        saved = 0

        def pack(t):
            nonlocal saved
            saved += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(**inputs).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return saved

    return step


def paired_ratio(times: dict[str, list[float]], numerator: list[str],
                 denominator: list[str]) -> tuple[float, float, float]:
    """Π t_numerator / Π t_denominator, paired within each round (arms of one round share its machine state:
    a slow round of an arm that appears on both sides cancels). The geometric mean over rounds and its 95%
    bootstrap interval (over rounds)."""
    logs = [sum(math.log(times[arm][r]) for arm in numerator) - sum(math.log(times[arm][r]) for arm in denominator)
            for r in range(len(times[numerator[0]]))]
    low, high = bootstrap_interval(logs)
    return math.exp(statistics.fmean(logs)), math.exp(low), math.exp(high)


def verdict(value: float, low: float, bound: float) -> str:
    """For a goal "time ratio <= bound": 'met' when the ratio is within the bound, 'within timing noise' when
    it is above it but its interval reaches it, 'NOT met' when the whole interval is above it."""
    if value <= bound:
        return "met"
    return "within timing noise" if low <= bound else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # defaults: the MC-BERT reference's small size (as benchmarks/bench_mcbert.py), where its goal is set
    parser.add_argument("--hidden", type=int, default=256, help="hidden size (divisible by heads and divider)")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=4, help="heads (the meta controller has heads / divider)")
    parser.add_argument("--divider", type=int, default=2, help="MC-BERT's and ELECTRA's mc_size_divider")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--rare-words", type=int, default=20000, help="rows of TNF's note dictionary")
    parser.add_argument("--spans", type=int, default=4, help="rare-word occurrences per sequence (TNF)")
    parser.add_argument("--half-window", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=2, help="training steps per arm per round")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    hidden = args.hidden
    size = dict(vocab_size=args.vocab, hidden_size=hidden, num_hidden_layers=args.layers,
                num_attention_heads=args.heads, intermediate_size=4 * hidden, max_position_embeddings=args.seq_len)

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(NEITHER + 1, args.vocab, (args.batch, args.seq_len), generator=gen)
    labels = torch.where(torch.rand(ids.shape, generator=gen) < 0.15, ids, -100)
    spans = rare_spans(args.batch, args.seq_len, args.spans, args.rare_words, gen).to(device)
    batch = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device),
             "labels": labels.to(device)}
    steps, saved = {}, {}
    for name, (kind, settings) in ARMS.items():
        torch.manual_seed(0)
        model = build(kind, settings, size, args.rare_words, args.half_window, args.divider).to(device).train()
        steps[name] = step_function(kind, model, batch, spans)
        saved[name] = steps[name]()  # warm-up (TNF's notes exist from here on)
        if kind == "tnf":
            notes = model.notes
            saved[name] += notes.notes.numel() * notes.notes.element_size() + notes.has_note.numel()

    times: dict[str, list[float]] = {name: [] for name in ARMS}
    peaks: dict[str, int] = {}
    names = list(ARMS)
    for round_index in range(args.rounds):
        # each round starts at the next arm, so no arm always runs first (or right after the same other arm)
        start_at = round_index % len(names)
        for name in names[start_at:] + names[:start_at]:
            step = steps[name]
            step()  # untimed: the time kept is a step as in a training loop, not the switch from another arm
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
                peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated())
            times[name].append((time.perf_counter() - start) / args.steps)

    memory = peaks if device.type == "cuda" else saved
    what = "peak allocated" if device.type == "cuda" else "saved for backward"
    seconds = {name: statistics.median(values) for name, values in times.items()}
    tokens = args.batch * args.seq_len
    ratio = {name: seconds[name] / seconds["BERT MLM"] for name in ARMS}
    print(f"hidden {hidden}, layers {args.layers}, heads {args.heads}, meta controller 1/{args.divider}, batch "
          f"{args.batch} x {args.seq_len}, vocab "
          f"{args.vocab}, {device.type}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.rounds} interleaved rounds x {args.steps} steps")
    print(f"{'arm':<27} {'ms/step':>8} {'tokens/s':>9} {'tokens/s vs BERT':>17} {'MiB ' + what:>23} "
          f"{'memory vs BERT':>15}")
    for name in ARMS:
        print(f"{name:<27} {1000 * seconds[name]:>8.1f} {tokens / seconds[name]:>9.0f} {1 / ratio[name]:>16.3f}x "
              f"{memory[name] / 2**20:>23.1f} {memory[name] / memory['BERT MLM']:>14.3f}x")
    print("goals (time ratios: geometric mean of the per-round ratios, [95% bootstrap interval over rounds]):")
    for name in ("TUPE-A", "TUPE-R"):  # tokens/s >= 0.9x BERT's, i.e. time <= 1/0.9 of BERT's
        value, low, high = paired_ratio(times, [name], ["BERT MLM"])
        print(f"  {name} tokens/s / BERT's: {1 / value:.3f}x [{1 / high:.3f}, {1 / low:.3f}] (goal >= 0.9x): "
              f"{verdict(value, low, 1 / 0.9)}")
    for name, baseline, bound in TIME_GOALS:
        value, low, high = paired_ratio(times, [name], [baseline])
        print(f"  time {name} / {baseline}: {value:.3f}x [{low:.3f}, {high:.3f}] (goal <= {bound}x): "
              f"{verdict(value, low, bound)}")
    for name, parts in COMPOSITIONS.items():
        # (t_name / t_BERT) / Π (t_part / t_BERT) = t_name · t_BERT^(parts - 1) / Π t_part
        value, low, high = paired_ratio(times, [name] + ["BERT MLM"] * (len(parts) - 1), list(parts))
        print(f"  time ratio to BERT of {name} / the product of its parts' ({' x '.join(parts)}): {value:.3f}x "
              f"[{low:.3f}, {high:.3f}] (goal <= 1): {verdict(value, low, 1.0)}")


if __name__ == "__main__":
    main()
