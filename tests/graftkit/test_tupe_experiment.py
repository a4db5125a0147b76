"""The tupe-vs-bert experiment: registration, the verdict rule, step fractions, a tiny training run per arm."""

import math

from graftkit.experiments import tupe
from graftkit.experiments.mlm_run import mlm_corpus
from graftkit.registry import load_all


def test_registered_with_its_rule():
    registry = load_all()
    assert {n for n, e in registry.items() if e.method == "tupe"} == {"tupe-vs-bert"}
    verdict = registry["tupe-vs-bert"].verdict
    assert verdict({"fraction_tupe_a": 0.3, "fraction_tupe_r": 0.5})
    assert not verdict({"fraction_tupe_a": 0.3, "fraction_tupe_r": 0.55})
    assert not verdict({"fraction_tupe_a": None, "fraction_tupe_r": 0.2})


def test_step_fractions_against_bert_a_final_loss():
    curves = {"bert_a": [5.0, 4.0, 3.0, 2.0], "tupe_a": [4.0, 2.0, 1.5, 1.0], "tupe_r": [5.0, 4.0, 3.0, 2.5]}
    assert tupe.step_fractions(curves, eval_every=10) == {"tupe_a": 0.5, "tupe_r": None}


def test_each_arm_trains_and_batches_follow_the_seed():
    settings = tupe.TupeSettings(hidden=16, layers=1, steps=4, eval_every=2, vocab=200, max_len=16)
    corpus = mlm_corpus(settings.vocab, settings.max_len)
    curves = {arm: tupe.train_curve(arm, 0, settings, corpus) for arm in tupe.ARMS}
    for curve in curves.values():
        assert len(curve) == 2 and all(math.isfinite(v) and v < math.log(200) + 1 for v in curve)
    assert len({tuple(c) for c in curves.values()}) == 3  # three different models
    assert tupe.train_curve("tupe_r", 0, settings, corpus) == curves["tupe_r"]
