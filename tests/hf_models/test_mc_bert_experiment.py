"""The mcbert-vs-electra-vs-mlm experiment's pieces at tiny sizes: the arms' settings, paired batches and initial
values, the shared controller, equal-FLOP budgets, the probes, the gates and the registered rule."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from graftkit.data.meaning_classes import MeaningGrammar
from graftkit.data.text import CLS, PAD, SEP
from graftkit.experiments import mcbert, protocol

TINY = mcbert.McBertSettings(budget_gflop=0.5, controller_steps=3, hidden=16, layers=1, heads=2, batch=4,
                             calibration_batches=1, probe_train=60, probe_valid=24, probe_test=48)
GRAMMAR = MeaningGrammar()


@pytest.fixture(scope="module")
def data():
    vocab = GRAMMAR.vocab()
    return vocab, GRAMMAR.corpus(200, seed=0)


def test_judged_arm_has_the_reference_settings_and_the_extra_arm_graftkits_defaults(data):
    vocab, _ = data
    reference = mcbert._config("mc", TINY, vocab)
    assert (reference.num_candidates, reference.mc_loss_weight, reference.candidates_with_replacement,
            reference.candidates_exclude_original) == (10, 50.0, True, False)
    default = mcbert._config("mc_default", TINY, vocab)
    assert (default.mc_loss_weight, default.candidates_with_replacement, default.candidates_exclude_original) == (
        20.0, False, True)
    assert mcbert._config("rtd", TINY, vocab).rtd_loss_weight == 50.0
    assert mcbert.LEARNING_RATES.quick.keys() == mcbert.ARMS.keys()


def test_batches_and_masks_are_the_same_for_every_arm_of_a_seed(data):
    vocab, corpus = data
    pad, special = vocab.index[PAD], torch.tensor([vocab.index[CLS], vocab.index[SEP]])
    first, second = (mcbert.Batches(corpus, 4, pad, special, seed=5) for _ in range(2))
    for _ in range(3):
        (rows_a, masked_a), (rows_b, masked_b) = first.next(), second.next()
        assert torch.equal(rows_a, rows_b) and torch.equal(masked_a, masked_b)
        assert not (masked_a & torch.isin(rows_a, special)).any()
    other = mcbert.Batches(corpus, 4, pad, special, seed=6).next()[0]
    assert not torch.equal(other, mcbert.Batches(corpus, 4, pad, special, seed=5).next()[0])


def test_arms_start_from_the_seeds_shared_init_and_the_pretrained_controller(data):
    vocab, corpus = data
    controller = mcbert.pretrain_controller(TINY, vocab, corpus, seed=9)
    fresh = mcbert._build("rtd", TINY, vocab).state_dict()
    trained = [name for name in controller if not torch.equal(controller[name], fresh[name])]
    assert "mc_bert.embeddings.word_embeddings.weight" in trained and any("meta_controller" in n for n in trained)
    models = {arm: mcbert.initial_model(arm, TINY, vocab, seed=1, controller=controller) for arm in mcbert.ARMS}
    for arm, model in models.items():
        state = model.state_dict()
        for name, value in controller.items():  # the controller's weights, and the embeddings it trained
            if name in state:
                assert torch.equal(state[name], value), (arm, name)
        assert (model.meta_controller is None) == (arm == "mlm")
    encoders = [m.mc_bert.state_dict() for m in models.values()]
    for name, value in encoders[0].items():  # one main encoder at the start, whatever the objective
        assert all(torch.equal(value, other[name]) for other in encoders[1:]), name
    again = mcbert.initial_model("mc", TINY, vocab, seed=1, controller=controller).state_dict()
    assert all(torch.equal(v, models["mc"].state_dict()[k]) for k, v in again.items())
    other_seed = mcbert.initial_model("mc", TINY, vocab, seed=2, controller=controller).mc_bert.state_dict()
    assert any(not torch.equal(value, encoders[0][name]) for name, value in other_seed.items())


def test_controller_logits_are_the_mlm_logits_pretrain_trains_on(data):
    vocab, corpus = data
    pad = vocab.index[PAD]
    model = mcbert._build("rtd", TINY, vocab).eval()
    rows = corpus[:4]
    masked = mcbert._masks(rows, pad, torch.tensor([vocab.index[CLS], vocab.index[SEP]]), 0.3,
                           torch.Generator().manual_seed(0))
    logits = mcbert.controller_logits(model, rows, masked, pad)
    expected = torch.nn.functional.cross_entropy(logits, rows[masked])
    assert model.pretrain(rows, masked, (rows != pad).long()).mlm_loss.item() == pytest.approx(expected.item(),
                                                                                               rel=1e-5)


def test_discriminative_arms_cost_more_flops_per_step_so_get_fewer_steps(data):
    vocab, corpus = data
    pad, special = vocab.index[PAD], torch.tensor([vocab.index[CLS], vocab.index[SEP]])
    flops = {}
    for arm in ("mlm", "rtd", "mc"):
        model = mcbert._build(arm, TINY, vocab)
        flops[arm] = mcbert.flops_per_step(model, mcbert.Batches(corpus, 4, pad, special, 0), 2, seed=0)
        assert all(p.grad is None for p in model.parameters())  # the calibration leaves no gradients
    assert flops["mlm"] < flops["rtd"] < flops["mc"]  # the meta controller; the candidates' scores


def test_probe_reads_informative_features_and_not_constant_ones():
    labels = {s: torch.arange(4).repeat(n) for s, n in (("train", 10), ("valid", 5), ("test", 5))}
    informative = {s: torch.nn.functional.one_hot(y, 4).double() + 0.01 * torch.randn(len(y), 4)
                   for s, y in labels.items()}
    assert mcbert.probe_accuracy(informative, labels) == {"valid": 1.0, "test": 1.0}
    constant = {s: torch.ones(len(y), 3) for s, y in labels.items()}
    assert mcbert.probe_accuracy(constant, labels)["test"] == pytest.approx(0.25)


def test_quick_probe_test_sets_keep_one_seeds_standard_error_below_the_gate():
    n = mcbert.QUICK.probe_test
    assert mcbert.standard_error(0.5, n) < mcbert.MAX_STANDARD_ERROR  # the worst case, accuracy 0.5
    assert mcbert.FULL.probe_test >= n


def _metrics(**changes):
    metrics = {"controller_p_original": 0.3, "unigram_p_original": 0.04, "semantic_acc_mlm": 0.6,
               "semantic_acc_random": 0.1, "semantic_se_max": 0.008, "semantic_acc_start": 0.5,
               "mc_minus_rtd_ci_low": 0.01}
    return metrics | changes


@pytest.mark.parametrize(("changes", "failed"), [
    ({}, None),
    ({"controller_p_original": 0.079}, "controller"),  # below 2x the word frequencies' 0.04
    ({"semantic_acc_mlm": 0.149}, "pretraining_helps"),
    ({"semantic_se_max": 0.0101}, "probe_precision"),
    ({"semantic_acc_start": 0.951}, "probe_headroom"),  # the probe solved before pre-training
    ({"semantic_acc_start": 0.95}, None),
])
def test_gates_then_the_rule_on_the_paired_interval(changes, failed):
    from graftkit.registry import load_all

    exp = load_all()["mcbert-vs-electra-vs-mlm"]
    assert exp.method == "mcbert" and "ELECTRA" in exp.rule and "interval" in exp.rule
    metrics = _metrics(**changes)
    checks = mcbert.gates(metrics, 3200)
    metrics |= protocol.gate_metrics(checks)
    assert metrics["failed_gate"] == failed
    if failed is None:
        assert exp.verdict(metrics) is True
        assert exp.verdict(metrics | {"mc_minus_rtd_ci_low": 0.0}) is False  # the interval touches 0
        assert exp.verdict(metrics | {"mc_minus_rtd_ci_low": -0.02}) is False
    else:
        assert exp.verdict(metrics) is None  # undecided, whatever the difference
        assert protocol.gate_caveats(checks)[0].startswith(f"Undecided: gate '{failed}' failed")


@pytest.mark.slow
def test_pretrain_to_equal_flops_then_probe(data):
    vocab, corpus = data
    pad = vocab.index[PAD]
    settings = dataclasses.replace(TINY, budget_gflop=0.05)
    probes = mcbert.Probes.build(GRAMMAR, settings, seed=0)
    assert [len(probes.semantic[s][0]) for s in ("train", "valid", "test")] == [60, 24, 48]
    controller = mcbert.pretrain_controller(settings, vocab, corpus, seed=3)
    for arm in mcbert.ARMS:
        run = mcbert.pretrain(arm, settings, vocab, corpus, seed=0, lr=1e-3, controller=controller)
        assert run["steps"] * run["gflop_per_step"] == pytest.approx(settings.budget_gflop,
                                                                      rel=0.5 / run["steps"] + 1e-9)
        accuracy = mcbert.evaluate(run["encoder"], probes, pad)
        assert set(accuracy) == {"semantic", "semantic_valid", "syntactic", "syntactic_valid"}
        assert all(0.0 <= v <= 1.0 for v in accuracy.values())
