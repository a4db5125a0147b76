"""The tnf-vs-bert experiment: registration and verdict rule, steps-to-target, a tiny seeded run of both arms."""

import math

import pytest
import torch

from graftkit.experiments import tnf
from graftkit.registry import load_all


def test_registered_with_its_rule():
    exp = load_all()["tnf-vs-bert"]
    assert exp.method == "tnf"
    assert exp.verdict({"fraction_of_bert_steps": 0.4, "final_rare_tnf": 3.0, "final_rare_bert": 3.1})
    assert not exp.verdict({"fraction_of_bert_steps": 1.0, "final_rare_tnf": 3.0, "final_rare_bert": 3.1})
    assert not exp.verdict({"fraction_of_bert_steps": None, "final_rare_tnf": 3.0, "final_rare_bert": 3.1})
    assert not exp.verdict({"fraction_of_bert_steps": 0.5, "final_rare_tnf": 3.2, "final_rare_bert": 3.1})


def test_steps_to_reach():
    assert tnf.steps_to_reach([5.0, 4.0, 3.0], 4.0, eval_every=10) == 20
    assert tnf.steps_to_reach([5.0, 4.5], 4.0, eval_every=10) is None


@pytest.mark.slow
def test_tiny_run_of_both_arms_is_seeded_and_takes_notes():
    settings = tnf.TnfSettings(hidden=16, layers=1, steps=4, eval_every=2, seeds=1, vocab_size=300, batch=8,
                               max_len=32)
    corpus = tnf._corpus(settings)
    assert len(corpus["rare"]) > 0 and all(5 <= c <= 20 for c in corpus["rare"].counts)
    valid = tnf._validation_batches(corpus, 64)[:1]
    bert = tnf._train("bert", 0, settings, corpus, valid)
    tnf_run = tnf._train("tnf", 0, settings, corpus, valid)
    assert bert["words_with_notes"] == 0 and tnf_run["words_with_notes"] > 0
    for run in (bert, tnf_run):
        assert len(run["overall"]) == 2 and all(math.isfinite(v) for v in run["overall"] + run["rare_tokens"])
    torch.rand(3)  # whatever the global random state, a run is fixed by its seed
    assert tnf._train("tnf", 0, settings, corpus, valid) == tnf_run
