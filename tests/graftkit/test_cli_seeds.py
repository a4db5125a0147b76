"""Seeds are validated once, the same way for every command, and the seed a run records is the seed it used."""

from __future__ import annotations

import argparse

import pytest

from graftkit import preln_gradnorm as gn
from graftkit.cli import build_parser
from graftkit.errors import GraftkitError, seed_argument
from graftkit.registry import RunContext


def _options(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()):
    """(command words, action) for every option of every (sub)command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, words + (name,))
        else:
            yield words, action


def test_every_seed_option_uses_the_shared_seed_type():
    seeds = [(words, action) for words, action in _options(build_parser()) if action.dest == "seed"]
    commands = {" ".join(words) for words, _ in seeds}
    assert {"reproduce", "cleit run", "macer train", "irn train", "preln gradnorm"} <= commands
    wrong = [" ".join(words) for words, action in seeds if action.type is not seed_argument]
    assert not wrong, f"--seed without graftkit.errors.seed_argument: {wrong}"


def test_preln_gradnorm_experiment_uses_the_run_seed(tmp_path, monkeypatch):
    """The report records ``--seed``; the experiment must initialize from it (it used seeds 0..n-1 whatever
    the seed was)."""
    used = set()

    def fake_norms(position, depth, seed, settings):
        used.add(seed)
        return [float(depth) ** (-0.5 if position == "pre" else 0.0)] * depth

    monkeypatch.setattr(gn, "ffn_grad_norms", fake_norms)
    from graftkit.experiments.preln import gradnorm as run
    outcome = run(RunContext(mode="quick", seed=7, out_dir=tmp_path))
    assert used == set(range(7, 12))
    assert "(7 to 11)" in outcome.notes


def test_measure_takes_seeds_from_first_seed():
    settings = gn.GradNormSettings(d_model=16, heads=2, seq_len=4, batch=2)
    result = gn.measure([1, 2], seeds=1, settings=settings, first_seed=3)
    assert result.layers["pre"][2][-1][0] == pytest.approx(gn.ffn_grad_norms("pre", 2, 3, settings)[-1])
    assert result.to_json()["first_seed"] == 3
    with pytest.raises(GraftkitError, match="first_seed must be an integer in"):
        gn.measure([1, 2], seeds=1, settings=settings, first_seed=-1)
