"""Run registered experiments and write the report: results.json, report.md, report.html, config.json.

Each run goes to ``<out>/<timestamp>/``; ``<out>/latest`` is a symlink to the newest complete run. A run
stopped by Ctrl-C keeps what it finished, its report marked interrupted, and ``latest`` stays where it was.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import logging
import math
import os
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from graftkit.checkpoint import atomic_write
from graftkit.errors import GraftkitError, check_seed
from graftkit.registry import Experiment, Mode, RunContext
from graftkit.runtime import single_thread

REPO_ROOT = Path(__file__).resolve().parent.parent


def git_commit() -> str:
    """The commit of the checkout graftkit runs from, with ``-dirty`` when it has uncommitted changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy/torch scalars become floats, NaN/inf become None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def run_experiment(exp: Experiment, mode: Mode, seed: int, run_dir: Path,
                   on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one experiment and return its record; an exception is recorded, not raised.

    ``on_progress`` gets the experiment's progress texts (see ``RunContext.progress``).
    """
    ctx = RunContext(mode=mode, seed=seed, out_dir=run_dir / exp.name, on_progress=on_progress)
    root = logging.getLogger()
    root_level, root_handlers = root.level, list(root.handlers)
    start = time.perf_counter()
    record: dict[str, Any] = {"method": exp.method, "claim": exp.claim, "rule": exp.rule, "mode": mode}
    console = io.StringIO()
    try:
        # The demo's models are tiny: one thread is as fast as two on a quiet machine, and measured here,
        # two threads were 5-20x slower per step as soon as anything else used the cores.
        # Hosts warn and print a lot (hydra deprecations, weight-loading bars, "Processing..."): warnings and
        # console output go to the record, not over the progress bar. Logging keeps its own handlers' streams.
        with single_thread(), warnings.catch_warnings(record=True) as caught, \
                contextlib.redirect_stdout(console), contextlib.redirect_stderr(console):
            warnings.simplefilter("default")
            outcome = exp.run(ctx)
        record.update(
            supported=exp.verdict(outcome.metrics),
            metrics=_jsonable(outcome.metrics),
            table=_jsonable(outcome.table),
            figures=[str(Path(f).resolve().relative_to(run_dir.resolve())) for f in outcome.figures],
            data=outcome.data,
            notes=outcome.notes,
            caveats=list(outcome.caveats),
            warnings=sorted({f"{w.category.__name__}: {str(w.message).strip()}" for w in caught}),
        )
    except Exception as err:  # a failing experiment must not lose the others' results
        record.update(supported=None, metrics={}, table=[], figures=[], data="", notes="", caveats=[], warnings=[],
                      error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
    finally:  # hosts such as fairseq reconfigure logging when they are used; one experiment must not leak it
        root.setLevel(root_level)
        root.handlers[:] = root_handlers
    record["console"] = console_lines(console.getvalue())
    record["seconds"] = round(time.perf_counter() - start, 2)
    return record


def console_lines(text: str, keep: int = 40) -> list[str]:
    """The last ``keep`` non-empty lines an experiment printed; of a progress bar's redraws, the final one."""
    lines = [line.rsplit("\r", 1)[-1].rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return [line for line in lines if line.strip()][-keep:]


def new_run_dir(out_root: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        run_dir = out_root / stamp
        suffix = 1
        while run_dir.exists():
            run_dir, suffix = out_root / f"{stamp}-{suffix}", suffix + 1
        run_dir.mkdir()
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise GraftkitError(f"cannot write the report to {out_root}: {err.strerror or err}") from err
    return run_dir


def point_latest(out_root: Path, run_dir: Path) -> None:
    """Atomically repoint ``<out>/latest`` at ``run_dir`` (a relative symlink)."""
    tmp = out_root / f".latest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name, target_is_directory=True)
    os.replace(tmp, out_root / "latest")


def verdict_word(supported: bool | None, error: str | None = None) -> str:
    if error:
        return "error"
    return {True: "supported", False: "not supported", None: "undecided"}[supported]


def _format_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _table_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    return columns, [[_format_cell(row.get(c)) for c in columns] for row in rows]


def verdict_table_markdown(results: dict[str, Any]) -> str:
    """The verdict table of a run as Markdown (what the README pastes): experiment, method, verdict, seconds."""
    lines = ["| experiment | method | verdict | seconds |", "|---|---|---|---|"]
    for name, rec in results["experiments"].items():
        lines.append(f"| {name} | {rec['method']} | {verdict_word(rec['supported'], rec.get('error'))} "
                     f"| {rec['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def load_results(run_dir: Path) -> dict[str, Any]:
    """``run_dir/results.json`` of an earlier ``graftkit reproduce`` (``run_dir`` may be ``reports/latest``)."""
    path = Path(run_dir) / "results.json"
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        raise GraftkitError(f"no results.json in {run_dir} (give a folder written by graftkit reproduce)") from None
    except (OSError, ValueError) as err:
        raise GraftkitError(f"cannot read {path}: {err}") from None
    if not isinstance(results, dict) or not isinstance(results.get("experiments"), dict):
        raise GraftkitError(f"{path} is not a graftkit results file (no 'experiments' table)")
    return results


def run_status_mark(results: dict[str, Any]) -> str:
    """The line a report opens with when the run is not complete (empty when it is, or predates the status)."""
    status = results.get("status", "complete")
    if status == "complete":
        return ""
    if status == "interrupted":
        not_finished = results.get("not_finished") or []
        return "INTERRUPTED (Ctrl-C): this report is incomplete" + (
            f"; not finished: {', '.join(not_finished)}." if not_finished else ".")
    return "RUNNING (or stopped without a trace): this report is incomplete."


def render_markdown(results: dict[str, Any]) -> str:
    lines = [f"# graftkit reproduce — {results['mode']} run", "",
             f"Commit `{results['commit']}`, started {results['started']}, seed {results['seed']}.", "",
             *([f"**{mark}**", ""] if (mark := run_status_mark(results)) else []),
             *verdict_table_markdown(results).splitlines()]
    for name, rec in results["experiments"].items():
        lines += ["", f"## {name}", "", f"**Paper's claim.** {rec['claim']}", "",
                  f"**Verdict rule.** {rec['rule']}", "",
                  f"**Verdict.** {verdict_word(rec['supported'], rec.get('error'))}", "",
                  f"**Data.** {rec['data']}", "", f"**Run.** {rec['mode']} mode, {rec['seconds']:.1f} s."]
        if rec["notes"]:
            lines += ["", f"**Notes.** {rec['notes']}"]
        if rec.get("caveats"):
            lines += ["", "**Caveats.**", ""] + [f"- {c}" for c in rec["caveats"]]
        if rec["warnings"]:
            lines += ["", f"**Warnings raised** ({len(rec['warnings'])} distinct, all in results.json): "
                      + "; ".join(w.splitlines()[0][:160] for w in rec["warnings"][:5])]
        if rec.get("error"):
            lines += ["", "```", rec["traceback"].rstrip(), "```"]
        if rec["metrics"]:
            lines += ["", "| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_format_cell(v)} |" for k, v in rec["metrics"].items()]
        if rec["table"]:
            columns, rows = _table_rows(rec["table"])
            lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines += [f"\n![{name}]({fig})" for fig in rec["figures"]]
    return "\n".join(lines) + "\n"


def render_html(results: dict[str, Any]) -> str:
    def table(columns: list[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    e = html.escape
    parts = [f"<h1>graftkit reproduce — {e(results['mode'])} run</h1>",
             f"<p>Commit <code>{e(results['commit'])}</code>, started {e(results['started'])}, "
             f"seed {results['seed']}.</p>",
             *([f"<p><b>{e(mark)}</b></p>"] if (mark := run_status_mark(results)) else []),
             table(["experiment", "method", "verdict", "seconds"],
                   [[n, r["method"], verdict_word(r["supported"], r.get("error")), f"{r['seconds']:.1f}"]
                    for n, r in results["experiments"].items()])]
    for name, rec in results["experiments"].items():
        parts += [f"<h2>{e(name)}</h2>", f"<p><b>Paper's claim.</b> {e(rec['claim'])}</p>",
                  f"<p><b>Verdict rule.</b> {e(rec['rule'])}</p>",
                  f"<p><b>Verdict.</b> {verdict_word(rec['supported'], rec.get('error'))}</p>",
                  f"<p><b>Data.</b> {e(rec['data'])}</p>",
                  f"<p><b>Run.</b> {e(rec['mode'])} mode, {rec['seconds']:.1f} s.</p>"]
        if rec["notes"]:
            parts.append(f"<p><b>Notes.</b> {e(rec['notes'])}</p>")
        if rec.get("caveats"):
            parts.append("<p><b>Caveats.</b></p><ul>" + "".join(f"<li>{e(c)}</li>" for c in rec["caveats"])
                         + "</ul>")
        if rec["warnings"]:
            parts.append(f"<details><summary>{len(rec['warnings'])} distinct warnings raised</summary><ul>"
                         + "".join(f"<li>{e(w)}</li>" for w in rec["warnings"]) + "</ul></details>")
        if rec.get("error"):
            parts.append(f"<pre>{e(rec['traceback'])}</pre>")
        if rec["metrics"]:
            parts.append(table(["metric", "value"], [[k, _format_cell(v)] for k, v in rec["metrics"].items()]))
        if rec["table"]:
            parts.append(table(*_table_rows(rec["table"])))
        parts += [f'<p><img src="{e(fig)}" alt="{e(name)}" style="max-width:100%"></p>' for fig in rec["figures"]]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #bbb;padding:2px 8px;text-align:right}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>graftkit report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def write_report(run_dir: Path, results: dict[str, Any], config: dict[str, Any]) -> None:
    def text(content: str):
        return lambda handle: handle.write(content.encode())

    atomic_write(run_dir / "results.json", text(json.dumps(results, indent=2) + "\n"))
    atomic_write(run_dir / "config.json", text(json.dumps(config, indent=2) + "\n"))
    atomic_write(run_dir / "report.md", text(render_markdown(results)))
    atomic_write(run_dir / "report.html", text(render_html(results)))


def reproduce(experiments: list[Experiment], mode: Mode, seed: int, out_root: Path,
              config: dict[str, Any], progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """Run ``experiments`` in order, write the report after each (a crash loses nothing), return it.

    ``results["status"]`` is ``"running"`` until the last experiment ends (``"complete"``; ``latest`` is then
    pointed at the run). On KeyboardInterrupt the report is rewritten with status ``"interrupted"`` and the
    experiments not finished (the one running, those not started), and the interrupt is raised again.
    """
    from tqdm.auto import tqdm

    check_seed("seed", seed)
    if not logging.getLogger().handlers:
        # warnings and errors only: hosts' INFO logs (fairseq prints whole models) would bury the summary
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    run_dir = new_run_dir(out_root)
    results: dict[str, Any] = {"experiments": {}, "commit": git_commit(),
                               "started": datetime.now(UTC).isoformat(timespec="seconds"),
                               "mode": mode, "seed": seed, "status": "running"}
    write_report(run_dir, results, config)
    bar = tqdm(experiments, desc="reproduce", unit="exp", disable=not progress or not experiments)
    try:
        for exp in bar:
            bar.set_postfix_str(exp.name)
            show = _progress_line(bar, exp.name) if progress else None
            results["experiments"][exp.name] = run_experiment(exp, mode, seed, run_dir, show)
            write_report(run_dir, results, config)
    except KeyboardInterrupt:
        bar.close()
        done = results["experiments"]
        results.update(status="interrupted",
                       not_finished=[e.name for e in experiments if e.name not in done])
        write_report(run_dir, results, config)
        print(f"\n{len(done)} of {len(experiments)} experiments done; partial report {run_dir / 'report.md'} "
              f"(marked interrupted); {out_root / 'latest'} unchanged", file=sys.stderr)
        raise
    results["status"] = "complete"
    write_report(run_dir, results, config)
    point_latest(out_root, run_dir)
    return run_dir, results


def _progress_line(bar: Any, name: str, min_interval: float = 0.5) -> Callable[[str], None]:
    """Show an experiment's progress texts after its name on ``bar``, redrawn at most every ``min_interval`` s.

    The bar was created before the experiment's console was redirected, so it still draws on the terminal.
    """
    last = -math.inf

    def show(text: str) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= min_interval:
            last = now
            bar.set_postfix_str(f"{name}: {text}")

    return show
