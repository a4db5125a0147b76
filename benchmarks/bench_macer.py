"""MACER / randomized smoothing benchmark (CPU, < 2 min).

1. Certification throughput: noise samples per second in ``Smooth.sample_counts`` (what ``certify`` runs:
   draw noise, forward, argmax, bincount, batch by batch) against the base classifier's raw forward
   throughput on the same number of ready-made images. Goal: certify within 1.1× of the raw forward time.
2. Training step: one MACER step against one Gaussian-augmentation step with the same k noise copies (same
   forward/backward size), so the ratio is the price of MACER's loss.

Both sides of each ratio are timed interleaved in one run and repeated; the median ratio is reported.
Run: .venv/bin/python benchmarks/bench_macer.py [--threads 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vision_ext.macer import MacerConfig, Smooth, smoothed_training_loss
from vision_ext.models import LeNet, resnet20


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_certify(name: str, model: torch.nn.Module, shape: tuple[int, ...], num: int, batch: int,
                  repeats: int) -> dict:
    model.eval()
    smooth = Smooth(model, 10, sigma=0.25, seed=0)
    x = torch.rand(shape)
    ready = torch.rand(batch, *shape)

    @torch.no_grad()
    def raw_forward():
        for start in range(0, num, batch):
            model(ready[: min(batch, num - start)])

    def certify_sampling():
        smooth.sample_counts(x, num, batch)

    raw_forward(), certify_sampling()  # warm-up
    ratios, raw_times, cert_times = [], [], []
    for _ in range(repeats):
        raw = _timed(raw_forward)
        cert = _timed(certify_sampling)
        raw_times.append(raw), cert_times.append(cert), ratios.append(cert / raw)
    return {"model": name, "samples": num, "raw fwd img/s": num / statistics.median(raw_times),
            "certify samples/s": num / statistics.median(cert_times), "ratio": statistics.median(ratios)}


def bench_step(name: str, model: torch.nn.Module, shape: tuple[int, ...], batch: int, k: int,
               repeats: int) -> dict:
    model.train()
    x, y = torch.rand(batch, *shape), torch.randint(0, 10, (batch,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    configs = {objective: MacerConfig(objective=objective, sigma=0.25, k=k) for objective in ("gaussian", "macer")}
    generator = torch.Generator().manual_seed(0)

    def step(objective):
        terms = smoothed_training_loss(model, x, y, configs[objective], generator)
        optimizer.zero_grad()
        terms.loss.backward()
        optimizer.step()

    step("gaussian"), step("macer")
    times: dict[str, list[float]] = {"gaussian": [], "macer": []}
    ratios = []
    for _ in range(repeats):
        gauss = _timed(lambda: [step("gaussian") for _ in range(3)]) / 3
        mac = _timed(lambda: [step("macer") for _ in range(3)]) / 3
        times["gaussian"].append(gauss), times["macer"].append(mac), ratios.append(mac / gauss)
    return {"model": name, "batch x k": f"{batch} x {k}",
            "gaussian ms/step": 1e3 * statistics.median(times["gaussian"]),
            "macer ms/step": 1e3 * statistics.median(times["macer"]), "ratio": statistics.median(ratios)}


def _print(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    columns = list(rows[0])
    print(" | ".join(f"{c:>18}" for c in columns))
    for row in rows:
        print(" | ".join(f"{v:>18.4g}" if isinstance(v, float) else f"{v!s:>18}" for v in row.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: 1)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions (default: 5)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    certify_rows = [bench_certify("LeNet 1x8x8", LeNet(input_size=8), (1, 8, 8), 20_000, 1000, args.repeats),
                    bench_certify("LeNet 1x28x28", LeNet(input_size=28), (1, 28, 28), 5_000, 1000, args.repeats),
                    bench_certify("ResNet-20 3x32x32", resnet20(), (3, 32, 32), 400, 200, args.repeats)]
    _print(certify_rows, "certify noise sampling vs raw forward (ratio = certify time / forward time; goal <= 1.1)")
    step_rows = [bench_step("LeNet 1x8x8", LeNet(input_size=8), (1, 8, 8), 64, 16, args.repeats),
                 bench_step("ResNet-20 3x32x32", resnet20(), (3, 32, 32), 4, 16, args.repeats)]
    _print(step_rows, "MACER step vs Gaussian-augmentation step, same k (ratio = MACER / Gaussian)")
    print(f"\nthreads {torch.get_num_threads()}, repeats {args.repeats}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
