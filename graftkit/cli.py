"""The ``graftkit`` command: ``list``, ``reproduce`` and one subcommand group per method.

A method adds its subcommands in ``graftkit/commands/<key>.py`` with ``register(subparsers)``, where each
parser sets ``func=handler(args) -> int | None``. User mistakes raise :class:`GraftkitError`, printed as
one line with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from graftkit import __version__
from graftkit.errors import GraftkitError, seed_argument
from graftkit.methods import METHODS


def _list(args: argparse.Namespace) -> int:
    from graftkit.registry import load_all

    experiments = load_all()
    print(f"{'method':<11} {'status':<10} {'home':<19} experiments")
    for m in METHODS:
        names = [e.name for e in experiments.values() if e.method == m.key]
        status = "available" if m.available else "planned"
        print(f"{m.title:<11} {status:<10} {m.home:<19} {', '.join(names) or '-'}")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from graftkit.registry import load_all
    from graftkit.report import reproduce, verdict_table_markdown, verdict_word

    registry = load_all()
    unknown = [n for n in args.names if n not in registry and n not in {m.key for m in METHODS}]
    if unknown:
        known = ", ".join(registry) or "none registered yet"
        raise GraftkitError(f"unknown experiment or method: {', '.join(unknown)} (known: {known})")
    chosen = [e for e in registry.values() if not args.names or e.name in args.names or e.method in args.names]
    mode = "full" if args.full else "quick"
    config = {"names": args.names, "mode": mode, "seed": args.seed, "out": str(args.out), "argv": sys.argv[1:]}
    run_dir, results = reproduce(chosen, mode, args.seed, args.out, config, progress=not args.no_progress)

    if args.markdown:
        print("\n" + verdict_table_markdown(results), end="")
    else:
        print(f"\n{'experiment':<28} {'verdict':<15} {'seconds':>8}")
        for name, rec in results["experiments"].items():
            print(f"{name:<28} {verdict_word(rec['supported'], rec.get('error')):<15} {rec['seconds']:>8.1f}")
    if not chosen:
        print("(no experiments registered yet)")
    print(f"\nreport: {run_dir / 'report.md'} (latest: {args.out / 'latest'})")
    failed = [n for n, r in results["experiments"].items() if r.get("error")]
    if failed:
        print(f"graftkit: error: experiments failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _report(args: argparse.Namespace) -> int:
    from graftkit.report import load_results, verdict_table_markdown

    results = load_results(args.run_dir)
    if args.markdown:
        print(verdict_table_markdown(results), end="")
    else:
        print((args.run_dir / "report.md").read_text() if (args.run_dir / "report.md").is_file()
              else verdict_table_markdown(results), end="")
    return 0


def _fairseq_user_dir(args: argparse.Namespace) -> int:
    # find_spec, not import: importing the plugins imports fairseq (seconds), and only the folder is wanted
    spec = importlib.util.find_spec("plugins")
    if spec is None or not spec.submodule_search_locations:
        raise GraftkitError("graftkit's fairseq plugins are not installed (pip install graftkit)")
    print(Path(next(iter(spec.submodule_search_locations))).resolve())
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one ``graftkit: error:`` line with exit status 2, like every other
    mistake (argparse prints the whole usage block first); ``--help`` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("graftkit").strip()
        self.exit(2, f"graftkit: error: {command + ': ' if command else ''}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="graftkit", description="Research methods grafted onto HF transformers, fairseq, PyG and PyTorch: "
                                     "reproduce their claims, and run the per-method tools.")
    parser.add_argument("--version", action="version", version=f"graftkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="methods and experiments, with status",
                       description="List the ten methods (available or planned), where each lives, and the "
                                   "experiments `graftkit reproduce` can run for it.")
    p.set_defaults(func=_list)

    p = sub.add_parser("reproduce", help="run experiments and write the report",
                       description="Run registered experiments (all by default) and write "
                                   "OUT/<timestamp>/report.{md,html}, results.json; OUT/latest points to it.")
    p.add_argument("names", nargs="*", metavar="NAME", help="experiment or method names (default: all)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small CPU-sized runs (the default)")
    size.add_argument("--full", action="store_true", help="larger runs, closer to the papers (minutes each)")
    p.add_argument("--out", type=Path, default=Path("reports"), help="report root folder (default: reports)")
    p.add_argument("--seed", type=seed_argument, default=0, help="base random seed (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--markdown", action="store_true", help="print the verdict table as Markdown")
    p.set_defaults(func=_reproduce)

    p = sub.add_parser("report", help="print an earlier run's report (or its verdict table as Markdown)",
                       description="Print RUN_DIR/report.md, or with --markdown only the verdict table, "
                                   "from RUN_DIR/results.json (e.g. reports/latest).")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a folder written by graftkit reproduce")
    p.add_argument("--markdown", action="store_true", help="only the verdict table, as Markdown")
    p.set_defaults(func=_report)

    p = sub.add_parser("fairseq-user-dir", help="print the folder to pass to fairseq's --user-dir",
                       description="Print the installed folder of graftkit's fairseq plugins, for "
                                   'fairseq-train --user-dir "$(graftkit fairseq-user-dir)" from any folder.')
    p.set_defaults(func=_fairseq_user_dir)

    for m in METHODS:
        if m.has_commands:
            importlib.import_module(m.commands_module).register(sub)
    importlib.import_module("graftkit.commands.pretrain").register(sub)  # pretrain, hf-run
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GraftkitError as err:
        print(f"graftkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("graftkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
