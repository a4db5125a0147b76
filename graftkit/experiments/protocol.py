"""The protocol graftkit's experiments judge by (issues 27 and 28), for any experiment, MLM or not.

1. **Gates before verdicts.** A :class:`Gate` is a condition without which the comparison decides nothing
   (every arm left the word-frequency plateau, a teacher is good enough, the run is in the claim's regime).
   :func:`gate_metrics` puts them in the metrics (``gate_<name>``: passed, ``failed_gate``: the first that
   failed); a verdict wrapped in :func:`gated` is ``None`` (undecided) while one failed, and
   :func:`gate_caveats` says which, with its numbers, in the report.
2. **Paired seeds.** :func:`paired_seeds` gives the seeds of a run (``QUICK_SEEDS`` at quick, ``FULL_SEEDS`` at
   ``--full``); every arm of one seed sees the same data order and masks (the experiment seeds them with the
   seed) and the same initial values of the parts the arms share (:func:`copy_shared_init`).
3. **Each arm at its own best learning rate.** :func:`best_learning_rate` scores a small grid on validation
   data (``--full``, with a tuning seed that no judged run uses: :func:`tuning_seed`); the values it chose are
   fixed for the quick runs and stated in the rule (:class:`LearningRates`).
4. **An interval.** :func:`paired_difference` gives the mean per-seed difference between two arms and its
   95% percentile-bootstrap interval (``<name>_ci_low``/``_ci_high``); with two seeds it spans the two
   differences.
5. **Per-seed metrics.** :func:`per_seed` writes one metric per seed (``<name>_seed<s>``) beside the summary,
   so that results.json holds every seed's value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from graftkit.errors import GraftkitError

#: seeds per arm: at least 2 at quick and 3 at --full
QUICK_SEEDS, FULL_SEEDS = 2, 3
#: the tuning seed is the run's seed plus this: far from every judged seed (ctx.seed + 0, 1, 2, ..)
TUNING_SEED_OFFSET = 1000
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class Gate:
    """A precondition of the verdict: ``name`` (a metric-key fragment), whether it ``passed``, and ``detail``,
    one sentence with the numbers it was decided on."""

    name: str
    passed: bool
    detail: str


def gate_metrics(gates: Sequence[Gate]) -> dict[str, Any]:
    """``gate_<name>`` (passed) for every gate, and ``failed_gate``: the first failed gate's name, or None."""
    if not gates:
        raise GraftkitError("an experiment under the protocol states at least one gate")
    failed = next((g.name for g in gates if not g.passed), None)
    return {**{f"gate_{g.name}": g.passed for g in gates}, "failed_gate": failed}


def gated(rule: Callable[[dict[str, Any]], bool | None]) -> Callable[[dict[str, Any]], bool | None]:
    """The verdict ``rule`` behind the gates: undecided (None) while ``failed_gate`` names a gate, or when the
    metrics hold no gates at all (a run that never checked them decides nothing)."""

    def verdict(metrics: dict[str, Any]) -> bool | None:
        if "failed_gate" not in metrics or metrics["failed_gate"] is not None:
            return None
        return rule(metrics)

    verdict.__doc__ = rule.__doc__
    return verdict


def gate_caveats(gates: Sequence[Gate]) -> list[str]:
    """One caveat per failed gate (the verdict is undecided because of it), none when all passed."""
    return [f"Undecided: gate '{g.name}' failed: {g.detail}" for g in gates if not g.passed]


def paired_seeds(seed: int, quick: bool) -> list[int]:
    """The judged seeds of a run started with ``seed``: ``seed, seed + 1, ..`` (``QUICK_SEEDS`` or
    ``FULL_SEEDS`` of them)."""
    return [seed + i for i in range(QUICK_SEEDS if quick else FULL_SEEDS)]


def tuning_seed(seed: int) -> int:
    """The seed of the learning-rate grid runs: never one of the judged seeds."""
    return seed + TUNING_SEED_OFFSET


def bootstrap_interval(values: Sequence[float], level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (resampled with replacement, ``seed`` fixes
    the resamples). NaN in ``values`` gives (nan, nan); a single value gives (value, value)."""
    if not values:
        raise GraftkitError("a bootstrap interval needs at least one value")
    if not 0 < level < 1:
        raise GraftkitError(f"level must be in (0, 1), got {level}")
    data = torch.tensor([float(v) for v in values], dtype=torch.float64)
    if data.isnan().any():
        return math.nan, math.nan
    picks = torch.randint(len(data), (resamples, len(data)), generator=torch.Generator().manual_seed(seed))
    means = data[picks].mean(1)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64)).tolist()
    return low, high


def paired_difference(name: str, a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """The per-seed differences ``a[i] - b[i]`` (the arms of one seed are paired): ``<name>_mean`` and the
    bootstrap interval of their mean, ``<name>_ci_low`` and ``<name>_ci_high``."""
    if len(a) != len(b) or not a:
        raise GraftkitError(f"paired values must come one per seed for both arms, got {len(a)} and {len(b)}")
    differences = [x - y for x, y in zip(a, b, strict=True)]
    low, high = bootstrap_interval(differences, level)
    return {f"{name}_mean": sum(differences) / len(differences), f"{name}_ci_low": low, f"{name}_ci_high": high}


def per_seed(name: str, seeds: Sequence[int], values: Sequence[Any]) -> dict[str, Any]:
    """``<name>_seed<s>``: one metric per seed."""
    if len(seeds) != len(values):
        raise GraftkitError(f"{len(values)} values for {len(seeds)} seeds")
    return {f"{name}_seed{s}": v for s, v in zip(seeds, values, strict=True)}


def best_learning_rate(grid: Sequence[float], score: Callable[[float], float]) -> tuple[float, dict[float, float]]:
    """The learning rate of ``grid`` with the lowest validation ``score(lr)`` (nan, e.g. diverged, counts as
    worst; ties go to the smaller lr) and every lr's score."""
    if not grid:
        raise GraftkitError("the learning-rate grid is empty")
    scores = {lr: float(score(lr)) for lr in grid}
    finite = {lr: s for lr, s in scores.items() if math.isfinite(s)}
    best = min(finite, key=lambda lr: (finite[lr], lr)) if finite else min(grid)
    return best, scores


@dataclass(frozen=True)
class LearningRates:
    """Each arm's learning rate: ``grid`` is searched at ``--full`` (:func:`best_learning_rate`); ``quick`` holds
    the values that search chose, fixed for the quick runs and stated in the rule."""

    grid: tuple[float, ...]
    quick: Mapping[str, float]

    def __post_init__(self) -> None:
        if not self.grid or any(not lr > 0 for lr in self.grid):
            raise GraftkitError(f"the learning-rate grid must be positive values, got {self.grid}")
        off_grid = {arm: lr for arm, lr in self.quick.items() if lr not in self.grid}
        if off_grid:
            raise GraftkitError(f"quick learning rates must come from the grid {self.grid}, got {off_grid}")

    def words(self) -> str:
        chosen = ", ".join(f"{arm} {lr:g}" for arm, lr in self.quick.items())
        return f"lr grid {', '.join(f'{lr:g}' for lr in self.grid)} searched at --full; quick uses {chosen}"


def copy_shared_init(model: torch.nn.Module, reference: Mapping[str, torch.Tensor]) -> list[str]:
    """Give ``model`` the initial values of ``reference`` (a state dict) for every parameter and buffer they
    share (same name and shape), so that paired arms start alike where they are alike; returns the names
    copied, in ``model``'s order."""
    state = model.state_dict()
    shared = [name for name, value in state.items()
              if name in reference and reference[name].shape == value.shape]
    with torch.no_grad():
        for name in shared:
            state[name].copy_(reference[name])
    return shared
