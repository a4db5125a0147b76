"""Benchmark: TD of two N=50 000 × 512 representations on T regression tasks, vision_ext.td (one streaming
pass of float64 covariances, heads solved from them) against what a user would write instead (a
scikit-learn LinearRegression per task and per representation, then the mean squared prediction gap).

Both sides run interleaved in this one process, repeated, so the ratio is fair on a loaded machine.
Data: SYNTHETIC Gaussian features (B = A M + noise) and random linear targets.

    .venv/bin/python benchmarks/bench_td.py [--n 50000] [--dim 512] [--tasks 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def naive_td(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LinearRegression

    per_task = []
    for t in range(y.shape[1]):
        pred_a = LinearRegression().fit(a, y[:, t]).predict(a)
        pred_b = LinearRegression().fit(b, y[:, t]).predict(b)
        per_task.append(np.mean((pred_a - pred_b) ** 2))
    return np.array(per_task)


def main() -> None:
    from vision_ext.td import transferred_discrepancy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    a = torch.randn(args.n, args.dim, generator=g)
    b = a @ torch.randn(args.dim, args.dim, generator=g) / args.dim ** 0.5 + torch.randn(args.n, args.dim, generator=g)
    y = a[:, :16] @ torch.randn(16, args.tasks, generator=g) + torch.randn(args.n, args.tasks, generator=g)
    a_np, b_np, y_np = a.numpy(), b.numpy(), y.numpy()

    times: dict[str, list[float]] = {"vision_ext.td": [], "sklearn per task": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        ours = transferred_discrepancy(a, b, y).per_task.numpy()
        times["vision_ext.td"].append(time.perf_counter() - start)
        start = time.perf_counter()
        naive = naive_td(a_np, b_np, y_np)
        times["sklearn per task"].append(time.perf_counter() - start)
        np.testing.assert_allclose(ours, naive, rtol=1e-4)  # same numbers, else the timing is meaningless

    print(f"TD, N={args.n}, {args.dim} + {args.dim} features, {args.tasks} tasks, torch threads "
          f"{torch.get_num_threads()}, {args.repeats} interleaved repeats")
    print(f"{'implementation':<20}{'best s':>10}{'mean s':>10}")
    for name, values in times.items():
        print(f"{name:<20}{min(values):>10.2f}{sum(values) / len(values):>10.2f}")
    ratio = min(times["sklearn per task"]) / min(times["vision_ext.td"])
    print(f"speed-up (best vs best): {ratio:.1f}x; max relative difference of per-task TD "
          f"{np.max(np.abs(ours - naive) / np.abs(naive)):.1e}")


if __name__ == "__main__":
    main()
