"""`graftkit cleit synthetic` and `graftkit cleit run` end to end, and their errors."""

import pandas as pd
import pytest

from graftkit.cli import main


def test_cli_runs_cross_validation_and_writes_tables(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["cleit", "synthetic", "--out", str(data), "--samples", "60"]) == 0
    out = tmp_path / "out"
    code = main(["cleit", "run", "--expression", str(data / "expression.csv"), "--mutation",
                 str(data / "mutation.csv"), "--response", str(data / "response.csv"), "--out", str(out),
                 "--folds", "3", "--run-folds", "0", "--pretrain-epochs", "2", "--transmission-epochs", "2",
                 "--finetune-epochs", "3", "--patience", "1", "--no-progress"])
    assert code == 0
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["method"]) == {"cleit", "mutation_ae", "mutation_mlp", "expression"}
    per_drug = pd.read_csv(out / "per_drug.csv")
    assert {"pearson", "spearman", "rmse"} <= set(per_drug.columns)
    assert (per_drug["drug"] == "mean").sum() == 4 and per_drug["drug"].nunique() == 9
    predictions = pd.read_csv(out / "predictions_cleit.csv")
    assert len(predictions) == 20 and (predictions["fold"] == 0).all()
    assert "dpearsonr" in capsys.readouterr().out


def test_cli_reports_bad_input_as_one_line(tmp_path, capsys):
    (tmp_path / "e.csv").write_text("sample,G1\nA,1\nB,x\n")
    (tmp_path / "m.csv").write_text("sample,G1\nA,1\nB,0\n")
    (tmp_path / "r.csv").write_text("sample,drug,auc\nA,d,0.5\n")
    args = ["cleit", "run", "--expression", str(tmp_path / "e.csv"), "--mutation", str(tmp_path / "m.csv"),
            "--response", str(tmp_path / "r.csv"), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "row 3 (sample 'B'), column 2 (gene 'G1')" in capsys.readouterr().err
    missing = list(args)
    missing[3] = str(tmp_path / "nope.csv")
    assert main(missing) == 2
    assert "--expression not found" in capsys.readouterr().err
    (tmp_path / "e.csv").write_text("sample,G1\nA,1\nB,2\n")
    assert main(args + ["--methods", "bogus"]) == 2
    assert "--methods: unknown ['bogus']" in capsys.readouterr().err


def test_cli_help_works():
    with pytest.raises(SystemExit) as exit_info:
        main(["cleit", "run", "--help"])
    assert exit_info.value.code == 0


def test_omics_ext_imports_neither_fairseq_nor_transformers(repo_root):
    import subprocess
    import sys

    code = ("import sys, omics_ext, omics_ext.cleit, graftkit.experiments.cleit, graftkit.commands.cleit; "
            "print(sorted(m for m in ('fairseq', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("out", ["/proc/nope", "existing-file", "existing-file/run"])
def test_cli_run_checks_the_output_folder_before_any_training(tmp_path, capsys, monkeypatch, out):
    """An unwritable --out, or one naming a file, used to surface in atomic_write after every fold had trained."""
    import omics_ext.cleit

    data = tmp_path / "data"
    assert main(["cleit", "synthetic", "--out", str(data), "--samples", "30"]) == 0
    (tmp_path / "existing-file").write_text("keep\n")

    def no_training(*args, **kwargs):
        raise AssertionError("training started before the output was checked")

    monkeypatch.setattr(omics_ext.cleit, "cross_validate", no_training)
    out_path = out if out.startswith("/") else str(tmp_path / out)
    capsys.readouterr()
    code = main(["cleit", "run", "--expression", str(data / "expression.csv"), "--mutation",
                 str(data / "mutation.csv"), "--response", str(data / "response.csv"), "--out", out_path])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("graftkit: error: ") and err.count("\n") == 1, err
    assert (tmp_path / "existing-file").read_text() == "keep\n"
