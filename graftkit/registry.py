"""The experiment registry: a method registers experiments that reproduce its paper's headline claim.

An experiment is a function ``run(ctx) -> Outcome``. The verdict ("supported") is never set by the
experiment: it is computed from the returned metrics by the ``verdict`` rule registered beside the claim,
whose wording (``rule``) is printed in the report.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from graftkit.methods import METHODS

Mode = Literal["quick", "full"]


@dataclass
class RunContext:
    """What an experiment gets: the mode, a seed, a folder for its figures and artefacts, and a progress line.

    ``on_progress`` receives short texts naming where the run is (arm, seed, epoch or step); ``graftkit
    reproduce`` shows them beside the experiment's bar. Experiments call :meth:`progress`, never it directly.
    """

    mode: Mode
    seed: int
    out_dir: Path
    on_progress: Callable[[str], None] | None = None

    @property
    def quick(self) -> bool:
        return self.mode == "quick"

    def progress(self, stage: str, done: int | None = None, total: int | None = None) -> None:
        """Say where the run is: ``stage`` names the arm (and seed), ``done``/``total`` count its steps."""
        if self.on_progress is not None:
            self.on_progress(stage if done is None else f"{stage} {done}/{total}")

    def figure_path(self, name: str) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / name


@dataclass
class Outcome:
    """What an experiment measured.

    ``metrics`` are the numbers the verdict rule reads (JSON-serialisable scalars); ``table`` the rows of the
    results table; ``figures`` PNG files under ``ctx.out_dir``; ``data`` says what data was used and whether it
    is real or synthetic; ``notes`` how the run differs from the paper (scale, settings); ``caveats`` what a
    reader must keep in mind before trusting the verdict (limits of the design, ties, values at a cap), each
    a sentence, computed from this run's measurements where they depend on them.
    """

    metrics: dict[str, Any]
    table: list[dict[str, Any]] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    data: str = ""
    notes: str = ""
    caveats: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Experiment:
    name: str
    method: str
    claim: str
    rule: str
    verdict: Callable[[dict[str, Any]], bool | None]
    run: Callable[[RunContext], Outcome]


_EXPERIMENTS: dict[str, Experiment] = {}


def experiment(
    name: str, *, method: str, claim: str, rule: str, verdict: Callable[[dict[str, Any]], bool | None]
) -> Callable[[Callable[[RunContext], Outcome]], Callable[[RunContext], Outcome]]:
    """Register ``run`` as the experiment ``name`` of ``method``.

    ``claim``: the paper's claim in one sentence; ``rule``: the verdict rule in words; ``verdict``: the same
    rule as code over the metrics (``None`` when the metrics cannot decide).
    """

    def register(run: Callable[[RunContext], Outcome]) -> Callable[[RunContext], Outcome]:
        if name in _EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is registered twice")
        _EXPERIMENTS[name] = Experiment(name, method, claim, rule, verdict, run)
        return run

    return register


def load_all() -> dict[str, Experiment]:
    """Import every available method's experiments module and return the registry, in method order."""
    for m in METHODS:
        if m.available:
            importlib.import_module(m.experiments_module)
    order = {m.key: i for i, m in enumerate(METHODS)}
    return dict(sorted(_EXPERIMENTS.items(), key=lambda item: (order[item[1].method], item[0])))
