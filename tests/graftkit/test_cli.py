import argparse
import subprocess
import sys

import pytest

from graftkit.cli import build_parser, main


def _leaf_parsers(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _leaf_parsers(sub, prefix + (name,))


def test_help_works_for_every_command(capsys):
    commands = [words for words, _ in _leaf_parsers(build_parser())]
    assert ("list",) in commands and ("reproduce",) in commands
    for words in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([*words, "--help"])
        assert exit_info.value.code == 0, words
    assert "usage: graftkit" in capsys.readouterr().out


def test_list_shows_all_ten_methods(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for title in ("TUPE", "TNF", "MC-BERT", "Pre-LN", "BERT-fused", "GraphNorm", "IRN", "MACER", "TD", "CLEIT"):
        assert title in out


def test_unknown_experiment_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["reproduce", "no-such-experiment", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown experiment or method: no-such-experiment" in err
    assert not any(tmp_path.iterdir()), "nothing is written for a rejected command"


def test_unwritable_out_is_one_line_and_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["reproduce", "--out", str(blocker / "sub"), "--no-progress", "graphnorm"]) in (2,)
    err = capsys.readouterr().err
    assert err.startswith("graftkit: error: cannot write the report to") and err.count("\n") == 1


def test_console_script_runs_without_traceback():
    result = subprocess.run([sys.executable, "-m", "graftkit.cli", "reproduce", "nope"], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize("argv", [["nope"], ["cleit", "synthetic", "--samples", "abc"],
                                  ["preln", "gradnorm", "--depths", "2,x"], ["macer", "train"]])
def test_unparsable_arguments_are_one_error_line(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert exit_info.value.code == 2 and not captured.out
    assert len(lines) == 1 and lines[0].startswith("graftkit: error: ") and "--help" in lines[0], captured.err


def test_every_command_group_says_what_it_does_and_names_its_subcommands_command():
    """`graftkit X --help` shows a description for every command, and every group's placeholder is COMMAND."""
    undescribed, metavars = [], {}
    for words, parser in _leaf_parsers(build_parser()):
        if words and not parser.description:
            undescribed.append(" ".join(words))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                metavars[" ".join(words) or "graftkit"] = action.metavar
    assert not undescribed, f"no description: {undescribed}"
    assert set(metavars.values()) == {"COMMAND"}, metavars


def test_bertnmt_help_names_the_user_dir_that_works_from_any_folder(capsys):
    with pytest.raises(SystemExit):
        main(["bertnmt", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert '--user-dir "$(graftkit fairseq-user-dir)"' in out and "--user-dir plugins" not in out
