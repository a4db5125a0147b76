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
#: the arms of the second phase, all continuing from one shared warm-up checkpoint: training objective and
#: noise copies per image per step (None: the budget's k). "cohen" is the paper's baseline (Cohen et al. 2019:
#: cross-entropy on one noise sample per image per step, the warm-up's own objective continued); "gaussian" is
#: the same cross-entropy on the k copies MACER sees (same data order and noise), a stricter control.
ARMS: dict[str, tuple[str, int | None]] = {"cohen": ("gaussian", 1), "gaussian": ("gaussian", None),
                                           "macer": ("macer", None)}
RADII = (0.0, 0.25, 0.5, 0.75, 1.0)
#: λ, β, γ of the judged run, fixed on a validation split before it (see NOTES and docs/macer.md)
LBD, BETA, GAMMA = 4.0, 16.0, 8.0
#: the paper's learning-rate decays (×0.1 after epochs 200 and 400 of 440) as fractions of the epochs
PAPER_MILESTONES = (200 / 440, 400 / 440)


@dataclass(frozen=True)
class Budget:
    """Training and certification budget, the same for every arm.

    ``epochs`` counts all epochs of an arm: the first ``warmup_epochs`` are the shared warm-up (Cohen's
    objective, λ = 0), the rest the arm's own objective from that checkpoint.
    """

    epochs: int
    warmup_epochs: int
    k: int
    test_stride: int  # certify every test_stride-th test image
    n0: int
    n: int
    seeds: int = 3
    batch_size: int = 64
    lr: float = 0.05
    alpha: float = 0.001

    @property
    def milestones(self) -> list[int]:
        """The paper's step decays at the same fractions of this budget's epochs."""
        return [round(f * self.epochs) for f in PAPER_MILESTONES]


QUICK = Budget(epochs=16, warmup_epochs=8, k=8, test_stride=3, n0=50, n=2000)
FULL = Budget(epochs=32, warmup_epochs=16, k=16, test_stride=1, n0=100, n=4000)


def radius_cap(sigma: float, budget: Budget) -> float:
    """The largest radius CERTIFY can return with ``budget.n`` samples: σ·Φ⁻¹(α^(1/n)) (every sample correct)."""
    from scipy.stats import norm

    return sigma * float(norm.ppf(budget.alpha ** (1 / budget.n)))


def phase_settings(budget: Budget, seed: int) -> tuple[Any, Any]:
    """TrainSettings of the warm-up and of the second phase that together follow one step schedule.

    The second phase starts at the learning rate the schedule has reached after the warm-up, with the
    milestones left shifted by the warm-up's length, and its own data order and noise (``seed`` + 1).
    """
    from vision_ext.macer import TrainSettings

    warmup = TrainSettings(epochs=budget.warmup_epochs, batch_size=budget.batch_size, lr=budget.lr,
                           milestones=budget.milestones, seed=seed)
    decays_done = sum(m <= budget.warmup_epochs for m in budget.milestones)
    second = TrainSettings(epochs=budget.epochs - budget.warmup_epochs, batch_size=budget.batch_size,
                           lr=budget.lr * warmup.lr_decay ** decays_done,
                           milestones=[m - budget.warmup_epochs for m in budget.milestones
                                       if m > budget.warmup_epochs], seed=seed + 1)
    return warmup, second


def train_arms(sigma: float, seed: int, budget: Budget, train: tuple, arms: dict[str, Any],
               progress: Callable[[str], None] | None = None) -> dict[str, tuple[torch.nn.Module, float]]:
    """Warm up one LeNet with Cohen's objective, then train a copy of it per arm; ``arms`` maps a name to a
    MacerConfig (its ``sigma`` must be ``sigma``). Returns each arm's model and its mean seconds per epoch."""
    import copy

    from vision_ext.macer import MacerConfig, train_smoothed
    from vision_ext.models import LeNet

    warmup_settings, second_settings = phase_settings(budget, seed)
    torch.manual_seed(seed)
    warm = LeNet(in_channels=1, num_classes=10, input_size=8)
    if progress is not None:
        progress(f"warm-up, {budget.warmup_epochs} epochs")
    train_smoothed(warm, *train, MacerConfig(objective="gaussian", sigma=sigma, k=1), warmup_settings,
                   progress=False)
    trained = {}
    for name, config in arms.items():
        if progress is not None:
            progress(f"{name}, {second_settings.epochs} epochs")
        model = copy.deepcopy(warm)
        history = train_smoothed(model, *train, config, second_settings, progress=False)
        trained[name] = (model, statistics.mean(h["seconds"] for h in history))
    return trained


def arm_configs(sigma: float, budget: Budget, lbd: float = LBD, beta: float = BETA,
                gamma: float = GAMMA) -> dict[str, Any]:
    """The MacerConfig of every arm in ARMS at ``sigma``."""
    from vision_ext.macer import MacerConfig

    return {arm: MacerConfig(objective=objective, sigma=sigma, k=copies or budget.k, lbd=lbd, beta=beta,
                             gamma=gamma)
            for arm, (objective, copies) in ARMS.items()}


def certify(model: torch.nn.Module, sigma: float, seed: int, budget: Budget, images: torch.Tensor,
            labels: torch.Tensor) -> dict[str, Any]:
    """Cohen et al.'s CERTIFY on ``images``: rows, ACR, certified accuracy on RADII, share at the radius cap."""
    from vision_ext.macer import Smooth
    from vision_ext.macer.smoothing import certify_dataset, summarize_certification

    started = time.perf_counter()
    rows = certify_dataset(Smooth(model, 10, sigma, seed=seed), images, labels, budget.n0, budget.n,
                           budget.alpha, batch_size=budget.n)
    summary = summarize_certification(rows, grid=RADII)
    cap = radius_cap(sigma, budget)
    return {"rows": rows, "acr": summary["acr"], "certified_accuracy": summary["certified_accuracy"],
            "at_cap": sum(row["correct"] and row["radius"] >= cap - 1e-9 for row in rows) / len(rows),
            "certify_seconds": time.perf_counter() - started}


def validation_split() -> tuple[tuple, tuple]:
    """The training split of the digits cut once more (stratified, seed 0): 1000 to train on, 347 to select
    λ and β on. The test images are never used to choose anything."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    from vision_ext.macer.data import digits_split

    images, labels = digits_split("train")
    fit, held = train_test_split(np.arange(len(labels)), test_size=347, random_state=0, stratify=labels.numpy())
    fit, held = torch.from_numpy(np.sort(fit)), torch.from_numpy(np.sort(held))
    return (images[fit], labels[fit]), (images[held], labels[held])


def validation_grid(budget: Budget, sigma: float, settings: list[tuple[float, float]], seeds: int = 2,
                    progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """ACR on the validation images of the Cohen arm and of MACER with each (λ, β) in ``settings`` (γ = 8),
    all from the same warm-up checkpoint per seed; one row per arm with the mean ACR over ``seeds``."""
    from vision_ext.macer import MacerConfig

    train, held = validation_split()
    acrs: dict[str, list[float]] = {}
    for seed in range(seeds):
        arms = {"cohen": MacerConfig(objective="gaussian", sigma=sigma, k=1)}
        for lbd, beta in settings:
            arms[f"macer λ={lbd} β={beta}"] = MacerConfig(objective="macer", sigma=sigma, k=budget.k, lbd=lbd,
                                                          beta=beta, gamma=GAMMA)
        for name, (model, _) in train_arms(sigma, seed, budget, train, arms, progress).items():
            acrs.setdefault(name, []).append(certify(model, sigma, seed, budget, *held)["acr"])
    return [{"arm": name, "sigma": sigma, "validation ACR": statistics.mean(v), "per seed": v}
            for name, v in acrs.items()]


def compare(budget: Budget, base_seed: int = 0, sigmas: tuple[float, ...] = SIGMAS,
            progress: Callable[[str], None] | None = None) -> dict[tuple, list[dict]]:
    """Every (σ, arm) pair trained (from one warm-up per σ and seed) and certified with ``budget.seeds``
    seeds; ``progress(stage)`` is told where the run is."""
    from vision_ext.macer.data import digits_split

    train, test = digits_split("train"), digits_split("test")
    images, labels = test[0][:: budget.test_stride], test[1][:: budget.test_stride]
    results: dict[tuple, list[dict]] = {(sigma, arm): [] for sigma in sigmas for arm in ARMS}
    for sigma in sigmas:
        for s in range(budget.seeds):
            def say(stage: str, sigma: float = sigma, s: int = s) -> None:
                if progress is not None:
                    progress(f"σ={sigma} seed {s + 1}/{budget.seeds}: {stage}")

            trained = train_arms(sigma, base_seed + s, budget, train, arm_configs(sigma, budget), say)
            for arm, (model, seconds_per_epoch) in trained.items():
                say(f"{arm}: certify {len(labels)} images")
                run = certify(model, sigma, base_seed + s, budget, images, labels)
                results[sigma, arm].append({**run, "copies": ARMS[arm][1] or budget.k,
                                            "seconds_per_epoch": seconds_per_epoch})
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
    for sigma in sorted({sigma for sigma, _ in results}):
        if (sigma, "macer") in results and (sigma, "cohen") in results:  # paired: same seed, same warm-up
            gains = [m["acr"] - c["acr"] for m, c in zip(results[sigma, "macer"], results[sigma, "cohen"])]
            metrics[f"acr_gain_macer_vs_cohen_sigma{sigma}"] = statistics.mean(gains)
            metrics[f"seeds_macer_above_cohen_sigma{sigma}"] = sum(g > 0 for g in gains)
    return metrics, table


NOTES = ("LeNet (padding 2, 8×8 input) trained with SGD (lr 0.05, momentum 0.9, weight decay 5e-4, batch 64) on "
         "the 1347-image training split with the paper's step schedule scaled to {epochs} epochs (lr ×0.1 after "
         "epochs {milestones}, as 200 and 400 of the paper's 440). The first {warmup} epochs are one shared "
         "warm-up per σ and seed with Cohen et al.'s objective (λ = 0: cross-entropy on one noise sample per "
         "image per step); every arm continues from that checkpoint for the remaining {second} epochs with a "
         "fresh optimizer and the same data order and noise: cohen (the paper's baseline: the same objective "
         "continued), gaussian (cross-entropy on the k noisy copies MACER sees, a stricter control with k times "
         "the noisy samples), macer (λ = {lbd}, β = {beta}, γ = {gamma}, the reference's loss). λ and β were fixed "
         "before this run on a validation split of the training set (1000 / 347 images, 2 seeds, the same "
         "epochs and warm-up, n = 1000), by ACR against the cohen arm; validation ACR σ = 0.25 / 0.5: cohen "
         "0.260 / 0.144; MACER λ/β 0.5/4: 0.260 / 0.136, 1/4: 0.272 / 0.161, 2/4: 0.285 / 0.196, 4/16: "
         "0.297 / 0.228 (chosen), 12/16 (the paper's Cifar-10 values): 0.267 / 0.171. Certification: Cohen et "
         "al.'s CERTIFY with n0 = {n0}, n = {n}, α = 0.001 on 1 in {stride} test images ({count} images); with "
         "n = {n} the largest certifiable radius (the cap) is σ·Φ⁻¹(α^(1/n)) = {cap:.2f}σ; 'share at radius cap' "
         "is the fraction of certified images at it, whose true radius may be larger (paper: n = 100000, "
         "Cifar-10, ResNet-110, 440 epochs, k = 16). k = {k}, {seeds} seeds; runs use one thread.")


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
                         count=count, cap=cap, epochs=budget.epochs, k=budget.k, seeds=budget.seeds,
                         milestones=" and ".join(map(str, budget.milestones)), warmup=budget.warmup_epochs,
                         second=budget.epochs - budget.warmup_epochs)
    most_capped = max((metrics[f"at_cap_{arm}_sigma{s}"], arm, s) for arm in ARMS for s in SIGMAS)
    caveats = [
        f"Radius cap: with n = {budget.n} no radius above {cap:.2f}σ can be certified "
        f"({', '.join(f'{radius_cap(s, budget):.3f} at σ = {s}' for s in SIGMAS)}); up to "
        f"{most_capped[0]:.0%} of the images sit at it ({most_capped[1]}, σ = {most_capped[2]}), so ACRs are "
        "lower bounds that compress the differences between arms.",
        "Judged against the paper's baseline (cohen, one noise sample per step); the k-copy gaussian arm sees k "
        f"times as many noisy samples (k = {budget.k}) and is reported, not judged.",
        "Paired by seed (same warm-up checkpoint): MACER − cohen ACR "
        + ", ".join(f"{metrics[f'acr_gain_macer_vs_cohen_sigma{s}']:+.3f} at σ = {s} (MACER ahead in "
                    f"{metrics[f'seeds_macer_above_cohen_sigma{s}']} of {budget.seeds} seeds)" for s in SIGMAS) + ".",
        f"LeNet on 8×8 digits, {budget.epochs} epochs of which the first {budget.warmup_epochs} are a shared "
        f"Cohen warm-up, λ = {LBD} and β = {BETA} picked on a validation split against cohen (the paper's λ = 12 "
        "scored lower there): a small-scale test, not the paper's setting.",
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
         "one noise sample per image per step, same model, data, epochs) at both σ = 0.25 and σ = 0.5; every "
         "arm continues from one shared warm-up with Cohen's objective (the first half of the epochs, per σ and "
         "seed); λ and β fixed beforehand on a validation split of the training images; the baseline trained "
         "on MACER's k noise copies is reported beside it, not judged",
    verdict=_macer_wins,
)(_run)
