"""MACER vs Cohen et al.'s Gaussian augmentation on scikit-learn's real 8×8 digits (``macer-vs-gaussian``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from graftkit.registry import Outcome, RunContext, experiment

SIGMAS = (0.25, 0.5)
#: the arms: training objective and noise copies per image per step (None: the budget's k).
#: "cohen" is the paper's baseline (Cohen et al. 2019: one noise sample per image per step); "gaussian" is
#: the same cross-entropy on the k copies MACER sees (same data order and noise), a stricter control.
ARMS: dict[str, tuple[str, int | None]] = {"cohen": ("gaussian", 1), "gaussian": ("gaussian", None),
                                           "macer": ("macer", None)}
RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
#: λ, β, γ used here (see NOTES for why they differ from the paper's Cifar-10 values 12, 16, 8)
LBD, BETA, GAMMA = 0.5, 4.0, 8.0


@dataclass(frozen=True)
class Budget:
    """Training and certification budget, the same for both methods."""

    epochs: int
    k: int
    test_stride: int  # certify every test_stride-th test image
    n0: int
    n: int
    seeds: int = 3
    batch_size: int = 32
    lr: float = 0.05
    alpha: float = 0.001


QUICK = Budget(epochs=8, k=8, test_stride=3, n0=50, n=2000)
FULL = Budget(epochs=30, k=16, test_stride=1, n0=100, n=10000)


def radius_cap(sigma: float, budget: Budget) -> float:
    """The largest radius CERTIFY can return with ``budget.n`` samples: σ·Φ⁻¹(α^(1/n)) (every sample correct)."""
    from scipy.stats import norm

    return sigma * float(norm.ppf(budget.alpha ** (1 / budget.n)))


def train_and_certify(arm: str, sigma: float, seed: int, budget: Budget, train: tuple, test: tuple,
                      lbd: float = LBD, beta: float = BETA, gamma: float = GAMMA) -> dict[str, Any]:
    """Train LeNet as ``arm`` (see ARMS) and certify the test images; return radii, correctness and timings."""
    from vision_ext.macer import MacerConfig, Smooth, TrainSettings, train_smoothed
    from vision_ext.macer.smoothing import certify_dataset, summarize_certification
    from vision_ext.models import LeNet

    objective, copies = ARMS[arm]
    torch.manual_seed(seed)
    model = LeNet(in_channels=1, num_classes=10, input_size=8)
    config = MacerConfig(objective=objective, sigma=sigma, k=copies or budget.k, lbd=lbd, beta=beta, gamma=gamma,
                         warmup_epochs=budget.epochs // 2 if objective == "macer" else 0)
    settings = TrainSettings(epochs=budget.epochs, batch_size=budget.batch_size, lr=budget.lr,
                             milestones=[budget.epochs * 3 // 4], seed=seed)
    history = train_smoothed(model, *train, config, settings, progress=False)
    images, labels = test[0][:: budget.test_stride], test[1][:: budget.test_stride]
    started = time.perf_counter()
    rows = certify_dataset(Smooth(model, 10, sigma, seed=seed), images, labels, budget.n0, budget.n, budget.alpha,
                           batch_size=budget.n)
    summary = summarize_certification(rows, grid=RADII)
    cap = radius_cap(sigma, budget)
    return {"rows": rows, "acr": summary["acr"], "certified_accuracy": summary["certified_accuracy"],
            "copies": config.k,
            "at_cap": sum(row["correct"] and row["radius"] >= cap - 1e-9 for row in rows) / len(rows),
            "seconds_per_epoch": statistics.mean(h["seconds"] for h in history),
            "certify_seconds": time.perf_counter() - started}


def compare(budget: Budget, base_seed: int = 0, sigmas: tuple[float, ...] = SIGMAS,
            progress: Callable[[str, int, int], None] | None = None) -> dict[tuple, list[dict]]:
    """Every (σ, arm) pair trained and certified with ``budget.seeds`` seeds; ``progress(stage, done, total)``
    is told before each run."""
    from vision_ext.macer.data import digits_split

    train, test = digits_split("train"), digits_split("test")
    results: dict[tuple, list[dict]] = {}
    for sigma in sigmas:
        for arm in ARMS:
            results[sigma, arm] = []
            for s in range(budget.seeds):
                if progress is not None:
                    progress(f"σ={sigma} {arm}: train {budget.epochs} epochs + certify, seed", s + 1, budget.seeds)
                results[sigma, arm].append(train_and_certify(arm, sigma, base_seed + s, budget, train, test))
    return results


def summarize(results: dict[tuple, list[dict]]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    metrics: dict[str, float] = {}
    table = []
    for (sigma, arm), runs in results.items():
        acrs = [r["acr"] for r in runs]
        key = f"{arm}_sigma{sigma}"
        metrics[f"acr_{key}"] = statistics.mean(acrs)
        metrics[f"acr_std_{key}"] = statistics.stdev(acrs) if len(acrs) > 1 else 0.0
        metrics[f"at_cap_{key}"] = statistics.mean(r["at_cap"] for r in runs)
        metrics[f"seconds_per_epoch_{key}"] = statistics.mean(r["seconds_per_epoch"] for r in runs)
        row: dict[str, Any] = {"sigma": sigma, "method": arm, "noise copies per image per step": runs[0]["copies"],
                               "ACR (mean ± std)": f"{metrics[f'acr_{key}']:.3f} ± {metrics[f'acr_std_{key}']:.3f}"}
        for i, radius in enumerate(RADII):
            row[f"cert. acc. r={radius}"] = statistics.mean(r["certified_accuracy"][i] for r in runs)
        row["share at radius cap"] = metrics[f"at_cap_{key}"]
        row["s/epoch"] = metrics[f"seconds_per_epoch_{key}"]
        table.append(row)
    return metrics, table


NOTES = ("LeNet (padding 2, 8×8 input) trained with SGD (lr 0.05, momentum 0.9, weight decay 5e-4, batch 32, "
         "lr ×0.1 at 3/4 of the epochs) on the 1347-image training split, the same epochs and data order for "
         "every arm. cohen: the paper's baseline, cross-entropy on one noise sample per image per step (Cohen "
         "et al. 2019); gaussian: the same cross-entropy on the k noisy copies MACER sees (same noise), a "
         "stricter control with k times the noisy samples. MACER uses λ = {lbd}, β = {beta}, γ = {gamma} and λ = 0 for "
         "the first half of the epochs (warm-up with the soft-smoothed cross-entropy): the paper's Cifar-10 "
         "values (λ 12, β 16, γ 8) made LeNet collapse here (accuracy ≈ 10%, l_C stuck at 2.3 or diverging to "
         "20) at lr 0.05 and 0.1, with or without a warm-up, and so did λ = 4 (β 16 or 4) and λ = 1 at lr 0.1. "
         "The values were picked by a single-seed grid on a validation split of the training set (1000 train / "
         "347 validation images, σ 0.25, n = 500; against the k-copy baseline): 16 epochs, k = 8: Gaussian "
         "ACR 0.361; MACER with warm-up "
         "λ/β = 0.25/16: 0.329, 0.5/16: 0.318, 1/16: 0.297, 0.5/4: 0.331, 1/4: 0.319, and 1/16 without "
         "warm-up: 0.316; 30 epochs, k = 16: Gaussian 0.389, MACER 0.5/4: 0.370, 2/4: 0.292. No setting tried "
         "beat the baseline on validation either. Certification: Cohen et al.'s CERTIFY with n0 = {n0}, "
         "n = {n}, α = 0.001 on 1 in {stride} test images ({count} images); with n = {n} the largest "
         "certifiable radius (the cap) is σ·Φ⁻¹(α^(1/n)) = {cap:.2f}σ; 'share at radius cap' is the fraction of "
         "certified images at it, whose true radius may be larger (paper: n = 100000, Cifar-10, ResNet-110, 440 "
         "epochs, k = 16). {epochs} epochs, k = {k}, {seeds} seeds; runs use one thread.")


def _run(ctx: RunContext) -> Outcome:
    from vision_ext.macer.reporting import plot_certified_accuracy, signed_radii

    budget = QUICK if ctx.quick else FULL
    results = compare(budget, ctx.seed, progress=ctx.progress)
    metrics, table = summarize(results)
    figures = []
    for sigma in SIGMAS:
        curves = {f"{arm} (ACR {metrics[f'acr_{arm}_sigma{sigma}']:.3f})":
                  [r for run in results[sigma, arm] for r in signed_radii(run["rows"])]
                  for arm in ARMS}
        figures.append(plot_certified_accuracy(
            curves, ctx.figure_path(f"certified_accuracy_sigma{sigma}.png"),
            title=f"digits, LeNet, σ={sigma}: certified accuracy ({budget.seeds} seeds pooled), n={budget.n}"))
    count = len(results[SIGMAS[0], "macer"][0]["rows"])
    cap = radius_cap(1.0, budget)
    for sigma in SIGMAS:
        metrics[f"radius_cap_sigma{sigma}"] = radius_cap(sigma, budget)
    notes = NOTES.format(lbd=LBD, beta=BETA, gamma=GAMMA, n0=budget.n0, n=budget.n, stride=budget.test_stride,
                         count=count, cap=cap, epochs=budget.epochs, k=budget.k, seeds=budget.seeds)
    most_capped = max((metrics[f"at_cap_{arm}_sigma{s}"], arm, s) for arm in ARMS for s in SIGMAS)
    caveats = [
        f"Radius cap: with n = {budget.n} no radius above {cap:.2f}σ can be certified "
        f"({', '.join(f'{radius_cap(s, budget):.3f} at σ = {s}' for s in SIGMAS)}); up to "
        f"{most_capped[0]:.0%} of the images sit at it ({most_capped[1]}, σ = {most_capped[2]}), so ACRs are "
        "lower bounds that compress the differences between arms.",
        "Judged against the paper's baseline (cohen, one noise sample per step); the k-copy gaussian arm sees k "
        f"times as many noisy samples (k = {budget.k}) and is reported, not judged.",
        "LeNet on 8×8 digits for a few epochs with MACER's λ, β picked on a validation split (the paper's "
        "Cifar-10 values collapsed LeNet): a small-scale test, not the paper's setting.",
    ]
    return Outcome(metrics=metrics, table=table, figures=figures, notes=notes, caveats=caveats,
                   data="scikit-learn's bundled handwritten digits (REAL, 8×8 grey, 1347 train / 450 test, "
                        "stratified split with seed 0)")


def _macer_wins(metrics: dict[str, float]) -> bool | None:
    keys = [(f"acr_macer_sigma{s}", f"acr_cohen_sigma{s}") for s in SIGMAS]
    if any(m not in metrics or c not in metrics for m, c in keys):
        return None
    return all(metrics[m] > metrics[c] for m, c in keys)


experiment(
    "macer-vs-gaussian", method="macer",
    claim="Training with MACER gives a larger average certified radius (ACR) than Cohen et al.'s Gaussian "
          "augmentation at the same noise level (Cifar-10, σ = 0.25: 0.556 vs 0.416), without adversarial attacks.",
    rule="MACER's mean ACR over 3 seeds exceeds that of the paper's baseline (Cohen et al.: cross-entropy on "
         "one noise sample per image per step, same model, data, epochs) at both σ = 0.25 and σ = 0.5; the "
         "baseline trained on MACER's k noise copies is reported beside it, not judged",
    verdict=_macer_wins,
)(_run)
