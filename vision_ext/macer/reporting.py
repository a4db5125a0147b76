"""Outputs of certification: Cohen et al.'s per-example TSV and the certified-accuracy-vs-radius plot."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from graftkit.checkpoint import atomic_write

TSV_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")


def write_certify_tsv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write ``idx label predict radius correct time`` rows (tab-separated, time as H:MM:SS.ffffff, the
    format of locuslab/smoothing's ``certify.py`` that its ``analyze.py`` reads), atomically."""
    lines = ["\t".join(TSV_COLUMNS)]
    for row in rows:
        elapsed = str(datetime.timedelta(seconds=row["time"]))
        lines.append(f"{row['idx']}\t{row['label']}\t{row['predict']}\t{row['radius']:.4f}\t{row['correct']}\t"
                     f"{elapsed}")
    text = "\n".join(lines) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def plot_certified_accuracy(curves: Mapping[str, Sequence[float]], path: str | Path, title: str = "") -> Path:
    """One line per label: certified accuracy (fraction of test points correct with radius ≥ r) against r.

    ``curves[label]`` holds the certified radii with incorrect or abstained points given radius −1.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, radii in curves.items():
        radii_arr = np.asarray(radii, dtype=float)
        grid = np.linspace(0.0, max(radii_arr.max(), 0.0) * 1.05 + 1e-6, 200)
        ax.plot(grid, [(radii_arr >= r).mean() for r in grid], label=label)
    ax.set_xlabel("L2 radius")
    ax.set_ylabel("certified accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)
    return path


def signed_radii(rows: Sequence[Mapping[str, Any]]) -> list[float]:
    """Radii of correctly certified points, −1 for the others (the input of :func:`plot_certified_accuracy`)."""
    return [row["radius"] if row["correct"] else -1.0 for row in rows]
