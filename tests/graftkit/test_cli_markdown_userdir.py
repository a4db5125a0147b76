"""`graftkit reproduce --markdown`, `graftkit report [--markdown] RUN_DIR` and `graftkit fairseq-user-dir`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from graftkit import cli, registry
from graftkit.registry import Outcome, RunContext, experiment
from graftkit.report import verdict_table_markdown

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def toy_registry(monkeypatch):
    monkeypatch.setattr(registry, "_EXPERIMENTS", {})
    for name, a in (("toy-yes", 2.0), ("toy-no", 0.5)):
        @experiment(name, method="graphnorm", claim="a beats 1", rule="a > 1", verdict=lambda m: m["a"] > 1)
        def run(ctx: RunContext, a=a) -> Outcome:
            return Outcome(metrics={"a": a}, data="SYNTHETIC")
    monkeypatch.setattr(registry, "load_all", lambda: dict(registry._EXPERIMENTS))
    return registry._EXPERIMENTS


def test_verdict_table_markdown_by_hand() -> None:
    results = {"experiments": {
        "x": {"method": "td", "supported": True, "seconds": 1.26},
        "y": {"method": "irn", "supported": False, "seconds": 30.0},
        "z": {"method": "irn", "supported": None, "seconds": 0.0, "error": "RuntimeError: boom"}}}
    assert verdict_table_markdown(results) == (
        "| experiment | method | verdict | seconds |\n|---|---|---|---|\n"
        "| x | td | supported | 1.3 |\n| y | irn | not supported | 30.0 |\n| z | irn | error | 0.0 |\n")


def test_reproduce_markdown_prints_the_table_that_report_prints_again(tmp_path, toy_registry, capsys) -> None:
    assert cli.main(["reproduce", "--out", str(tmp_path), "--no-progress", "--markdown"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "latest" / "results.json").read_text())
    table = verdict_table_markdown(results)
    assert table in printed
    assert "| toy-yes | graphnorm | supported |" in table and "| toy-no | graphnorm | not supported |" in table

    assert cli.main(["report", "--markdown", str(tmp_path / "latest")]) == 0
    assert capsys.readouterr().out == table
    assert cli.main(["report", str(tmp_path / "latest")]) == 0
    assert capsys.readouterr().out == (tmp_path / "latest" / "report.md").read_text()


def test_report_of_a_folder_without_results_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    assert cli.main(["report", "--markdown", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("graftkit: error: no results.json in") and err.count("\n") == 1
    (tmp_path / "results.json").write_text("{not json")
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "results.json").write_text("[1, 2]")
    assert cli.main(["report", str(tmp_path)]) == 2
    assert "not a graftkit results file" in capsys.readouterr().err


def test_fairseq_user_dir_prints_the_plugins_folder_from_any_folder(tmp_path) -> None:
    graftkit = Path(sys.executable).with_name("graftkit")
    done = subprocess.run([str(graftkit), "fairseq-user-dir"], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ), check=True)
    folder = Path(done.stdout.strip())
    assert folder.is_absolute() and (folder / "__init__.py").is_file() and folder.name == "plugins"
    assert folder == (REPO_ROOT / "plugins").resolve() or "site-packages" in folder.parts
    assert "fairseq" not in done.stderr  # only the folder: the plugins (and fairseq) are not imported
