"""The cleit-drug-response experiment: its gated rule, the paired differences, the SYNTHETIC benchmark with
unlabelled pairs, and a run end to end at a tiny size."""

import numpy as np
import pytest

from graftkit.errors import GraftkitError
from graftkit.experiments import cleit as experiment
from graftkit.registry import load_all
from omics_ext.cleit import CLEIT, CLEITConfig, cross_validate, make_synthetic


def _metrics(**changes):
    return {"cleit_minus_noteacher_ci_low": 0.01, "gate_teacher": True, "gate_transmits_synthetic": True,
            "failed_gate": None, **changes}


def test_registered_with_a_gated_rule_against_the_no_teacher_pipeline():
    exp = load_all()["cleit-drug-response"]
    assert exp.method == "cleit"
    assert exp.verdict(_metrics()) is True
    assert exp.verdict(_metrics(cleit_minus_noteacher_ci_low=0.0)) is False
    assert exp.verdict(_metrics(cleit_minus_noteacher_ci_low=-0.02)) is False
    assert exp.verdict(_metrics(failed_gate="transmits_synthetic")) is None
    assert exp.verdict({"cleit_minus_noteacher_ci_low": 0.5}) is None  # a run that never checked its gates
    assert "without the expression teacher" in exp.rule and "SYNTHETIC" in exp.rule


def test_arm_metrics_pair_the_seeds_and_span_two_differences():
    arms = experiment.Arms(seeds=[0, 1], results=[], dpearsonr={
        "cleit": [0.10, 0.20], "mutation_ae": [0.05, 0.25], "mutation_mlp": [0.0, 0.1], "expression": [0.4, 0.5]})
    m = experiment._arm_metrics("synthetic_", arms)
    assert m["synthetic_cleit_dpearsonr"] == pytest.approx(0.15)
    assert m["synthetic_expression_dpearsonr_seed1"] == 0.5
    assert m["synthetic_cleit_minus_noteacher_mean"] == pytest.approx(0.0)
    assert m["synthetic_cleit_minus_noteacher_seed0"] == pytest.approx(0.05)
    assert m["synthetic_cleit_minus_noteacher_seed1"] == pytest.approx(-0.05)
    # two seeds: the bootstrap interval spans the two differences
    assert m["synthetic_cleit_minus_noteacher_ci_low"] == pytest.approx(-0.05)
    assert m["synthetic_cleit_minus_noteacher_ci_high"] == pytest.approx(0.05)
    assert m["synthetic_cleit_minus_scratch_mean"] == pytest.approx(0.1)


def test_synthetic_unlabelled_lines_have_both_levels_and_no_response():
    plain = make_synthetic(n_samples=50, n_expression_genes=12, n_mutation_genes=10, n_drugs=3, seed=4)
    extra = make_synthetic(n_samples=50, n_expression_genes=12, n_mutation_genes=10, n_drugs=3, seed=4,
                           n_unlabelled=30)
    assert len(extra.expression) == len(extra.mutation) == 80 and len(extra.responses) == 50
    assert extra.labeled == plain.labeled  # the extras are unlabelled
    # the labelled lines are the same lines as without extras (one draw for all lines keeps them)
    assert extra.mutation.iloc[:50].equals(plain.mutation) and extra.responses.equals(plain.responses)
    np.testing.assert_allclose(extra.expression.iloc[:50].to_numpy(), plain.expression.to_numpy())
    assert "30 more lines" in extra.description and extra.description.startswith("SYNTHETIC")
    with pytest.raises(GraftkitError, match="n_unlabelled"):
        make_synthetic(n_unlabelled=-1)


def test_transmission_sees_the_training_lines_and_every_unlabelled_pair(monkeypatch):
    ds = make_synthetic(n_samples=40, n_expression_genes=12, n_mutation_genes=10, n_drugs=3, seed=5,
                        n_unlabelled=60)
    sizes = []
    original = CLEIT.transmit

    def recording(self, mutation, expression=None, **kwargs):
        sizes.append((len(mutation), None if expression is None else len(expression)))
        return original(self, mutation, expression, **kwargs)

    monkeypatch.setattr(CLEIT, "transmit", recording)
    config = CLEITConfig(encoder_hidden_dims=(8,), latent_dim=4, regressor_shared_dim=4, regressor_tower_dims=(4,),
                         expression_pretrain_epochs=1, transmission_epochs=1, finetune_epochs=1, patience=1)
    cross_validate(ds, config, n_folds=5, folds=[0], methods=("cleit", "mutation_ae"))
    # 32 training lines of 40 (fold 0 of 5) plus the 60 unlabelled pairs, for CLEIT and the no-teacher arm alike
    assert sizes == [(92, 92), (92, None)]


@pytest.mark.slow
def test_experiment_runs_end_to_end_at_a_tiny_size(tmp_path, monkeypatch):
    from graftkit.registry import RunContext

    tiny = dict(expression_pretrain_epochs=1, transmission_epochs=1, finetune_epochs=1, patience=1, lr=1e-3)
    monkeypatch.setattr(experiment, "_settings", lambda quick: (tiny, [0]))
    monkeypatch.setattr(experiment, "SYNTHETIC", dict(n_samples=60, n_unlabelled=40, n_expression_genes=20,
                                                      n_mutation_genes=15, n_drugs=3))
    stages = []
    outcome = load_all()["cleit-drug-response"].run(RunContext(mode="quick", seed=0, out_dir=tmp_path,
                                                               on_progress=stages.append))
    for prefix in ("", "synthetic_"):
        assert {f"{prefix}cleit_minus_noteacher_ci_low", f"{prefix}cleit_minus_noteacher_seed1",
                f"{prefix}mutation_mlp_dpearsonr_seed0", f"{prefix}expression_dpearsonr"} <= set(outcome.metrics)
    assert {"gate_teacher", "gate_transmits_synthetic", "failed_gate"} <= set(outcome.metrics)
    assert stages == ["GDSC split seed 1/2", "GDSC split seed 2/2", "SYNTHETIC split seed 1/2",
                      "SYNTHETIC split seed 2/2"]
    assert {row["data"] for row in outcome.table} == {"REAL GDSC2", "SYNTHETIC"}
    assert "REAL" in outcome.data and "SYNTHETIC" in outcome.data
    (figure,) = outcome.figures
    assert figure.stat().st_size > 1000
