"""K-fold cross-validation of CLEIT and its baselines in one pipeline (shared by the CLI, the experiment and
the benchmark).

Per fold, the test fold's lines are held out of every stage: expression pre-training, the teacher's
fine-tuning, transmission and the mutation fine-tuning see only training lines (plus lines without any
label); early stopping uses a validation split of the training lines. Folds are stratified by label
missingness (lines with at most the median number of missing labels vs more), as the reference.

Methods
- ``cleit``: expression teacher → transmission (reconstruction + contrastive) → fine-tune on mutations.
- ``mutation_ae``: mutation autoencoder pre-trained without the teacher → the same fine-tuning.
- ``mutation_mlp``: the same network on mutations trained from scratch.
- ``expression``: the teacher's own regressor on the test lines' expression (upper bound; it needs the
  expression CLEIT is meant to do without).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from graftkit.errors import GraftkitError
from omics_ext.cleit.configuration_cleit import CLEITConfig
from omics_ext.cleit.data import OmicsDataset
from omics_ext.cleit.metrics import per_drug_metrics, summarize
from omics_ext.cleit.trainer_cleit import CLEIT

METHODS = ("cleit", "mutation_ae", "mutation_mlp", "expression")


@dataclass
class CVResult:
    """Out-of-fold predictions (NaN for lines in folds that were not run) and per-fold metrics."""

    lines: list[str]
    drugs: list[str]
    truth: np.ndarray
    predictions: dict[str, np.ndarray]
    fold_of_line: np.ndarray
    fold_metrics: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per method: each metric averaged over the folds run."""
        out: dict[str, dict[str, float]] = {}
        for method in self.predictions:
            rows = [m for m in self.fold_metrics if m["method"] == method]
            keys = [k for k in rows[0] if k not in ("method", "fold")]
            out[method] = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
        return out

    def per_drug_table(self) -> pd.DataFrame:
        """Pearson, Spearman, MSE, RMSE per drug on the pooled out-of-fold predictions, plus a ``mean`` row (its
        ``mse`` is the pooled predictions' ``dmse``)."""
        done = ~np.isnan(self.fold_of_line)
        frames = []
        for method, pred in self.predictions.items():
            metrics = per_drug_metrics(self.truth[done], pred[done])
            columns = ("pearson", "spearman", "mse", "rmse")
            frame = pd.DataFrame({"method": method, "drug": self.drugs, **{k: metrics[k] for k in columns},
                                  "n": metrics["n"]})
            mean = {"method": method, "drug": "mean", **{k: np.nanmean(metrics[k]) for k in columns},
                    "n": int(metrics["n"].sum())}
            frames.append(pd.concat([frame, pd.DataFrame([mean])], ignore_index=True))
        return pd.concat(frames, ignore_index=True)


def stratified_folds(responses: pd.DataFrame, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """StratifiedKFold over lines, strata = (number of missing labels <= median)."""
    if n_folds < 2:
        raise GraftkitError(f"need at least 2 folds, got {n_folds}")
    if len(responses) < 2 * n_folds:
        raise GraftkitError(f"{len(responses)} labelled lines are too few for {n_folds}-fold cross-validation")
    n_missing = responses.isna().sum(axis=1).to_numpy()
    strata = (n_missing <= np.median(n_missing)).astype(int)
    if np.bincount(strata).min() < n_folds:
        strata = np.zeros_like(strata)  # too few lines in one stratum to stratify
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(strata)), strata))


def _standardize(train: pd.DataFrame, *others: pd.DataFrame) -> list[np.ndarray]:
    """Z-score genes with training statistics; missing cells become the training mean (0)."""
    mean, std = train.mean(), train.std(ddof=0).replace(0.0, 1.0).fillna(1.0)
    return [((frame - mean) / std).fillna(0.0).to_numpy(np.float32) for frame in (train, *others)]


def _validation_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(3, int(round(n * fraction)))
    return order[n_val:], order[:n_val]


def _finetune_and_predict(model: CLEIT, x: np.ndarray, y: np.ndarray, validation: tuple[np.ndarray, np.ndarray],
                          x_test: np.ndarray, progress: bool) -> np.ndarray:
    model.finetune(x, y, validation=validation, progress=progress)
    return model.predict(x_test).numpy()


def cross_validate(dataset: OmicsDataset, config: CLEITConfig, n_folds: int = 5, folds: list[int] | None = None,
                   methods: tuple[str, ...] = METHODS, seed: int = 0, progress: bool = False) -> CVResult:
    """Run ``methods`` on the folds ``folds`` (default all) of a ``n_folds``-fold split of the labelled lines."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise GraftkitError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    lines = dataset.labeled
    if not lines:
        raise GraftkitError("no line has expression, mutation and at least one response")
    responses = dataset.responses.loc[lines]
    splits = stratified_folds(responses, n_folds, seed)
    chosen = list(range(n_folds)) if folds is None else list(folds)
    if any(f < 0 or f >= n_folds for f in chosen):
        raise GraftkitError(f"fold numbers must be in 0..{n_folds - 1}, got {chosen}")
    truth = responses.to_numpy(np.float64)
    result = CVResult(lines, dataset.drugs, truth, {m: np.full(truth.shape, np.nan) for m in methods},
                      np.full(len(lines), np.nan), seconds={m: 0.0 for m in (*methods, "teacher")})
    line_set = set(lines)
    unlabeled_expr = dataset.expression.loc[[s for s in dataset.expression.index if s not in line_set]]
    paired_extra = [s for s in dataset.expression.index.intersection(dataset.mutation.index) if s not in line_set]
    for fold in chosen:
        train_idx, test_idx = splits[fold]
        result.fold_of_line[test_idx] = fold
        train_lines, test_lines = [lines[i] for i in train_idx], [lines[i] for i in test_idx]
        fit, val = _validation_split(len(train_lines), config.validation_fraction, seed + fold)
        expr_train, expr_test, expr_unlabeled, expr_extra = _standardize(
            dataset.expression.loc[train_lines], dataset.expression.loc[test_lines], unlabeled_expr,
            dataset.expression.loc[paired_extra])
        mut = dataset.mutation.fillna(0.0)
        mut_train = mut.loc[train_lines].to_numpy(np.float32)
        mut_test = mut.loc[test_lines].to_numpy(np.float32)
        mut_pairs = np.concatenate([mut_train, mut.loc[paired_extra].to_numpy(np.float32)])
        expr_pairs = np.concatenate([expr_train, expr_extra])
        y_train = truth[train_idx].astype(np.float32)
        fold_seed = seed * 100 + fold

        fine_tune = (mut_train[fit], y_train[fit], (mut_train[val], y_train[val]), mut_test, progress)
        predictions: dict[str, np.ndarray] = {}
        if "cleit" in methods or "expression" in methods:
            start = time.perf_counter()
            cleit = CLEIT(config, seed=fold_seed)
            cleit.pretrain_expression(expr_train[fit], y_train[fit], unlabeled=np.concatenate([expr_train[val],
                                                                                               expr_unlabeled]),
                                      validation=(expr_train[val], y_train[val]), progress=progress)
            result.seconds["teacher"] += time.perf_counter() - start
            if "expression" in methods:
                predictions["expression"] = cleit.predict_expression(expr_test).numpy()
            if "cleit" in methods:
                start = time.perf_counter()
                cleit.transmit(mut_pairs, expr_pairs, progress=progress)
                predictions["cleit"] = _finetune_and_predict(cleit, *fine_tune)
                result.seconds["cleit"] += time.perf_counter() - start
        if "mutation_ae" in methods:
            start = time.perf_counter()
            ae = CLEIT(config, seed=fold_seed)
            ae.transmit(mut_pairs, progress=progress)
            predictions["mutation_ae"] = _finetune_and_predict(ae, *fine_tune)
            result.seconds["mutation_ae"] += time.perf_counter() - start
        if "mutation_mlp" in methods:
            start = time.perf_counter()
            predictions["mutation_mlp"] = _finetune_and_predict(CLEIT(config, seed=fold_seed), *fine_tune)
            result.seconds["mutation_mlp"] += time.perf_counter() - start
        for method, pred in predictions.items():
            result.predictions[method][test_idx] = pred
            result.fold_metrics.append({"method": method, "fold": fold, **summarize(truth[test_idx], pred)})
    return result

