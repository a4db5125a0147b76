import json
import sys

import pytest

from graftkit import registry
from graftkit.registry import Outcome, RunContext, experiment
from graftkit.report import reproduce


@pytest.fixture
def empty_registry(monkeypatch):
    monkeypatch.setattr(registry, "_EXPERIMENTS", {})
    return registry._EXPERIMENTS


def _register_toy(name: str = "toy-claim", fail: bool = False) -> None:
    @experiment(name, method="graphnorm", claim="a beats b", rule="a > b", verdict=lambda m: m["a"] > m["b"])
    def run(ctx: RunContext) -> Outcome:
        if fail:
            raise RuntimeError("boom")
        import warnings

        warnings.warn("host deprecation", UserWarning, stacklevel=1)
        print("Processing...")  # hosts' console chatter
        print("Loading weights: 0%\rLoading weights: 100%", file=sys.stderr)
        fig = ctx.figure_path("curve.png")
        fig.write_bytes(b"\x89PNG\r\n")
        return Outcome(metrics={"a": 2.0, "b": 1.0, "nan": float("nan")}, table=[{"x": 1, "y": 0.5}],
                       figures=[fig], data="SYNTHETIC toy", notes="tiny")


def test_verdict_is_computed_from_metrics_and_results_json_has_the_schema(tmp_path, empty_registry, capsys):
    _register_toy()
    run_dir, results = reproduce(list(empty_registry.values()), "quick", 3, tmp_path, {"k": 1}, progress=False)
    assert capsys.readouterr() == ("", "")  # nothing over the progress bar
    saved = json.loads((tmp_path / "latest" / "results.json").read_text())
    assert saved == json.loads((run_dir / "results.json").read_text())
    assert set(saved) >= {"experiments", "commit", "started", "mode", "seed"}
    rec = saved["experiments"]["toy-claim"]
    assert rec["supported"] is True
    assert rec["metrics"] == {"a": 2.0, "b": 1.0, "nan": None}  # JSON has no NaN
    assert rec["mode"] == "quick" and rec["data"] == "SYNTHETIC toy" and rec["seconds"] >= 0
    assert rec["figures"] == ["toy-claim/curve.png"]
    assert rec["warnings"] == ["UserWarning: host deprecation"]  # recorded, not printed over the progress bar
    assert rec["console"] == ["Processing...", "Loading weights: 100%"]  # the last redraw of a bar
    assert (run_dir / rec["figures"][0]).is_file()
    md = (run_dir / "report.md").read_text()
    assert "a beats b" in md and "supported" in md and "host deprecation" in md
    assert "![toy-claim](toy-claim/curve.png)" in md
    assert "<img src=\"toy-claim/curve.png\"" in (run_dir / "report.html").read_text()
    assert json.loads((run_dir / "config.json").read_text()) == {"k": 1}


def test_a_failing_experiment_is_recorded_and_the_others_still_run(tmp_path, empty_registry):
    _register_toy("bad", fail=True)
    _register_toy("good")
    _, results = reproduce(list(empty_registry.values()), "full", 0, tmp_path, {}, progress=False)
    assert results["experiments"]["bad"]["error"] == "RuntimeError: boom"
    assert results["experiments"]["bad"]["supported"] is None
    assert results["experiments"]["good"]["supported"] is True


def test_latest_points_to_the_newest_run(tmp_path, empty_registry):
    first, _ = reproduce([], "quick", 0, tmp_path, {}, progress=False)
    second, _ = reproduce([], "quick", 0, tmp_path, {}, progress=False)
    assert first != second
    assert (tmp_path / "latest").resolve() == second.resolve()
    assert json.loads((tmp_path / "latest" / "results.json").read_text())["experiments"] == {}


def test_registering_a_name_twice_is_an_error(empty_registry):
    _register_toy()
    with pytest.raises(ValueError, match="registered twice"):
        _register_toy()


def test_an_experiment_cannot_leak_logging_configuration(tmp_path, empty_registry):
    import logging

    root = logging.getLogger()
    before = (root.level, list(root.handlers))

    @experiment("noisy", method="graphnorm", claim="c", rule="r", verdict=lambda m: None)
    def run(ctx: RunContext) -> Outcome:
        root.setLevel(logging.DEBUG)
        root.addHandler(logging.NullHandler())
        return Outcome(metrics={})

    reproduce(list(empty_registry.values()), "quick", 0, tmp_path, {}, progress=False)
    assert (root.level, root.handlers) == before


def test_progress_inside_an_experiment_reaches_the_caller_and_caveats_reach_the_report(tmp_path, empty_registry):
    from graftkit.report import run_experiment

    @experiment("staged", method="graphnorm", claim="c", rule="r", verdict=lambda m: True)
    def run(ctx: RunContext) -> Outcome:
        ctx.progress("arm gaussian σ=0.25, epoch", 3, 8)
        ctx.progress("certify")
        return Outcome(metrics={}, caveats=["70% of points sit at the radius cap"])

    seen: list[str] = []
    record = run_experiment(empty_registry["staged"], "quick", 0, tmp_path, seen.append)
    assert seen == ["arm gaussian σ=0.25, epoch 3/8", "certify"]
    assert record["caveats"] == ["70% of points sit at the radius cap"]
    run_dir, _ = reproduce(list(empty_registry.values()), "quick", 0, tmp_path, {}, progress=False)
    assert "- 70% of points sit at the radius cap" in (run_dir / "report.md").read_text()
    assert "<li>70% of points sit at the radius cap</li>" in (run_dir / "report.html").read_text()


def test_reproduce_shows_the_experiments_own_progress_beside_its_name(tmp_path, empty_registry, capsys):
    @experiment("staged", method="graphnorm", claim="c", rule="r", verdict=lambda m: True)
    def run(ctx: RunContext) -> Outcome:
        ctx.progress("fold", 2, 10)
        return Outcome(metrics={})

    reproduce(list(empty_registry.values()), "quick", 0, tmp_path, {}, progress=True)
    assert "staged: fold 2/10" in capsys.readouterr().err


def test_an_interrupted_run_is_marked_and_latest_stays_on_the_last_complete_run(tmp_path, empty_registry, capsys):
    _register_toy("a-first")
    complete, _ = reproduce(list(empty_registry.values()), "quick", 0, tmp_path, {}, progress=False)

    @experiment("b-interrupted", method="graphnorm", claim="c", rule="r", verdict=lambda m: None)
    def interrupted(ctx: RunContext) -> Outcome:
        raise KeyboardInterrupt  # Ctrl-C inside an experiment

    _register_toy("c-never-started")
    with pytest.raises(KeyboardInterrupt):
        reproduce(list(empty_registry.values()), "quick", 0, tmp_path, {}, progress=False)
    assert (tmp_path / "latest").resolve() == complete.resolve()
    partial = next(p for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink() and p != complete)
    saved = json.loads((partial / "results.json").read_text())
    assert saved["status"] == "interrupted" and list(saved["experiments"]) == ["a-first"]
    assert saved["not_finished"] == ["b-interrupted", "c-never-started"]
    assert "**INTERRUPTED (Ctrl-C): this report is incomplete; not finished: b-interrupted, c-never-started.**" \
        in (partial / "report.md").read_text()
    assert "INTERRUPTED" in (partial / "report.html").read_text()
    assert json.loads((complete / "results.json").read_text())["status"] == "complete"
    assert "INTERRUPTED" not in (complete / "report.md").read_text()
    assert str(partial / "report.md") in capsys.readouterr().err


def test_ctrl_c_in_graftkit_reproduce_exits_130(tmp_path, empty_registry, monkeypatch, capsys):
    from graftkit import cli

    @experiment("stopped", method="graphnorm", claim="c", rule="r", verdict=lambda m: None)
    def stopped(ctx: RunContext) -> Outcome:
        raise KeyboardInterrupt

    monkeypatch.setattr(registry, "load_all", lambda: dict(empty_registry))
    assert cli.main(["reproduce", "--out", str(tmp_path), "--no-progress"]) == 130
    assert capsys.readouterr().err.endswith("graftkit: interrupted\n")
    assert not (tmp_path / "latest").exists()


def test_reproduce_refuses_a_seed_numpy_or_torch_cannot_take_before_writing(tmp_path, empty_registry):
    from graftkit.errors import GraftkitError

    _register_toy()
    for seed in (-1, 10**20):
        with pytest.raises(GraftkitError, match="seed must be an integer in"):
            reproduce(list(empty_registry.values()), "quick", seed, tmp_path, {}, progress=False)
    assert not any(tmp_path.iterdir())


_SLEEPER = """
import sys, time
from graftkit import cli, registry
from graftkit.registry import experiment

@experiment("sleeper", method="graphnorm", claim="c", rule="r", verdict=lambda m: None)
def sleeper(ctx):
    print("started", file=sys.__stdout__, flush=True)
    time.sleep(120)

registry.load_all = lambda: dict(registry._EXPERIMENTS)
sys.exit(cli.main(["reproduce", "--out", sys.argv[1], "--no-progress"]))
"""


@pytest.mark.slow
def test_sigint_to_a_running_reproduce_marks_the_run_and_exits_130(tmp_path):
    import signal
    import subprocess

    # the child starts with SIGINT's default action, as a command typed in a shell does, whatever the test
    # process's disposition (a child inherits an ignored SIGINT)
    process = subprocess.Popen([sys.executable, "-c", _SLEEPER, str(tmp_path)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert process.stdout.readline().strip() == "started"
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130 and err.endswith("graftkit: interrupted\n"), err
    assert "Traceback" not in err and not (tmp_path / "latest").exists()
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["status"] == "interrupted" and saved["not_finished"] == ["sleeper"]
