"""The tupe-vs-bert experiment: registration, the gated verdict, step fractions, paired initial values, a tiny
training run per arm and a tiny run of the whole experiment."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from graftkit.experiments import tupe
from graftkit.experiments.mlm_run import MarkovData
from graftkit.registry import RunContext, load_all

TINY_DATA = MarkovData(train_rows=64, valid_rows=16)
TINY = tupe.TupeSettings(hidden=16, layers=1, steps=4, eval_every=2, data=TINY_DATA)


def _metrics(fraction_a_high, fraction_r_high, failed_gate=None):
    return {"steps_fraction_tupe_a_ci_high": fraction_a_high, "steps_fraction_tupe_r_ci_high": fraction_r_high,
            "gate_left_plateau": failed_gate is None, "failed_gate": failed_gate}


def test_registered_with_its_gated_rule():
    registry = load_all()
    assert {n for n, e in registry.items() if e.method == "tupe"} == {"tupe-vs-bert"}
    verdict = registry["tupe-vs-bert"].verdict
    assert verdict(_metrics(0.3, 0.5)) is True
    assert verdict(_metrics(0.3, 0.55)) is False
    assert verdict(_metrics(1.5, 0.2)) is False  # TUPE-A never reached the target in some seed
    # an arm still on the word-frequency plateau: reaching BERT-A's loss decides nothing
    assert verdict(_metrics(0.3, 0.3, failed_gate="left_plateau")) is None
    assert verdict({}) is None
    assert "each arm at its own lr" in registry["tupe-vs-bert"].rule
    assert tupe.LEARNING_RATES.quick.keys() == set(tupe.TUNED)


def test_step_fraction_against_bert_a_final_loss():
    bert = [5.0, 4.0, 3.0, 2.0]
    assert tupe.step_fraction(bert, [4.0, 2.0, 1.5, 1.0], eval_every=10) == 0.5
    assert tupe.step_fraction(bert, [5.0, 4.0, 3.0, 2.5], eval_every=10) is None
    assert tupe._censored(None, tupe.QUICK) > 1 and tupe._censored(0.25, tupe.QUICK) == 0.25


def test_every_arm_trains_the_same_way_at_its_own_lr():
    training = tupe.QUICK.training(2e-3)
    assert training.warmup_steps == round(0.1 * tupe.QUICK.steps) and training.weight_decay == 0.01
    assert training.betas == (0.9, 0.98) and training.lr == 2e-3
    assert tupe.FULL.steps == tupe.QUICK.steps and "tupe_a_tied_cls" in tupe.FULL.arms


def test_paired_arms_start_from_bert_a_values_in_every_shared_part():
    vocab = len(TINY_DATA.corpus().vocab)
    torch.manual_seed(0)
    bert = tupe.paired_model("bert_a", TINY, vocab, 0).state_dict()
    torch.manual_seed(0)
    model = tupe.paired_model("tupe_r", TINY, vocab, 0)
    state = model.state_dict()
    shared = [name for name in state if name.replace("tupe.", "bert.", 1) in bert]
    assert any("encoder.layers.0.attention.query" in n for n in shared) and any("word_embeddings" in n
                                                                                 for n in shared)
    for name in shared:
        assert torch.equal(state[name], bert[name.replace("tupe.", "bert.", 1)]), name
    torch.manual_seed(0)
    again = tupe.paired_model("tupe_r", TINY, vocab, 0).state_dict()
    assert all(torch.equal(again[n], v) for n, v in state.items())  # its own parts follow the seed too
    assert model.config.untie_cls and not tupe.paired_model("tupe_a_tied_cls", TINY, vocab, 0).config.untie_cls


def test_each_arm_trains_and_batches_follow_the_seed():
    corpus = TINY_DATA.corpus()
    curves = {arm: tupe.train_curve(arm, 0, 2e-3, TINY, corpus) for arm in tupe.ARMS}
    for curve in curves.values():
        assert len(curve) == 2 and all(math.isfinite(v) and v < math.log(len(corpus.vocab)) + 1 for v in curve)
    assert len({tuple(c) for c in curves.values()}) == 4  # four different models
    assert tupe.train_curve("tupe_r", 0, 2e-3, TINY, corpus) == curves["tupe_r"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["quick", "full"])
def test_tiny_run_reports_every_arm_and_each_seed(tmp_path: Path, monkeypatch, mode):
    monkeypatch.setattr(tupe, "QUICK", TINY)
    monkeypatch.setattr(tupe, "FULL", dataclasses.replace(TINY, arms=tupe.FULL.arms))
    stages = []
    outcome = tupe.tupe_vs_bert(RunContext(mode, 3, tmp_path, stages.append))
    m = outcome.metrics
    seeds = [3, 4] if mode == "quick" else [3, 4, 5]
    for arm in tupe.JUDGED:
        assert f"steps_fraction_{arm}" in m and f"steps_fraction_{arm}_ci_high" in m
        assert {f"steps_fraction_{arm}_seed{s}" for s in seeds} <= set(m)
        assert f"final_loss_bert_a_minus_{arm}_ci_low" in m
    assert m["failed_gate"] in (None, "left_plateau") and isinstance(m["gate_left_plateau"], bool)
    assert [m[f"target_loss_seed{s}"] for s in seeds] == [m[f"final_loss_bert_a_seed{s}"] for s in seeds]
    assert stages[-1] == f"{tupe.FULL.arms[-1] if mode == 'full' else 'tupe_r'} seed {seeds[-1]}: step 4/4"
    if mode == "full":
        grid_rows = [r for r in outcome.table if "chosen" in r]
        assert len(grid_rows) == len(tupe.TUNED) * len(tupe.LEARNING_RATES.grid)
        assert sum(r["chosen"] for r in grid_rows) == len(tupe.TUNED)
        assert m["lr_tupe_a_tied_cls"] == m["lr_tupe_a"] and "steps_fraction_tupe_a_tied_cls" in m
    else:
        assert {m[f"lr_{arm}"] for arm in tupe.TUNED} <= set(tupe.LEARNING_RATES.grid)
    assert all(f.is_file() for f in outcome.figures)
