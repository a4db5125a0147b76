"""Randomized-smoothing prediction and certification (Cohen, Rosenfeld & Kolter, ICML 2019).

The smoothed classifier g(x) = argmax_c P(f(x + δ) = c), δ ~ N(0, σ²I), is robust within the L2 radius
R = σ·Φ⁻¹(p_A) whenever P(f(x + δ) = c_A) ≥ p_A > ½. ``certify`` estimates a lower bound p_A from Monte
Carlo counts (one-sided Clopper–Pearson at level α); ``predict`` returns g(x) or abstains when a two-sided
binomial test cannot tell the top two classes apart at level α.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy.stats import beta as beta_dist
from scipy.stats import binomtest, norm

from graftkit.errors import GraftkitError, check_int
from vision_ext.macer.configuration_macer import check_sigma

ABSTAIN = -1


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 − α) Clopper–Pearson lower bound on a binomial proportion: the α quantile of
    Beta(s, n − s + 1), and 0 when s = 0 (statsmodels' ``proportion_confint(s, n, 2α, "beta")[0]``)."""
    if not 0 <= successes <= trials:
        raise GraftkitError(f"successes must lie in [0, trials], got {successes} of {trials}")
    if successes == 0:
        return 0.0
    return float(beta_dist.ppf(alpha, successes, trials - successes + 1))


def certified_radius(p_lower: float, sigma: float) -> float:
    """σ·Φ⁻¹(p_A) for p_A ≥ ½ (the L2 radius of Cohen et al.'s Theorem 1); 0 below ½ (abstain)."""
    return sigma * float(norm.ppf(p_lower)) if p_lower >= 0.5 else 0.0


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise GraftkitError(f"alpha (failure probability) must lie in (0, 1), got {alpha!r}")


def check_certify_args(n0: int, n: int, alpha: float, batch_size: int) -> None:
    """Cohen et al.'s CERTIFY needs 1 <= n0 <= n samples, alpha in (0, 1) and a positive batch size."""
    check_int("n0", n0)
    check_int("n", n)
    check_int("batch_size", batch_size)
    if n0 > n:
        raise GraftkitError(f"n0 (selection samples) must not exceed n (estimation samples): {n0} > {n}")
    _check_alpha(alpha)


class Smooth:
    """The Gaussian-smoothed version of ``base_classifier`` (a module mapping (N, C, H, W) to logits).

    Noise is drawn from a generator seeded with ``seed`` on the input's device; call :meth:`reseed` to make
    one input's result independent of what was certified before it. Samples are evaluated ``batch_size`` at
    a time: one forward pass and one ``bincount`` per batch, no Python loop per sample.
    """

    def __init__(self, base_classifier: torch.nn.Module, num_classes: int, sigma: float,
                 seed: int = 0) -> None:
        check_sigma(sigma)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise GraftkitError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.base_classifier = base_classifier
        self.num_classes = num_classes
        self.sigma = float(sigma)
        self.seed = seed
        self._generator: torch.Generator | None = None

    def reseed(self, seed: int) -> None:
        self.seed = seed
        self._generator = None

    def _generator_for(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        return self._generator

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise GraftkitError(f"Smooth expects one image (C, H, W), got {shape}")
        if not x.is_floating_point():
            raise GraftkitError(f"Smooth expects a floating-point image, got {x.dtype}")
        if not torch.isfinite(x).all():
            raise GraftkitError("the image contains NaN or infinite values")

    @torch.no_grad()
    def sample_counts(self, x: torch.Tensor, num: int, batch_size: int) -> torch.Tensor:
        """How often f(x + δ) picks each class over ``num`` noise draws: a (num_classes,) int64 tensor.

        Raises ``GraftkitError`` when the base classifier returns NaN or infinite logits (no class is picked).
        """
        self._check_input(x)
        check_int("the number of noise samples", num)
        check_int("batch_size", batch_size)
        generator = self._generator_for(x.device)
        was_training = self.base_classifier.training
        self.base_classifier.eval()
        counts = torch.zeros(self.num_classes, dtype=torch.int64, device=x.device)
        try:
            for start in range(0, num, batch_size):
                size = min(batch_size, num - start)
                batch = torch.randn((size, *x.shape), generator=generator, device=x.device, dtype=x.dtype)
                batch.mul_(self.sigma).add_(x)
                logits = self.base_classifier(batch)
                if logits.shape != (size, self.num_classes):
                    raise GraftkitError(f"the base classifier returned logits of shape "
                                        f"{tuple(logits.shape)}, expected ({size}, {self.num_classes})")
                if not torch.isfinite(logits).all():
                    # argmax would count a NaN row as class 0 and certify a model that outputs garbage
                    raise GraftkitError(f"the base classifier returned non-finite logits (NaN or inf) on "
                                        f"noisy samples {start}-{start + size - 1} of {num}")
                counts += torch.bincount(logits.argmax(1), minlength=self.num_classes)
        finally:
            self.base_classifier.train(was_training)
        return counts

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int) -> int:
        """g(x), or ``ABSTAIN`` (−1) when the two-sided binomial test of the top two counts has p-value > α.

        With probability at least 1 − α the returned class equals g(x) (Hung & Fithian's test).
        """
        _check_alpha(alpha)
        counts = self.sample_counts(x, n, batch_size)
        top2 = counts.topk(2)
        count1, count2 = int(top2.values[0]), int(top2.values[1])
        if binomtest(count1, count1 + count2, p=0.5).pvalue > alpha:
            return ABSTAIN
        return int(top2.indices[0])

    def certify(self, x: torch.Tensor, n0: int = 100, n: int = 100_000, alpha: float = 0.001,
                batch_size: int = 1000) -> tuple[int, float]:
        """(class, radius): ``n0`` draws select the top class c_A, ``n`` fresh draws bound p_A from below.

        Returns (``ABSTAIN``, 0.0) when p_A < ½. With probability at least 1 − α, g is constant (= c_A)
        within the returned L2 radius around x.
        """
        check_certify_args(n0, n, alpha, batch_size)
        selection = self.sample_counts(x, n0, batch_size)
        top_class = int(selection.argmax())
        n_top = int(self.sample_counts(x, n, batch_size)[top_class])
        p_lower = clopper_pearson_lower(n_top, n, alpha)
        if p_lower < 0.5:
            return ABSTAIN, 0.0
        return top_class, certified_radius(p_lower, self.sigma)


def certified_accuracy(radii: Sequence[float], correct: Sequence[bool], grid: Sequence[float]) -> list[float]:
    """Fraction of all points that are correctly classified with certified radius ≥ r, for r in ``grid``."""
    radii_arr, correct_arr = np.asarray(radii, dtype=float), np.asarray(correct, dtype=bool)
    if len(radii_arr) == 0:
        raise GraftkitError("no certified points")
    return [float(np.mean(correct_arr & (radii_arr >= r))) for r in grid]


def average_certified_radius(radii: Sequence[float], correct: Sequence[bool]) -> float:
    """ACR: the sum of the radii of correctly certified points divided by the number of all points."""
    radii_arr, correct_arr = np.asarray(radii, dtype=float), np.asarray(correct, dtype=bool)
    if len(radii_arr) == 0:
        raise GraftkitError("no certified points")
    return float(np.sum(radii_arr * correct_arr) / len(radii_arr))


def radius_grid(max_radius: float, step: float = 0.25) -> list[float]:
    """0, step, 2·step, … up to the first multiple of ``step`` at or above ``max_radius``."""
    return [i * step for i in range(int(math.ceil(max(max_radius, 0.0) / step)) + 1)]


def certify_dataset(smooth: Smooth, images: torch.Tensor, labels: torch.Tensor, n0: int = 100, n: int = 100_000,
                    alpha: float = 0.001, batch_size: int = 1000, progress: bool = False) -> list[dict[str, Any]]:
    """Certify every image; one row per image: idx, label, predict, radius, correct, time (seconds).

    The noise of image i is seeded with ``smooth.seed + i``, so a row does not depend on which images were
    certified before it (a run can be split or resumed and give the same rows).
    """
    from tqdm.auto import tqdm

    if images.dim() != 4 or labels.dim() != 1 or len(images) != len(labels):
        raise GraftkitError(f"expected images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and "
                            f"{tuple(labels.shape)}")
    check_certify_args(n0, n, alpha, batch_size)
    base_seed, rows = smooth.seed, []
    try:
        for idx in tqdm(range(len(images)), desc="certify", unit="img", disable=not progress):
            smooth.reseed(base_seed + idx)
            started = time.perf_counter()
            prediction, radius = smooth.certify(images[idx], n0, n, alpha, batch_size)
            label = int(labels[idx])
            rows.append({"idx": idx, "label": label, "predict": prediction, "radius": radius,
                         "correct": int(prediction == label), "time": time.perf_counter() - started})
    finally:
        smooth.reseed(base_seed)
    return rows


def summarize_certification(rows: Sequence[dict[str, Any]], grid: Sequence[float] | None = None,
                            step: float = 0.25) -> dict[str, Any]:
    """Certified accuracy at the radii of ``grid`` (default 0, ``step``, … past the largest radius), and ACR."""
    radii = [row["radius"] for row in rows]
    correct = [bool(row["correct"]) for row in rows]
    grid = list(grid) if grid is not None else radius_grid(max(radii, default=0.0) + step, step)
    return {"grid": grid, "certified_accuracy": certified_accuracy(radii, correct, grid),
            "acr": average_certified_radius(radii, correct)}
