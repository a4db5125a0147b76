"""The documentation is executed: every ```python and ```bash block of README.md and docs/*.md runs here.

Blocks are found by Sybil's Markdown parsers (the fences, the skip directive, Python evaluation with the
page's line numbers in tracebacks). Each block runs on its own, in a fresh temporary folder outside the
repository, with a fresh namespace: examples must be self-contained and make their own data. A block that
cannot run offline carries ``<!-- skip: next "reason" -->`` on the line before it, and is reported as skipped
with that reason. Shell blocks run under ``bash -euo pipefail`` with this environment's ``bin`` first on PATH
(as after ``source .venv/bin/activate``); they are marked ``slow``.

The same module checks that every relative link in the pages resolves, that README.md stays a front page
(≤ 250 lines) and that the pages state figures, not the story of how they were measured.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sybil import Example, Sybil
from sybil.evaluators.python import PythonEvaluator
from sybil.evaluators.skip import Skipper
from sybil.parsers.markdown import CodeBlockParser, PythonCodeBlockParser, SkipParser

REPO_ROOT = Path(__file__).resolve().parent.parent
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]

BASH_TIMEOUT_S = 600


def _run_bash(example: Example) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", example.parsed], cwd=os.getcwd(), env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=BASH_TIMEOUT_S)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise AssertionError(f"{example.path}:{example.line}: bash block exited {done.returncode}\n{tail}")


SYBIL = Sybil(parsers=[PythonCodeBlockParser(), CodeBlockParser(language="bash", evaluator=_run_bash),
                       SkipParser()])


def _collect() -> list:
    """(id, example, skip reason or None, kind) for every python/bash block, in page order."""
    params = []
    for page in PAGES:
        skip_reason = None
        for example in SYBIL.parse(page):
            evaluator = example.region.evaluator
            if isinstance(evaluator, Skipper):
                action, reason = example.parsed
                if action != "next" or not reason:
                    raise ValueError(f"{page}:{example.line}: use <!-- skip: next \"reason\" --> (with a reason)")
                skip_reason = eval(reason, {})  # a quoted string, as Sybil's own skip directive reads it
                continue
            kind = "python" if isinstance(evaluator, PythonEvaluator) else "bash"
            marks = [pytest.mark.slow] if kind == "bash" else []
            name = f"{page.relative_to(REPO_ROOT)}:{example.line}:{kind}"
            params.append(pytest.param(example, skip_reason, kind, id=name, marks=marks))
            skip_reason = None
    return params


EXAMPLES = _collect()


@pytest.mark.parametrize(("example", "skip_reason", "kind"), EXAMPLES)
def test_example_runs(example: Example, skip_reason: str | None, kind: str, tmp_path: Path, monkeypatch) -> None:
    if skip_reason:
        pytest.skip(skip_reason)
    assert not tmp_path.resolve().is_relative_to(REPO_ROOT), "examples must run outside the repository"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    example.document.namespace.clear()  # each block on its own: nothing carries over from the one before
    example.evaluate()


def test_the_pages_have_examples() -> None:
    kinds = {(param.values[2]) for param in EXAMPLES}
    assert kinds == {"python", "bash"} and len(EXAMPLES) >= 15


_FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _relative_links(page: Path) -> list[str]:
    text = _FENCE.sub("", page.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    return [t for t in _LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO_ROOT)) for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in _relative_links(page):
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"{page.name}: links to missing files: {broken}"


def test_link_check_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md) [web](https://example.org) [anchor](#x) `[code](nope.md)`\n"
                    "```text\n[fenced](nope.md)\n```\n[bad](missing.md#part)\n")
    assert _relative_links(page) == ["page.md", "missing.md#part"]


def test_readme_is_a_front_page() -> None:
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines (at most 250: details go to docs/)"


# Sentences about how a figure came about (machine load, other runs) belong in no page: a figure is stated
# with its command and hardware class.
_NARRATIVE = re.compile(r"load average|quiet machine|shared machine|loaded machine|earlier run|a rerun|"
                        r"previous session|this session|overloaded", re.I)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO_ROOT)) for p in PAGES])
def test_pages_state_figures_without_narrative(page: Path) -> None:
    hits = [line for line in page.read_text().splitlines() if _NARRATIVE.search(line)]
    assert not hits, f"{page.name}: {hits}"


def test_readme_verdict_table_is_in_the_tools_format() -> None:
    """The README's `make demo` table is pasted from `graftkit report --markdown`: same header, known rows."""
    from graftkit.registry import load_all
    from graftkit.report import verdict_table_markdown

    header = verdict_table_markdown({"experiments": {}}).splitlines()
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    start = lines.index(header[0])
    assert lines[start + 1] == header[1]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    assert rows, "README.md: the verdict table has no rows"
    registered = load_all()
    for row in rows:
        name, method, verdict, seconds = (cell.strip() for cell in row.strip("|").split("|"))
        assert name in registered and registered[name].method == method, row
        assert verdict in {"supported", "not supported", "undecided", "error"} and float(seconds) >= 0, row


# --- pages that must agree with the code (one test per kind of contradiction) -------------------------------


def _index_rows() -> dict[str, list[str]]:
    """docs/index.md's method table: method title -> its cells after the first."""
    rows = {}
    for line in (REPO_ROOT / "docs" / "index.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 4 and cells[0] not in ("method", "---"):
            rows[cells[0]] = cells[1:]
    return rows


def test_index_has_a_filled_row_for_every_available_method() -> None:
    """What `graftkit list` calls available is not "(in progress)" with empty cells in docs/index.md."""
    from graftkit.methods import METHODS

    rows = _index_rows()
    assert set(rows) == {m.title for m in METHODS}, sorted(rows)
    for m in METHODS:
        if m.available:
            assert all(rows[m.title]) and "in progress" not in " ".join(rows[m.title]), (m.title, rows[m.title])


def _per_method_commands() -> set[str]:
    import argparse

    from graftkit.cli import build_parser

    hub = {"list", "reproduce", "report", "fairseq-user-dir", "pretrain", "hf-run"}
    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(subcommands.choices) - hub


@pytest.mark.parametrize("page", ["README.md", "docs/reproduce.md"])
def test_tools_line_names_every_per_method_command(page: str) -> None:
    lines = [line for line in (REPO_ROOT / page).read_text().splitlines() if "# per-method tools:" in line]
    assert len(lines) == 1, f"{page}: one `graftkit <method> ... --help   # per-method tools: a, b` line"
    listed = {name.strip() for name in lines[0].split("# per-method tools:", 1)[1].split(",")}
    assert listed == _per_method_commands(), f"{page}: tools line {sorted(listed)}"


def _corpus_size(import_torch: bool) -> tuple[int, int]:
    code = ("import torch\n" if import_torch else "") + (
        "from graftkit.data.text import english_sentences, words\n"
        "s = english_sentences(); print(len(s), sum(len(words(x)) for x in s))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    sentences, words = done.stdout.split()
    return int(sentences), int(words)


def test_install_states_the_text_corpus_size_it_has() -> None:
    """The corpus size in install.md, with torch imported and without (the count depends on it)."""
    text = " ".join((REPO_ROOT / "docs" / "install.md").read_text().split())
    stated = re.search(r"On Python ([\d.]+) it has ([\d,]+) sentences / ([\d,]+) words once torch is imported,"
                       r".*? and ([\d,]+) / ([\d,]+) before", text)
    assert stated, "install.md: the corpus size sentence changed; update this test with it"
    version, *numbers = stated.groups()
    if version != ".".join(map(str, sys.version_info[:3])):
        pytest.skip(f"install.md states the corpus of Python {version}")
    with_torch, without = [int(n.replace(",", "")) for n in numbers[:2]], [int(n.replace(",", "")) for n in numbers[2:]]
    assert _corpus_size(import_torch=True) == tuple(with_torch)
    assert _corpus_size(import_torch=False) == tuple(without)
