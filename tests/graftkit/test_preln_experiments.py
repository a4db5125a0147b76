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
    off_plateau = {"target_loss": 4.5, "unigram_loss": 5.0}
    assert warmup({"steps_pre_nowarmup": 100, "steps_post_nowarmup": None, **off_plateau})
    assert warmup({"steps_pre_nowarmup": 100, "steps_post_nowarmup": 160, **off_plateau})
    assert not warmup({"steps_pre_nowarmup": 100, "steps_post_nowarmup": 100, **off_plateau})
    assert not warmup({"steps_pre_nowarmup": None, "steps_post_nowarmup": None, **off_plateau})
    # a target still on the word-frequency plateau decides nothing
    on_plateau = {"target_loss": 4.95, "unigram_loss": 5.0}
    assert warmup({"steps_pre_nowarmup": 100, "steps_post_nowarmup": None, **on_plateau}) is None
    assert warmup({}) is None


def test_grid_arms_differ_only_in_layer_norm_position_and_warmup():
    grid = preln.WarmupGrid(depths=(6, 12), lrs=(1e-3, 2e-3), judged=(12, 2e-3), steps=300, eval_every=25)
    assert grid.cells == [(6, 1e-3), (6, 2e-3), (12, 1e-3), (12, 2e-3)]
    warm, cold = grid.training(2e-3, warmup=True), grid.training(2e-3, warmup=False)
    assert (warm.warmup_steps, cold.warmup_steps) == (30, 0)
    assert warm.betas == cold.betas == (0.9, 0.98) and warm.weight_decay == cold.weight_decay == 0.0
    assert cold.lr_factor(0) == 1.0 and warm.lr_factor(0) < 0.05
    with pytest.raises(ValueError, match="judged cell"):
        preln.WarmupGrid(depths=(6,), lrs=(1e-3,), judged=(12, 1e-3), steps=300, eval_every=25)
    assert preln.QUICK_GRID.judged == preln.FULL_GRID.judged  # one judged cell, fixed before the run


def test_training_run_gives_one_finite_validation_loss_per_evaluation():
    grid = preln.WarmupGrid(depths=(2,), lrs=(2e-3,), judged=(2, 2e-3), steps=6, eval_every=3, hidden=16)
    corpus = mlm_corpus(200, 16)
    for position, warm in (("post", True), ("pre", False)):
        curve = preln._train(position, warm, 2, 2e-3, 0, grid, corpus)
        assert len(curve) == 2 and all(math.isfinite(v) for v in curve)
        assert curve[0] < math.log(200) + 1  # a sane cross-entropy over the 200-word vocabulary
    torch.rand(3)  # whatever the global random state, a run is fixed by its seed
    assert preln._train("pre", False, 2, 2e-3, 0, grid, corpus) == curve
    assert preln._train("post", False, 2, 2e-3, 0, grid, corpus) != curve  # Post-LN is another model


@pytest.mark.slow
def test_gradnorm_experiment_quick_supports_the_theory(tmp_path: Path):
    record = run_experiment(load_all()["preln-gradnorm"], "quick", 0, tmp_path)
    assert record.get("error") is None, record.get("traceback")
    assert record["supported"] is True
    assert record["metrics"]["alpha_post"] > record["metrics"]["alpha_pre"]
    assert all((tmp_path / f).is_file() for f in record["figures"])


@pytest.mark.slow
def test_warmup_grid_reports_every_cell_and_judges_the_cell_chosen_in_advance(tmp_path: Path, monkeypatch):
    tiny = preln.WarmupGrid(depths=(1, 2), lrs=(2e-3,), judged=(2, 2e-3), hidden=16, steps=2, eval_every=2,
                            seeds=2, vocab_size=200, warmup_fraction=0.5)
    monkeypatch.setattr(preln, "QUICK_GRID", tiny)
    stages = []
    outcome = preln.warmup(preln.RunContext("quick", 0, tmp_path, stages.append))
    assert len(outcome.table) == 2 * 3  # every cell, every arm
    assert stages[0].startswith("run 1/12: 1 layers") and stages[-1].startswith("run 12/12: 2 layers")
    assert stages[-1].endswith("seed 1; step 2/2")
    m = outcome.metrics
    assert m["cells"] == 2 and 0 <= m["cells_showing_effect"] <= 2
    assert 0 < m["unigram_loss"] < math.log(200)
    judged = [r for r in outcome.table if r["judged cell"]]
    assert {(r["layers"], r["lr"]) for r in judged} == {(2, 2e-3)}
    assert m["target_loss"] == m["target_loss_L2_lr0.002"] == judged[0]["final_valid_loss"]
    for key in ("steps_to_target", "steps_to_leave_plateau"):
        assert all(r[key] == "never reached" or isinstance(r[key], int) for r in outcome.table)
    assert {r["warmup_steps"] for r in outcome.table} == {0, 1}
    assert [f.name for f in outcome.figures] == ["warmup_grid.png", "warmup_curves.png"]
    assert all(f.is_file() for f in outcome.figures)


def test_the_effect_in_a_cell_needs_pre_ln_to_reach_the_target_first():
    assert preln._effect_in_cell({"pre_nowarmup": 40, "post_nowarmup": None})
    assert preln._effect_in_cell({"pre_nowarmup": 40, "post_nowarmup": 60})
    assert not preln._effect_in_cell({"pre_nowarmup": 40, "post_nowarmup": 40})
    assert not preln._effect_in_cell({"pre_nowarmup": None, "post_nowarmup": None})
