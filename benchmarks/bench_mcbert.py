"""Pre-training step time of MC-BERT vs ELECTRA-style RTD vs BERT's MLM at the same main-model size.

One step = McBertForPreTraining's forward (masking, meta controller, sampling, main model, loss), backward and
an AdamW step; the three objectives differ only in ``config.objective``. They are timed in interleaved
rounds within one run (the order rotates from round to round); each objective's median and fastest round
are kept, and the MC-BERT / RTD ratio of every round (the two timed side by side) is reported with its median
(the verdict) and range, so the ratio stays fair on a busy machine (other processes only ever slow a round
down: the fastest rounds are the least disturbed). Also reported: each objective's FLOPs of matrix products in
one step (``torch.utils.flop_counter``) and the CPU time of MC-BERT's negatives' sampling inside its steps.
Goal: MC-BERT <= 1.15x RTD. Default size: the reference's small arch (12 layers, d 256, FFN 1024, 4 heads,
meta controller at half width) with BERT's vocabulary size. Run: ``.venv/bin/python benchmarks/bench_mcbert.py
--threads 1 --clock cpu`` (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from hf_models import McBertConfig, McBertForPreTraining
from hf_models.mc_bert import modeling_mc_bert

OBJECTIVES = {"mlm": "MLM (BERT)", "rtd": "RTD (ELECTRA)", "mc": "MC-BERT"}
GOAL = 1.15


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--divider", type=int, default=2, help="mc_size_divider")
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--candidates", type=int, default=10, help="k")
    parser.add_argument("--with-replacement", action="store_true", help="the reference code's sampling")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=1, help="training steps per objective per round")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's; 1 is steadier on a shared machine)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: this process's CPU time, immune to other processes on a shared machine "
                             "(meaningful with --threads 1)")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    models, optimizers = {}, {}
    for objective in OBJECTIVES:
        torch.manual_seed(0)
        models[objective] = McBertForPreTraining(McBertConfig(
            vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
            num_attention_heads=args.heads, intermediate_size=4 * args.hidden, max_position_embeddings=args.seq_len,
            mc_size_divider=args.divider, mask_token_id=4, neither_token_id=5, objective=objective,
            num_candidates=args.candidates, candidates_with_replacement=args.with_replacement)).train()
        optimizers[objective] = torch.optim.AdamW(models[objective].parameters(), lr=1e-4)
    data = torch.Generator().manual_seed(0)
    ids = torch.randint(6, args.vocab, (args.batch, args.seq_len), generator=data)
    mask = torch.ones_like(ids)

    def step(objective: str) -> None:
        loss = models[objective](ids, attention_mask=mask, generator=data).loss
        optimizers[objective].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[objective].step()

    flops = {}
    for objective in OBJECTIVES:  # warm-up, counting the matrix products' FLOPs of one step
        counter = FlopCounterMode(display=False)
        with counter:
            step(objective)
        flops[objective] = counter.get_total_flops()
    # MC-BERT's own extra work, timed inside its steps: the negatives' sampling (all positions, no gradient)
    sampling_times: list[float] = []
    sample_negatives = modeling_mc_bert.sample_negatives

    def timed_sample_negatives(*args, **kwargs):
        start = clock()
        negatives = sample_negatives(*args, **kwargs)
        sampling_times.append(clock() - start)
        return negatives

    modeling_mc_bert.sample_negatives = timed_sample_negatives
    times: dict[str, list[float]] = {objective: [] for objective in OBJECTIVES}
    order = list(OBJECTIVES)
    for round_index in range(args.rounds):
        for objective in order[round_index % 3:] + order[:round_index % 3]:
            start = clock()
            for _ in range(args.steps):
                step(objective)
            times[objective].append((clock() - start) / args.steps)

    medians = {objective: statistics.median(samples) for objective, samples in times.items()}
    fastest = {objective: min(samples) for objective, samples in times.items()}
    config = models["mc"].config
    print(f"main: {args.layers} layers, d {args.hidden}, FFN {4 * args.hidden}, {args.heads} heads; meta controller "
          f"d {args.hidden // args.divider}; vocab {args.vocab}; batch {args.batch} x {args.seq_len}; k "
          f"{config.num_candidates}, negatives {'with' if args.with_replacement else 'without'} replacement; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} interleaved rounds x "
          f"{args.steps} steps (forward + backward + AdamW), {args.clock} clock")
    print(f"{'objective':<16} {'ms/step':>9} {'vs RTD':>8} {'vs MLM':>8} {'fastest':>9} {'vs RTD':>8} "
          f"{'GFLOP':>7} {'vs RTD':>8} {'parameters':>12}")
    for objective, label in OBJECTIVES.items():
        parameters = sum(p.numel() for p in models[objective].parameters())
        print(f"{label:<16} {1000 * medians[objective]:>9.1f} {medians[objective] / medians['rtd']:>7.3f}x "
              f"{medians[objective] / medians['mlm']:>7.3f}x {1000 * fastest[objective]:>9.1f} "
              f"{fastest[objective] / fastest['rtd']:>7.3f}x {flops[objective] / 1e9:>7.1f} "
              f"{flops[objective] / flops['rtd']:>7.3f}x {parameters:>12,}")
    sampling = statistics.median(sampling_times)
    print(f"MC-BERT's negatives sampling (inside its step): {1000 * sampling:.1f} ms median, "
          f"{sampling / medians['rtd']:.3f} of RTD's median step")
    round_ratios = [mc / rtd for mc, rtd in zip(times["mc"], times["rtd"])]
    print("MC-BERT / RTD per round: " + " ".join(f"{ratio:.3f}" for ratio in round_ratios))
    ratio = statistics.median(round_ratios)
    print(f"MC-BERT / RTD step time = {ratio:.3f} (median of {args.rounds} rounds, range {min(round_ratios):.3f}"
          f"-{max(round_ratios):.3f}; goal <= {GOAL}): {'met' if ratio <= GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
