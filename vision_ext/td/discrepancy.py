r"""Transferred discrepancy (Feng, Zhai, He, Wang, Dong 2020): how differently two representations behave
when each is used, through its own optimal linear head, for the same downstream task.

Definition (regression, targets y ∈ R^T). Fit on each representation its least-squares head with intercept,

    ĥ_A = argmin_{W, c} (1/N) Σ_i ‖W ᵀ Φ_A(x_i) + c − y_i‖² + λ_A ‖W‖²_F          (ĥ_B likewise on Φ_B)

and measure their disagreement over the data:  TD = (1/N) Σ_i ‖ĥ_A(Φ_A(x_i)) − ĥ_B(Φ_B(x_i))‖².

Both heads predict the target mean on average, so with centred features A (N×p), B (N×q), C_AA = AᵀA/N etc.,
W_A = (C_AA + λ_A I)⁻¹ C_AY and the intercepts cancel:

    TD = Σ_t [W_Aᵀ C_AA W_A + W_Bᵀ C_BB W_B − 2 W_Aᵀ C_AB W_B]_tt          (per-task values on the diagonal)

— only covariances, so it is streamed batch by batch. The normalised form divides by the mean variance of the
two heads' predictions, TD_norm = TD / ½(Var ĥ_A + Var ĥ_B): 0 when the two heads predict the same thing, 2
when their predictions are uncorrelated (independent representations), in [0, 2] whenever the predictions
are not anti-correlated (always in expectation over isotropic targets, below; at most 4 in general).

Closed form (derived here, the paper's "TD through the singular values of the covariances"). The centred
hat matrices H_A = A (A ᵀA + NλI)⁻¹ Aᵀ map targets to predictions, ŷ_A = H_A y. For isotropic random targets
y ~ N(0, I_N) (every direction of sample space an equally likely task) E‖My‖² = tr(MᵀM), so

    E[TD] = (1/N) tr((H_A − H_B)²) = (1/N) [tr H_A² + tr H_B² − 2 tr H_A H_B],
    tr H_A² = tr((R_A C_AA)²),  tr H_A H_B = tr(R_A C_AB R_B C_BA),  R = (C + λI)⁻¹.

Without ridge H_A, H_B are orthogonal projections of ranks r_A, r_B and tr H_A H_B = ‖C_AA^(-1/2) C_AB
C_BB^(-1/2)‖²_F = Σ ρ_i², the canonical correlations of A and B:

    E[TD] = (r_A + r_B − 2 Σ ρ_i²) / N,      TD_norm = 2 − 4 Σ ρ_i² / (r_A + r_B)
                                             (= 2 − 2·mean ρ² when r_A = r_B)

(normalised by the expected prediction variances (r_A + r_B)/2N). It is 0 iff the spans agree (ρ_i = 1,
e.g. Φ_B = QΦ_A for an orthogonal — indeed any invertible — Q) and 2 for uncorrelated features (ρ_i = 0).

Classification (targets = class labels). The head is least squares on one-hot targets — the best linear
estimate of the class-probability vector P(y | x) (its outputs sum to 1) — so TD above is the squared
distance between the two estimated probability vectors and the invariances and normalised form apply. What
changes downstream decisions is reported too: the disagreement rate P(argmax ĥ_A ≠ argmax ĥ_B), and each
head's accuracy. (The paper leaves the classification discrepancy open; these are our choices.)

Ridge. λ = ridge × mean feature variance (tr C / p), default ``ridge=1e-6``: numerically plain least squares
for full-rank features, the minimum-norm head for rank-deficient ones (constant/dead units, duplicated
features, N ≤ p); relative, so TD stays exactly invariant to orthogonal maps and global rescaling of Φ.
``ridge=0`` uses the pseudo-inverse.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from graftkit.errors import GraftkitError, check_number
from vision_ext.td.linalg import Spectrum
from vision_ext.td.similarity import canonical_correlations_from_statistics, linear_cka_from_statistics
from vision_ext.td.statistics import (
    ArrayLike,
    RepresentationStatistics,
    as_features,
    as_tensor,
    statistics_of,
)

DEFAULT_RIDGE = 1e-6


class TDWarning(UserWarning):
    """The data make TD less meaningful (rank-deficient features, fewer samples than features)."""


@dataclass
class LinearHead:
    """ŷ = x W + c, fitted by (ridge) least squares from the streamed covariances."""

    weight: torch.Tensor  # (D, T)
    bias: torch.Tensor  # (T,)

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return features.to(self.weight) @ self.weight + self.bias


@dataclass
class TDResult:
    """Transferred discrepancy of two representations on one set of targets, with the baselines beside it.

    ``td``: (1/N) Σ ‖ĥ_A − ĥ_B‖² summed over the T target columns (one-hot columns for classification);
    ``normalized``: td / ½(Var ĥ_A + Var ĥ_B); ``per_task`` / ``per_task_normalized``: the same per target
    column (T,); ``disagreement``, ``accuracy_a``, ``accuracy_b``: classification only (else None);
    ``linear_cka``, ``mean_cca``: the baselines on the same samples; ``ridge``: the relative ridge used.
    """

    td: float
    normalized: float
    per_task: torch.Tensor
    per_task_normalized: torch.Tensor
    task: str
    num_samples: int
    ridge: float
    linear_cka: float
    mean_cca: float
    disagreement: float | None = None
    accuracy_a: float | None = None
    accuracy_b: float | None = None

    def as_dict(self) -> dict[str, Any]:
        keys = ("td", "normalized", "disagreement", "accuracy_a", "accuracy_b", "linear_cka", "mean_cca")
        return {key: getattr(self, key) for key in keys}


@dataclass
class ClosedFormTD:
    """Expected TD for isotropic random targets y ~ N(0, I_N): ``td`` per unit-variance target (one column),
    ``normalized`` in [0, 2], and the canonical correlations (meaningful for ridge 0)."""

    td: float
    normalized: float
    canonical_correlations: torch.Tensor


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, 0 where both heads predict a constant (nothing to disagree on)."""
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, numerator / safe, torch.zeros_like(numerator))


def _warn_about(spectrum: Spectrum, n: int, name: str, ridge: float) -> None:
    head = ("the pseudo-inverse (minimum-norm least-squares head)" if ridge == 0
            else f"the stated ridge {ridge:g} × mean feature variance")
    if n <= spectrum.dim:
        warnings.warn(f"{name}: only {n} samples for {spectrum.dim} features, so a least-squares head can "
                      "fit any targets and TD is biased towards 0; use more samples than features (heads use "
                      f"{head})", TDWarning, stacklevel=5)
    elif spectrum.rank < spectrum.dim:
        warnings.warn(f"{name} is rank deficient (numerical rank {spectrum.rank} of {spectrum.dim} "
                      f"features: constant, dead or linearly dependent units); heads use {head}", TDWarning,
                      stacklevel=5)


def least_squares_heads(stats: RepresentationStatistics, ridge: float = DEFAULT_RIDGE,
                        warn: bool = True) -> tuple[LinearHead, LinearHead]:
    """The two ridge least-squares heads (with intercept) fitted from the streamed statistics."""
    check_number("ridge", ridge)
    if stats.target_kind in (None, "none") or stats.dims[2] == 0:
        raise GraftkitError("TD needs targets: class labels (N,) or regression targets (N, T)")
    cov = stats.covariances()
    mean_a, mean_b, mean_y = stats.means()
    heads = []
    for side, name in (("a", "features_a"), ("b", "features_b")):
        spectrum = Spectrum.of(cov[side * 2], ridge)
        if warn:
            _warn_about(spectrum, stats.n, name, ridge)
        weight = spectrum.inverse() @ cov[side + "y"]
        heads.append(LinearHead(weight, mean_y - (mean_a if side == "a" else mean_b) @ weight))
    return heads[0], heads[1]


def td_from_statistics(stats: RepresentationStatistics, ridge: float = DEFAULT_RIDGE,
                       warn: bool = True) -> TDResult:
    """TD (regression form, every target column) from streamed statistics; no pass over the data.

    For class labels this is the squared distance of the one-hot probability estimates; the disagreement
    rate needs the heads' predictions, see :func:`transferred_discrepancy`."""
    head_a, head_b = least_squares_heads(stats, ridge, warn)
    cov = stats.covariances()
    w_a, w_b = head_a.weight, head_b.weight
    var_a = ((cov["aa"] @ w_a) * w_a).sum(0)
    var_b = ((cov["bb"] @ w_b) * w_b).sum(0)
    per_task = (var_a + var_b - 2 * ((cov["ab"] @ w_b) * w_a).sum(0)).clamp_min(0)  # rounding below 0
    mean_variance = (var_a + var_b) / 2
    return TDResult(
        td=float(per_task.sum()),
        normalized=float(_ratio(per_task.sum(), mean_variance.sum())),
        per_task=per_task.cpu(),
        per_task_normalized=_ratio(per_task, mean_variance).cpu(),
        task="classification" if stats.target_kind == "labels" else "regression",
        num_samples=stats.n,
        ridge=ridge,
        linear_cka=linear_cka_from_statistics(stats),
        mean_cca=float(canonical_correlations_from_statistics(stats).mean()),
    )


def _add_agreement(result: TDResult, heads: tuple[LinearHead, LinearHead],
                   batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                   distributed: bool, group: Any) -> None:
    """Second pass: count where the two heads' class decisions differ, and each head's correct decisions."""
    counts: torch.Tensor | None = None
    for a, b, labels in batches:
        pred_a, pred_b = heads[0](a).argmax(1), heads[1](b).argmax(1)
        labels = labels.to(pred_a.device)
        batch = torch.stack([(pred_a != pred_b).sum(), (pred_a == labels).sum(), (pred_b == labels).sum(),
                             torch.tensor(labels.numel(), device=pred_a.device)]).to(torch.float64)
        counts = batch if counts is None else counts + batch
    if counts is None:
        counts = torch.zeros(4, dtype=torch.float64, device=heads[0].weight.device)
    if distributed:
        import torch.distributed as dist

        dist.all_reduce(counts, group=group)
    total = float(counts[3])
    result.disagreement, result.accuracy_a, result.accuracy_b = (float(c) / total for c in counts[:3])


def transferred_discrepancy(features_a: ArrayLike, features_b: ArrayLike, targets: ArrayLike, *,
                            ridge: float = DEFAULT_RIDGE, num_classes: int | None = None,
                            batch_size: int = 8192, distributed: bool = False, group: Any = None) -> TDResult:
    """Transferred discrepancy between two representations of the same N inputs (see the module docstring).

    Args:
        features_a, features_b: (N, p) and (N, q) torch tensors (any device) or numpy arrays; extra axes are
            flattened per sample. p and q may differ.
        targets: class labels (N,) integer → classification (least squares on one-hot targets, plus the
            disagreement rate); float (N,) or (N, T) → regression.
        ridge: relative ridge of the heads (× mean feature variance); 0 = pseudo-inverse.
        num_classes: one-hot width for labels (default: largest label + 1).
        batch_size: rows streamed at a time (memory O((p+q)²), never N×N).
        distributed: each rank passes its own shard; the sufficient statistics (and disagreement counts) are
            summed over ``group`` with torch.distributed, so every rank gets the TD of the whole data set.

    Returns a :class:`TDResult` (td, normalized, per-task values, disagreement/accuracies for classification,
    linear CKA and mean CCA on the same samples).
    """
    stats = statistics_of(features_a, features_b, targets, num_classes=num_classes, batch_size=batch_size)
    if distributed:
        stats.all_reduce(group)
    result = td_from_statistics(stats, ridge)
    if stats.target_kind == "labels":
        a, b, y = as_features(features_a, "features_a"), as_features(features_b, "features_b"), \
            as_tensor(targets, "targets")
        batches = ((a[i:i + batch_size], b[i:i + batch_size], y[i:i + batch_size])
                   for i in range(0, a.shape[0], batch_size))
        _add_agreement(result, least_squares_heads(stats, ridge, warn=False), batches, distributed, group)
    return result


def _model_batches(model_a: Callable, model_b: Callable, loader: Iterable,
                   device: torch.device | None) -> Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    for batch in loader:
        if not isinstance(batch, list | tuple) or len(batch) < 2:
            raise GraftkitError("the data loader must yield (inputs, targets) pairs")
        x, y = batch[0], batch[1]
        if device is not None:
            x = x.to(device)
        with torch.no_grad():
            yield model_a(x).flatten(1), model_b(x).flatten(1), y


def model_discrepancy(model_a: Callable[[torch.Tensor], torch.Tensor],
                      model_b: Callable[[torch.Tensor], torch.Tensor], loader: Iterable, *,
                      ridge: float = DEFAULT_RIDGE, num_classes: int | None = None,
                      device: torch.device | str | None = None, distributed: bool = False,
                      group: Any = None) -> TDResult:
    """TD between the representations two models (callables x → features, e.g. ``net.features``) give to
    the inputs of ``loader`` (an iterable of (inputs, targets) batches, e.g. a DataLoader with a
    DistributedSampler when ``distributed``). Modules are put in eval mode for the passes and restored.

    One streaming pass accumulates the statistics; for class labels a second pass counts disagreements, so
    the loader must yield the same samples again (order may differ; no random augmentation)."""
    owners = (model_a, model_b, getattr(model_a, "__self__", None), getattr(model_b, "__self__", None))
    modules = [m for m in owners if isinstance(m, torch.nn.Module)]
    modes = [(m, m.training) for m in modules]
    device = torch.device(device) if device is not None else None
    try:
        for m, _ in modes:
            m.eval()
        stats = RepresentationStatistics(num_classes)
        for a, b, y in _model_batches(model_a, model_b, loader, device):
            stats.update(a, b, y)
        if stats.n == 0 and not distributed:
            raise GraftkitError("the data loader yielded no samples")
        if distributed:
            stats.all_reduce(group)
        result = td_from_statistics(stats, ridge)
        if stats.target_kind == "labels":
            _add_agreement(result, least_squares_heads(stats, ridge, warn=False),
                           _model_batches(model_a, model_b, loader, device), distributed, group)
    finally:
        for m, training in modes:
            m.train(training)
    return result


def expected_transferred_discrepancy(features_a: ArrayLike, features_b: ArrayLike, *, ridge: float = 0.0,
                                     batch_size: int = 8192) -> ClosedFormTD:
    """Closed form of TD averaged over isotropic random targets y ~ N(0, I_N) (module docstring):
    E[TD] = (1/N)[tr((R_A C_AA)²) + tr((R_B C_BB)²) − 2 tr(R_A C_AB R_B C_BA)], which for ``ridge=0`` is
    (r_A + r_B − 2 Σ ρ_i²)/N, normalised 2 − 4 Σ ρ_i²/(r_A + r_B)."""
    stats = statistics_of(features_a, features_b, batch_size=batch_size)
    cov = stats.covariances()
    r_a, r_b = Spectrum.of(cov["aa"], ridge).inverse(), Spectrum.of(cov["bb"], ridge).inverse()
    h_aa = r_a @ cov["aa"]
    h_bb = r_b @ cov["bb"]
    tr_aa = float(torch.trace(h_aa @ h_aa))
    tr_bb = float(torch.trace(h_bb @ h_bb))
    tr_ab = float(torch.trace(r_a @ cov["ab"] @ r_b @ cov["ab"].T))
    expected = max(tr_aa + tr_bb - 2 * tr_ab, 0.0) / stats.n
    normalized = max(2 - 4 * tr_ab / (tr_aa + tr_bb), 0.0) if tr_aa + tr_bb > 0 else 0.0
    return ClosedFormTD(expected, normalized, canonical_correlations_from_statistics(stats, ridge=ridge))
