"""Drug-response metrics of the CLEIT reference (``evaluation_utils.py``), over labelled entries only.

``dpearsonr``: mean over drugs of the Pearson r across cell lines; ``cpearsonr``: mean over cell lines of the
Pearson r across drugs; ``dspearmanr`` likewise with Spearman; ``dmse``: mean over drugs of the MSE across
cell lines (what the reference reports under the name "drmse": an MSE, not a root MSE).
A drug or line with fewer than 3 labels or a constant truth/prediction has no r and is left out of the mean.
Non-finite predictions are an error (an infinite one would make its drug's r undefined and drop the drug
from the mean silently); infinite labels too (NaN labels are missing ones).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

from graftkit.errors import GraftkitError


def _correlation(x: np.ndarray, y: np.ndarray, kind: str) -> float:
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = stats.pearsonr(x, y)[0] if kind == "pearson" else stats.spearmanr(x, y)[0]
    return float(r)


def per_drug_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, np.ndarray]:
    """Pearson, Spearman, MSE, RMSE and label count for each drug (column)."""
    y_true, y_pred = _check(y_true, y_pred)
    pearson, spearman, mse, count = [], [], [], []
    for d in range(y_true.shape[1]):
        m = ~np.isnan(y_true[:, d])
        t, p = y_true[m, d], y_pred[m, d]
        pearson.append(_correlation(t, p, "pearson"))
        spearman.append(_correlation(t, p, "spearman"))
        mse.append(float(np.mean((t - p) ** 2)) if m.any() else float("nan"))
        count.append(int(m.sum()))
    return {"pearson": np.array(pearson), "spearman": np.array(spearman), "mse": np.array(mse),
            "rmse": np.sqrt(mse), "n": np.array(count)}


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
    and dmse (the reference's "drmse")."""
    drug = per_drug_metrics(y_true, y_pred)
    line = per_line_pearson(y_true, y_pred)
    return {"dpearsonr": _nanmean(drug["pearson"]), "dpearsonr_abs": _nanmean(np.abs(drug["pearson"])),
            "cpearsonr": _nanmean(line), "cpearsonr_abs": _nanmean(np.abs(line)),
            "dspearmanr": _nanmean(drug["spearman"]), "dmse": _nanmean(drug["mse"])}


def _check(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim != 2:
        raise GraftkitError(f"metrics need two [lines, drugs] matrices of the same shape, got {y_true.shape} "
                            f"and {y_pred.shape}")
    for values, what in ((y_pred, "predictions"), (y_true, "labels")):
        bad = ~np.isfinite(values) if what == "predictions" else np.isinf(values)
        if bad.any():
            row, col = (int(v) for v in np.argwhere(bad)[0])
            raise GraftkitError(f"{what} contain {int(bad.sum())} non-finite value(s), e.g. {values[row, col]} "
                                f"at line {row}, drug {col}")
    return y_true, y_pred
