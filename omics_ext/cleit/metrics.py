"""Drug-response metrics of the CLEIT reference (``evaluation_utils.py``), over labelled entries only.

``dpearsonr``: mean over drugs of the Pearson r across cell lines; ``cpearsonr``: mean over cell lines of the
Pearson r across drugs; ``dspearmanr`` likewise with Spearman; ``drmse``: mean over drugs of the RMSE.
A drug or line with fewer than 3 labels or a constant truth/prediction has no r and is left out of the mean.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats


def _correlation(x: np.ndarray, y: np.ndarray, kind: str) -> float:
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = stats.pearsonr(x, y)[0] if kind == "pearson" else stats.spearmanr(x, y)[0]
    return float(r)


def per_drug_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, np.ndarray]:
    """Pearson, Spearman, RMSE and label count for each drug (column)."""
    y_true, y_pred = _check(y_true, y_pred)
    pearson, spearman, rmse, count = [], [], [], []
    for d in range(y_true.shape[1]):
        m = ~np.isnan(y_true[:, d])
        t, p = y_true[m, d], y_pred[m, d]
        pearson.append(_correlation(t, p, "pearson"))
        spearman.append(_correlation(t, p, "spearman"))
        rmse.append(float(np.sqrt(np.mean((t - p) ** 2))) if m.any() else float("nan"))
        count.append(int(m.sum()))
    return {"pearson": np.array(pearson), "spearman": np.array(spearman), "rmse": np.array(rmse),
            "n": np.array(count)}


def per_line_pearson(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson r across drugs for each cell line (row)."""
    y_true, y_pred = _check(y_true, y_pred)
    out = []
    for i in range(y_true.shape[0]):
        m = ~np.isnan(y_true[i])
        out.append(_correlation(y_true[i, m], y_pred[i, m], "pearson"))
    return np.array(out)


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def summarize(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """The headline numbers: dpearsonr, cpearsonr (signed and |r|, as the reference's notes ask), dspearmanr
    and drmse."""
    drug = per_drug_metrics(y_true, y_pred)
    line = per_line_pearson(y_true, y_pred)
    return {"dpearsonr": _nanmean(drug["pearson"]), "dpearsonr_abs": _nanmean(np.abs(drug["pearson"])),
            "cpearsonr": _nanmean(line), "cpearsonr_abs": _nanmean(np.abs(line)),
            "dspearmanr": _nanmean(drug["spearman"]), "drmse": _nanmean(drug["rmse"])}


def _check(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 2:
        raise ValueError(f"metrics need two [lines, drugs] matrices of the same shape, got {y_true.shape} and "
                         f"{y_pred.shape}")
    if np.isnan(y_pred).any():
        raise ValueError("predictions contain NaN")
    return y_true, y_pred
