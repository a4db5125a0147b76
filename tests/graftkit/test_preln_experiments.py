"""The Pre-LN experiments: registration, gated verdict rules, a tiny training run, tiny runs of both."""

import math
from pathlib import Path

import pytest
import torch

from graftkit.experiments import preln
from graftkit.experiments.mlm_run import TopicData
from graftkit.registry import RunContext, load_all
from graftkit.report import run_experiment

TINY_DATA = TopicData(train_rows=64, valid_rows=16)
TINY = preln.WarmupSettings(steps=4, eval_every=2, layers=2, hidden=16, data=TINY_DATA)


def _gradnorm_metrics(post=(2.0, 3.0), pre=(0.8, 1.2), alpha_post=0.05, alpha_pre=-0.45, failed_gate=None):
    return {"gradnorm_ratio_last_first_post_ci_low": post[0], "gradnorm_ratio_last_first_post_ci_high": post[1],
            "gradnorm_ratio_last_first_pre_ci_low": pre[0], "gradnorm_ratio_last_first_pre_ci_high": pre[1],
            "alpha_post": alpha_post, "alpha_pre": alpha_pre, "failed_gate": failed_gate}


def test_both_experiments_are_registered_with_their_gated_rules():
    registry = load_all()
    assert {n for n, e in registry.items() if e.method == "preln"} == {"preln-gradnorm", "preln-warmup"}
    gradnorm, warmup = registry["preln-gradnorm"].verdict, registry["preln-warmup"].verdict
    assert gradnorm(_gradnorm_metrics()) is True
    assert gradnorm(_gradnorm_metrics(post=(1.4, 3.0))) is False  # Post-LN not clearly rising to the output
    assert gradnorm(_gradnorm_metrics(pre=(0.5, 1.2))) is False  # Pre-LN not flat
    assert gradnorm(_gradnorm_metrics(pre=(0.8, 1.6))) is False
    assert gradnorm(_gradnorm_metrics(alpha_post=0.3)) is False
    assert gradnorm(_gradnorm_metrics(alpha_pre=-0.1)) is False
    assert gradnorm(_gradnorm_metrics(failed_gate="finite")) is None
    gates = {"gate_left_plateau": True, "gate_regime": True, "failed_gate": None}
    assert warmup({"steps_postln_minus_preln_ci_low": 25, **gates}) is True
    assert warmup({"steps_postln_minus_preln_ci_low": 0, **gates}) is False
    assert warmup({"steps_postln_minus_preln_ci_low": 25, **gates, "failed_gate": "regime"}) is None
    assert warmup({}) is None


def test_warmup_arms_differ_only_in_layer_norm_position_warmup_and_lr():
    assert preln.QUICK_WARMUP.layers >= 12 and preln.FULL_WARMUP.steps == preln.QUICK_WARMUP.steps
    warm, cold = preln.QUICK_WARMUP.training(2e-3, warmup=True), preln.QUICK_WARMUP.training(2e-3, warmup=False)
    assert (warm.warmup_steps, cold.warmup_steps) == (round(0.1 * preln.QUICK_WARMUP.steps), 0)
    assert warm.betas == cold.betas == (0.9, 0.98) and warm.weight_decay == cold.weight_decay == 0.0
    assert cold.lr_factor(0) == 1.0 and warm.lr_factor(0) == 1 / (warm.warmup_steps + 1)  # 1/16 at 150 steps
    assert preln.TOP_LR == max(preln.WARMUP_LEARNING_RATES.grid)
    assert preln.WARMUP_LEARNING_RATES.quick.keys() == set(preln.TUNED)
    assert {p for _, p, _ in preln.WARMUP_ARMS.values()} == {"post", "pre"}


def test_training_run_gives_one_finite_validation_loss_per_evaluation():
    corpus = TINY_DATA.corpus()
    for arm in ("postln_warmup", "preln_nowarmup"):
        curve = preln._train(arm, 2e-3, 0, TINY, corpus)
        assert len(curve) == 2 and all(math.isfinite(v) for v in curve)
        assert curve[0] < math.log(len(corpus.vocab)) + 1  # a sane cross-entropy
    torch.rand(3)  # whatever the global random state, a run is fixed by its seed
    assert preln._train("preln_nowarmup", 2e-3, 0, TINY, corpus) == curve
    assert preln._train("postln_nowarmup_top_lr", 2e-3, 0, TINY, corpus) != curve  # Post-LN is another model


@pytest.mark.slow
def test_gradnorm_experiment_quick_reports_the_profile_and_the_depth_law(tmp_path: Path):
    record = run_experiment(load_all()["preln-gradnorm"], "quick", 0, tmp_path)
    assert record.get("error") is None, record.get("traceback")
    m = record["metrics"]
    assert record["supported"] in (True, False) and m["gate_finite"] is True
    assert m["alpha_post"] > m["alpha_pre"]
    for position in ("post", "pre"):
        name = f"gradnorm_ratio_last_first_{position}"
        assert m[f"{name}_ci_low"] <= m[name] <= m[f"{name}_ci_high"]
        assert {f"{name}_seed{s}" for s in range(5)} <= set(m)
    assert len([r for r in record["table"] if "layer" in r]) == preln.PROFILE_DEPTH
    assert all((tmp_path / f).is_file() for f in record["figures"])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["quick", "full"])
def test_warmup_reports_every_arm_each_seed_and_the_gates(tmp_path: Path, monkeypatch, mode):
    monkeypatch.setattr(preln, "QUICK_WARMUP", TINY)
    monkeypatch.setattr(preln, "FULL_WARMUP", TINY)
    stages = []
    outcome = preln.warmup(RunContext(mode, 0, tmp_path, stages.append))
    m = outcome.metrics
    seeds = [0, 1] if mode == "quick" else [0, 1, 2]
    assert {"steps_preln_nowarmup", "steps_postln_warmup", "final_postln_nowarmup_top_lr",
            "steps_postln_minus_preln_ci_low", "gate_left_plateau", "gate_regime", "failed_gate"} <= set(m)
    assert {f"steps_preln_nowarmup_seed{s}" for s in seeds} <= set(m)
    assert m["lr_postln_nowarmup_top_lr"] == preln.TOP_LR
    assert stages[-1] == f"postln_nowarmup_top_lr lr {preln.TOP_LR:g} seed {seeds[-1]}: step 4/4"
    grid_rows = [r for r in outcome.table if "chosen" in r]
    assert len(grid_rows) == (0 if mode == "quick" else len(preln.TUNED) * len(preln.WARMUP_LEARNING_RATES.grid))
    assert [r["arm"] for r in outcome.table if "chosen" not in r] == [v[0] for v in preln.WARMUP_ARMS.values()]
    # the target is Post-LN-with-warm-up's own final loss, so it always reaches it
    assert all(m[f"steps_postln_warmup_seed{s}"] is not None for s in seeds)
    assert all(f.is_file() for f in outcome.figures)


def test_warmup_gates_read_the_no_warmup_post_ln_at_the_top_lr(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(preln, "QUICK_WARMUP", TINY)
    finals = {"postln_warmup": 3.0, "preln_nowarmup": 2.9, "postln_nowarmup_top_lr": math.nan}

    def fake_train(arm, lr, seed, settings, corpus, on_eval=None):
        return [4.0, finals[arm]] if arm != "postln_nowarmup_top_lr" else [4.0, math.nan]

    monkeypatch.setattr(preln, "_train", fake_train)
    m = preln.warmup(RunContext("quick", 0, tmp_path)).metrics
    assert m["gate_regime"] is True and m["failed_gate"] is None  # a diverged no-warm-up Post-LN: the regime
    assert m["steps_preln_nowarmup"] == m["steps_postln_warmup"] == 4
    assert m["steps_postln_minus_preln_ci_low"] == 0 and load_all()["preln-warmup"].verdict(m) is False
    finals["postln_nowarmup_top_lr"] = 3.05
    monkeypatch.setattr(preln, "_train", lambda arm, lr, seed, s, c, on_eval=None: [4.0, finals[arm]])
    m = preln.warmup(RunContext("quick", 0, tmp_path)).metrics
    assert m["gate_regime"] is False and m["failed_gate"] == "regime"
    assert load_all()["preln-warmup"].verdict(m) is None
    finals["preln_nowarmup"] = 5.0  # above log(64): still on the plateau
    m = preln.warmup(RunContext("quick", 0, tmp_path)).metrics
    assert m["failed_gate"] == "left_plateau"
