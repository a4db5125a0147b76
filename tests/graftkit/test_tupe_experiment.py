"""The tupe-vs-bert experiment: registration, the verdict rule, step fractions, a tiny training run per arm."""

import math
from pathlib import Path

import pytest

from graftkit.experiments import tupe
from graftkit.experiments.mlm_run import mlm_corpus
from graftkit.registry import RunContext, load_all


def test_registered_with_its_rule():
    registry = load_all()
    assert {n for n, e in registry.items() if e.method == "tupe"} == {"tupe-vs-bert"}
    verdict = registry["tupe-vs-bert"].verdict
    off_plateau = {"target_loss": 4.5, "unigram_loss": 5.0}
    assert verdict({"fraction_tupe_a": 0.3, "fraction_tupe_r": 0.5, **off_plateau})
    assert not verdict({"fraction_tupe_a": 0.3, "fraction_tupe_r": 0.55, **off_plateau})
    assert not verdict({"fraction_tupe_a": None, "fraction_tupe_r": 0.2, **off_plateau})
    # BERT-A still on the word-frequency plateau: reaching its loss decides nothing
    assert verdict({"fraction_tupe_a": 0.3, "fraction_tupe_r": 0.3, "target_loss": 4.95, "unigram_loss": 5.0}) is None


def test_step_fractions_against_bert_a_final_loss():
    curves = {"bert_a": [5.0, 4.0, 3.0, 2.0], "tupe_a": [4.0, 2.0, 1.5, 1.0], "tupe_r": [5.0, 4.0, 3.0, 2.5]}
    assert tupe.step_fractions(curves, eval_every=10) == {"tupe_a": 0.5, "tupe_r": None}


def test_every_arm_trains_the_same_way():
    training = tupe.QUICK.training()
    assert training.warmup_steps == round(0.1 * tupe.QUICK.steps) and training.weight_decay == 0.01
    assert training.betas == (0.9, 0.98) and training.lr == tupe.QUICK.lr


def test_each_arm_trains_and_batches_follow_the_seed():
    settings = tupe.TupeSettings(hidden=16, layers=1, steps=4, eval_every=2, vocab=200, max_len=16)
    corpus = mlm_corpus(settings.vocab, settings.max_len)
    curves = {arm: tupe.train_curve(arm, 0, settings, corpus) for arm in tupe.ARMS}
    for curve in curves.values():
        assert len(curve) == 2 and all(math.isfinite(v) and v < math.log(200) + 1 for v in curve)
    assert len({tuple(c) for c in curves.values()}) == 3  # three different models
    assert tupe.train_curve("tupe_r", 0, settings, corpus) == curves["tupe_r"]


@pytest.mark.slow
def test_tiny_run_reports_every_arm_and_each_seed(tmp_path: Path, monkeypatch):
    tiny = tupe.TupeSettings(hidden=16, layers=1, steps=4, eval_every=2, seeds=2, vocab=200, max_len=16)
    monkeypatch.setattr(tupe, "QUICK", tiny)
    stages = []
    outcome = tupe.tupe_vs_bert(RunContext("quick", 3, tmp_path, stages.append))
    assert [row["arm"] for row in outcome.table] == [label for label, _, _ in tupe.ARMS.values()]
    assert stages[-1] == "tupe_r seed 4: step 4/4"
    m = outcome.metrics
    assert m["target_loss"] == m["final_loss_bert_a"] and 0 < m["unigram_loss"] < math.log(200)
    assert {"fraction_tupe_a_seed3", "fraction_tupe_a_seed4", "fraction_tupe_r_seed4"} <= set(m)
    assert all(f.is_file() for f in outcome.figures)
