"""The Pre-LN experiments: registration, verdict rules, a tiny training run, the grid's report."""

import math
from pathlib import Path

import pytest
import torch

from graftkit.experiments import preln
from graftkit.experiments.mlm_run import mlm_corpus
from graftkit.registry import load_all
from graftkit.report import run_experiment


def test_both_experiments_are_registered_with_their_rules():
    registry = load_all()
    assert {n for n, e in registry.items() if e.method == "preln"} == {"preln-gradnorm", "preln-warmup"}
    gradnorm, warmup = registry["preln-gradnorm"].verdict, registry["preln-warmup"].verdict
    assert gradnorm({"alpha_post": 0.05, "alpha_pre": -0.45})
    assert not gradnorm({"alpha_post": 0.3, "alpha_pre": -0.45})
    assert not gradnorm({"alpha_post": 0.0, "alpha_pre": -0.1})
    assert warmup({"steps_pre_nowarmup": 100, "steps_post_nowarmup": None})
    assert warmup({"steps_pre_nowarmup": 100, "steps_post_nowarmup": 160})
    assert not warmup({"steps_pre_nowarmup": 100, "steps_post_nowarmup": 100})
    assert not warmup({"steps_pre_nowarmup": None, "steps_post_nowarmup": None})


def test_training_run_gives_one_finite_validation_loss_per_evaluation():
    settings = preln.WarmupSettings(hidden=16, layers=2, steps=6, eval_every=3, seeds=1, vocab=200)
    corpus = mlm_corpus(settings.vocab, settings.max_len)
    for position, warm in (("post", True), ("pre", False)):
        curve = preln._train(position, warm, 0, settings, corpus)
        assert len(curve) == 2 and all(math.isfinite(v) for v in curve)
        assert curve[0] < math.log(200) + 1  # a sane cross-entropy over the 200-word vocabulary
    torch.rand(3)  # whatever the global random state, a run is fixed by its seed
    assert preln._train("pre", False, 0, settings, corpus) == curve


@pytest.mark.slow
def test_gradnorm_experiment_quick_supports_the_theory(tmp_path: Path):
    record = run_experiment(load_all()["preln-gradnorm"], "quick", 0, tmp_path)
    assert record.get("error") is None, record.get("traceback")
    assert record["supported"] is True
    assert record["metrics"]["alpha_post"] > record["metrics"]["alpha_pre"]
    assert all((tmp_path / f).is_file() for f in record["figures"])


@pytest.mark.slow
def test_warmup_grid_reports_every_cell_and_judges_the_cell_chosen_in_advance(tmp_path: Path, monkeypatch):
    tiny = preln.WarmupGrid(depths=(1, 2), lrs=(2e-3,), judged=(2, 2e-3), hidden=16, steps=2, eval_every=2)
    monkeypatch.setattr(preln, "QUICK_GRID", tiny)
    stages = []
    outcome = preln.warmup(preln.RunContext("quick", 0, tmp_path, stages.append))
    assert len(outcome.table) == 2 * 3  # every cell, every arm
    assert stages[-1].endswith("run 6/6")
    m = outcome.metrics
    assert m["cells"] == 2 and 0 <= m["cells_showing_effect"] <= 2
    judged = [r for r in outcome.table if r["judged cell"]]
    assert {(r["layers"], r["lr"]) for r in judged} == {(2, 2e-3)}
    assert m["target_loss"] == m["target_loss_L2_lr0.002"] == judged[0]["final_valid_loss"]
    assert all(r["steps_to_target"] == "never reached" or isinstance(r["steps_to_target"], int)
               for r in outcome.table)
    assert all(f.is_file() for f in outcome.figures)


def test_the_effect_in_a_cell_needs_pre_ln_to_reach_the_target_first():
    assert preln._effect_in_cell({"pre_nowarmup": 40, "post_nowarmup": None})
    assert preln._effect_in_cell({"pre_nowarmup": 40, "post_nowarmup": 60})
    assert not preln._effect_in_cell({"pre_nowarmup": 40, "post_nowarmup": 40})
    assert not preln._effect_in_cell({"pre_nowarmup": None, "post_nowarmup": None})
