"""Streaming sufficient statistics of two representations and their targets.

Every quantity of this package (least-squares heads, transferred discrepancy, linear CKA, canonical
correlations) is a function of the sample count, the sums and the cross-products

    n,  Σ a,  Σ b,  Σ y,  Σ y²,  Σ a aᵀ,  Σ b bᵀ,  Σ a bᵀ,  Σ a yᵀ,  Σ b yᵀ

over the samples (a = Φ_A(x) ∈ R^p, b = Φ_B(x) ∈ R^q, y ∈ R^T the targets, one-hot for class labels). They are
accumulated batch by batch in float64 on the features' device, so memory is O((p + q)² + (p + q)·T) whatever N
is, and never an N×N matrix. Sums add across processes, so ``all_reduce`` (torch.distributed, SUM) turns the
statistics of each rank's shard into those of the whole data set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from graftkit.errors import GraftkitError, check_int

ArrayLike = torch.Tensor | np.ndarray

_SUMS = ("sum_a", "sum_b", "sum_y", "sum_yy", "aa", "bb", "ab", "ay", "by")


def as_tensor(x: Any, name: str) -> torch.Tensor:
    """A torch view of ``x`` (numpy array or tensor, no copy), flattened to (N, D) when it has more axes."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    elif not isinstance(x, torch.Tensor):
        raise GraftkitError(f"{name} must be a torch tensor or a numpy array, got {type(x).__name__}")
    if x.dim() == 0:
        raise GraftkitError(f"{name} must have a sample axis, got a scalar")
    if x.is_complex():
        raise GraftkitError(f"{name} must be real, got {x.dtype}")
    return x


def as_features(x: Any, name: str) -> torch.Tensor:
    """Features (N, D): extra axes (channels, pixels) are flattened per sample; a vector is one feature."""
    x = as_tensor(x, name)
    if x.dim() == 1:
        x = x.unsqueeze(1)
    elif x.dim() > 2:
        x = x.flatten(1)
    if x.shape[1] == 0:
        raise GraftkitError(f"{name} has no features (shape {tuple(x.shape)})")
    return x


def check_same_samples(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape[0] != b.shape[0]:
        raise GraftkitError(f"features_a has {a.shape[0]} samples but features_b has {b.shape[0]}: both "
                            "representations must be computed on the same inputs, in the same order")


def check_finite(x: torch.Tensor, name: str) -> None:
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise GraftkitError(f"{name} contains {bad} NaN/inf value(s); clean or drop those samples first")


def is_labels(targets: torch.Tensor) -> bool:
    """Class labels are a 1-D integer (or bool) tensor; anything else is a regression target."""
    return targets.dim() == 1 and not targets.is_floating_point()


class RepresentationStatistics:
    """Sums and cross-products of two representations (and optionally targets), accumulated in float64.

    Args:
        num_classes: width of the one-hot encoding of class labels; ``None`` grows it to the largest label
            seen (+1), across ranks too.

    ``update(a, b, y)`` adds a batch: ``a`` (n, p), ``b`` (n, q), ``y`` class labels (n,) or regression
    targets (n, T) or ``None``. Every batch must agree on p, q and the kind of target. ``all_reduce()`` sums
    the statistics over the ranks of a torch.distributed process group.
    """

    def __init__(self, num_classes: int | None = None) -> None:
        if num_classes is not None:
            check_int("num_classes", num_classes)
        self.num_classes = num_classes
        self.target_kind: str | None = None  # "labels", "regression" or "none", fixed by the first batch
        self.n = 0
        self.device: torch.device | None = None
        for key in _SUMS:
            setattr(self, key, None)

    # ----------------------------------------------------------------------------------------- accumulation
    def update(self, features_a: ArrayLike, features_b: ArrayLike, targets: ArrayLike | None = None) -> None:
        a = as_features(features_a, "features_a")
        b = as_features(features_b, "features_b")
        check_same_samples(a, b)
        if a.device != b.device:
            raise GraftkitError(f"features_a is on {a.device} but features_b is on {b.device}")
        check_finite(a, "features_a")
        check_finite(b, "features_b")
        y = self._encode_targets(targets, a.shape[0], a.device)
        if a.shape[0] == 0:
            return
        if self.device is None:
            self._allocate(a.shape[1], b.shape[1], y.shape[1], a.device)
        elif (a.shape[1], b.shape[1]) != (self.aa.shape[0], self.bb.shape[0]):
            raise GraftkitError(f"this batch has {a.shape[1]} and {b.shape[1]} features but earlier batches "
                                f"had {self.aa.shape[0]} and {self.bb.shape[0]}")
        a, b, y = (t.to(self.device, torch.float64) for t in (a, b, y))
        if y.shape[1] != self.ay.shape[1]:
            if self.target_kind != "labels":
                raise GraftkitError(f"this batch has {y.shape[1]} target columns but earlier batches had "
                                    f"{self.ay.shape[1]}")
            self._widen_targets(y.shape[1])
        self.n += a.shape[0]
        self.sum_a += a.sum(0)
        self.sum_b += b.sum(0)
        self.sum_y += y.sum(0)
        self.sum_yy += (y * y).sum(0)
        self.aa += a.T @ a
        self.bb += b.T @ b
        self.ab += a.T @ b
        self.ay += a.T @ y
        self.by += b.T @ y

    def _encode_targets(self, targets: ArrayLike | None, n: int, device: torch.device) -> torch.Tensor:
        if targets is None:
            kind, y = "none", torch.zeros(n, 0, device=device)
        else:
            t = as_tensor(targets, "targets")
            if t.shape[0] != n:
                raise GraftkitError(f"targets have {t.shape[0]} samples but the features have {n}")
            if is_labels(t):
                kind, y = "labels", self._one_hot(t.to(device))
            else:
                if t.dim() > 2:
                    raise GraftkitError(f"regression targets must be (N,) or (N, T), got shape "
                                        f"{tuple(t.shape)}")
                check_finite(t, "targets")
                kind, y = "regression", (t.unsqueeze(1) if t.dim() == 1 else t).to(device)
        if self.target_kind is None:
            self.target_kind = kind
        elif kind != self.target_kind:
            raise GraftkitError(f"this batch has {kind} targets but earlier batches had {self.target_kind}")
        return y

    def _one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.long()
        if labels.numel() and int(labels.min()) < 0:
            raise GraftkitError(f"class labels must be >= 0, got {int(labels.min())}")
        top = int(labels.max()) + 1 if labels.numel() else 0
        if self.num_classes is not None and top > self.num_classes:
            raise GraftkitError(f"label {top - 1} is out of range for num_classes={self.num_classes}")
        width = self.num_classes if self.num_classes is not None else max(top, self.ay.shape[1] if
                                                                           self.ay is not None else 0)
        return torch.nn.functional.one_hot(labels, width).to(torch.float64)

    def _allocate(self, p: int, q: int, t: int, device: torch.device) -> None:
        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, dtype=torch.float64, device=device)

        self.device = device
        self.sum_a, self.sum_b, self.sum_y, self.sum_yy = zeros(p), zeros(q), zeros(t), zeros(t)
        self.aa, self.bb, self.ab = zeros(p, p), zeros(q, q), zeros(p, q)
        self.ay, self.by = zeros(p, t), zeros(q, t)

    def _widen_targets(self, width: int) -> None:
        """Unseen classes so far have all-zero one-hot columns: padding with zeros is exact."""
        extra = width - self.ay.shape[1]
        pad = torch.nn.functional.pad
        self.sum_y, self.sum_yy = pad(self.sum_y, (0, extra)), pad(self.sum_yy, (0, extra))
        self.ay, self.by = pad(self.ay, (0, extra)), pad(self.by, (0, extra))

    # ------------------------------------------------------------------------------------------ distributed
    def all_reduce(self, group: Any = None) -> None:
        """Sum the statistics over the ranks of ``group`` (every rank must call it, after its last update)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise GraftkitError("all_reduce needs an initialised torch.distributed process group")
        if self.device is None:
            raise GraftkitError("a rank has no samples: give every rank at least one batch before all_reduce")
        width = torch.tensor([self.ay.shape[1]], device=self.device)
        dist.all_reduce(width, op=dist.ReduceOp.MAX, group=group)
        if int(width) > self.ay.shape[1]:
            self._widen_targets(int(width))
        parts = [getattr(self, key) for key in _SUMS]
        flat = torch.cat([torch.tensor([float(self.n)], dtype=torch.float64, device=self.device)]
                         + [p.reshape(-1) for p in parts])
        dist.all_reduce(flat, group=group)
        self.n = int(round(float(flat[0])))
        offset = 1
        for key, part in zip(_SUMS, parts):
            setattr(self, key, flat[offset:offset + part.numel()].view_as(part))
            offset += part.numel()

    # ------------------------------------------------------------------------------------------- moments
    def _require(self, minimum: int = 2) -> None:
        if self.n < minimum:
            raise GraftkitError(f"need at least {minimum} samples, got {self.n}")

    @property
    def dims(self) -> tuple[int, int, int]:
        """(p, q, T): the two feature dimensions and the number of target columns."""
        self._require(1)
        return self.aa.shape[0], self.bb.shape[0], self.ay.shape[1]

    def covariances(self) -> dict[str, torch.Tensor]:
        """Centred (biased, 1/N) covariances: ``aa`` (p, p), ``bb``, ``ab`` (p, q), ``ay`` (p, T), ``by``,
        and ``yy`` the target variances (T,)."""
        self._require()
        n = float(self.n)
        mean_a, mean_b, mean_y = self.sum_a / n, self.sum_b / n, self.sum_y / n
        aa = self.aa / n - torch.outer(mean_a, mean_a)
        bb = self.bb / n - torch.outer(mean_b, mean_b)
        return {
            "aa": (aa + aa.T) / 2,
            "bb": (bb + bb.T) / 2,
            "ab": self.ab / n - torch.outer(mean_a, mean_b),
            "ay": self.ay / n - torch.outer(mean_a, mean_y),
            "by": self.by / n - torch.outer(mean_b, mean_y),
            "yy": (self.sum_yy / n - mean_y ** 2).clamp_min(0),
        }

    def means(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self._require(1)
        return self.sum_a / self.n, self.sum_b / self.n, self.sum_y / self.n

    def __repr__(self) -> str:
        if self.device is None:
            return "RepresentationStatistics(empty)"
        p, q, t = self.dims
        return f"RepresentationStatistics(n={self.n}, p={p}, q={q}, targets={self.target_kind}:{t})"


def statistics_of(features_a: ArrayLike, features_b: ArrayLike, targets: ArrayLike | None = None, *,
                  num_classes: int | None = None, batch_size: int = 8192) -> RepresentationStatistics:
    """Stream in-memory features (and targets) through :class:`RepresentationStatistics` ``batch_size`` rows
    at a time, so the float64 copies never exceed one batch."""
    check_int("batch_size", batch_size)
    a, b = as_features(features_a, "features_a"), as_features(features_b, "features_b")
    y = None if targets is None else as_tensor(targets, "targets")
    check_same_samples(a, b)
    if y is not None and y.shape[0] != a.shape[0]:
        raise GraftkitError(f"targets have {y.shape[0]} samples but the features have {a.shape[0]}")
    stats = RepresentationStatistics(num_classes)
    for start in range(0, a.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        stats.update(a[rows], b[rows], None if y is None else y[rows])
    return stats
